#pragma once
// Helpers to pick actions of one kind out of what core::Pool returned.

#include <vector>

#include "core/pool.h"

namespace bulkhead::testlib {

template <class A>
std::vector<A> only(const std::vector<core::Action>& actions) {
  std::vector<A> out;
  for (const auto& a : actions) {
    if (const A* x = std::get_if<A>(&a)) out.push_back(*x);
  }
  return out;
}

template <class A>
std::size_t count(const std::vector<core::Action>& actions) {
  return only<A>(actions).size();
}

inline core::Payload payload(std::string s) { return core::makePayload(std::move(s)); }

}  // namespace bulkhead::testlib
