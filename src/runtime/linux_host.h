#pragma once
// The real Host (runtime/host.h): the steady clock, asio timers on it, fork+exec, /proc, signals
// through pidfds and SIGCHLD reaped with waitpid. Owns: those OS calls for the shell. May not
// touch: anything the shell decides.

#include <boost/asio.hpp>
#include <memory>

#include "runtime/host.h"

namespace bulkhead::runtime {

std::unique_ptr<Host> makeLinuxHost(boost::asio::io_context& io);

}  // namespace bulkhead::runtime
