#pragma once
// A completion condition for asio::async_read/async_write: as many bytes per system call as the
// socket takes. asio's default (transfer_all) moves at most 64 KiB per call, which makes a 64 MiB
// payload a thousand reads or writes where a few dozen do.

#include <cstddef>
#include <limits>

namespace bulkhead::util {

struct AsMuchAsTheSocketTakes {
  template <class ErrorCode>
  std::size_t operator()(const ErrorCode& ec, std::size_t /*transferred*/) const {
    return ec ? 0 : std::numeric_limits<std::size_t>::max();
  }
};

}  // namespace bulkhead::util
