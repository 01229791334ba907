#pragma once
// Large HTTP bodies kept out of the daemon's heap (docs/protocol.md, "Large payloads by memfd"):
// a request body read into a sealed memfd, and a memfd result sent as a response body with
// sendfile(2). Owns only the byte moving; the session (http_session.h) decides when to use them
// and answers errors.
//
// Why a memfd and not a string: the worker maps the same pages (JOB_FD), so a 64 MiB job costs
// the daemon a 256 KiB buffer instead of a 64 MiB one, and a worker in a tight memory cgroup does
// not pay for a copy of its payload. A job's body goes into a file its pool used before when one
// is free (os/payload_files.h), read from the socket straight into the daemon's mapping of it.

#include <sys/sendfile.h>

#include <algorithm>
#include <boost/asio.hpp>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <string_view>

#include "core/outcome.h"
#include "os/memfd.h"
#include "os/payload_files.h"

namespace bulkhead::api::http_detail {

// What a body read into a memfd ends as: the payload, or why not (errno of the memfd write;
// the socket's error code is given separately).
struct FileBodyState {
  os::UniqueFd file;                                // a fresh memfd, written with write(2); or:
  std::optional<os::PayloadFiles::Filling> reused;  // a pool's file, written through its mapping
  std::shared_ptr<os::PayloadFiles> files;  // where a fresh file goes once whole (null: nowhere)
  std::string pool;
  std::uint64_t size = 0;
  std::uint64_t remaining = 0;
  std::unique_ptr<char[]> chunk;
};
inline constexpr std::size_t kFileBodyChunk = 256 * 1024;

// Starts the file for a body of `length` bytes whose first bytes (`prefix`, already buffered by
// the parser) are written at once: a file `pool` used before when `files` has one free, else a
// new memfd. Null when no memfd can be made (EMFILE, no memfd support) or the prefix cannot be
// written: the caller then reads the body into memory as before.
inline std::shared_ptr<FileBodyState> startFileBody(std::uint64_t length, std::string_view prefix,
                                                    std::shared_ptr<os::PayloadFiles> files = {},
                                                    std::string_view pool = {}) {
  auto state = std::make_shared<FileBodyState>();
  prefix =
      prefix.substr(0, static_cast<std::size_t>(std::min<std::uint64_t>(prefix.size(), length)));
  state->size = length;
  state->remaining = length - prefix.size();
  if (files && !pool.empty()) {
    if (auto reused = files->take(pool, length)) {
      for (std::uint64_t at = 0; at < prefix.size();) {
        auto room = reused->room(at);
        if (room.empty()) return nullptr;
        const std::size_t n = std::min<std::size_t>(room.size(), prefix.size() - at);
        std::copy_n(prefix.data() + at, n, room.data());
        at += n;
      }
      state->reused.emplace(std::move(*reused));
      return state;
    }
    state->files = std::move(files);
    state->pool = std::string(pool);
  }
  state->file = os::createMemfd("bulkhead-payload");
  if (!state->file.valid()) return nullptr;
  if (!os::writeAll(state->file.get(), prefix)) return nullptr;
  state->chunk = std::make_unique<char[]>(kFileBodyChunk);
  return state;
}

// Reads the rest of the body from `socket` into the memfd, then seals it. done(ec, writeErrno,
// payload): ec is the socket's error (timeout cancels it: operation_aborted); writeErrno is
// non-zero when the memfd refused bytes (a memory limit); payload is set when all went well.
template <class Socket, class Done>
void readRestOfFileBody(Socket& socket, std::shared_ptr<FileBodyState> state, Done done) {
  if (state->remaining == 0) {
    if (state->reused) return done(boost::system::error_code(), 0, state->reused->finish());
    if (state->files) {
      if (auto payload = state->files->adopt(state->pool, state->file, state->size)) {
        return done(boost::system::error_code(), 0, std::move(payload));
      }
      if (!state->file.valid()) return done(boost::system::error_code(), EIO, nullptr);
    }
    if (!os::sealFinal(state->file.get())) {
      // EBUSY: the kernel still saw references to its pages after waiting for them. The body is
      // whole in the file: it goes on from memory, as when no memfd could be made.
      const int sealErrno = errno;
      if (auto bytes = os::readWhole(state->file.get(), state->size)) {
        return done(boost::system::error_code(), 0, core::makePayload(std::move(*bytes)));
      }
      return done(boost::system::error_code(), sealErrno, nullptr);
    }
    auto payload = os::fileBlob(std::move(state->file), state->size);
    return done(boost::system::error_code(), 0, std::move(payload));
  }
  if (state->reused) {  // straight into the mapping: one copy, no page to allocate
    auto room = state->reused->room(state->size - state->remaining);
    if (room.empty()) return done(boost::system::error_code(), ENOMEM, nullptr);
    socket.async_read_some(boost::asio::buffer(room.data(), room.size()),
                           [&socket, state, done = std::move(done)](
                               const boost::system::error_code& ec, std::size_t n) mutable {
                             if (ec) return done(ec, 0, nullptr);
                             state->remaining -= n;
                             readRestOfFileBody(socket, std::move(state), std::move(done));
                           });
    return;
  }
  const std::size_t want =
      static_cast<std::size_t>(std::min<std::uint64_t>(state->remaining, kFileBodyChunk));
  socket.async_read_some(boost::asio::buffer(state->chunk.get(), want),
                         [&socket, state, done = std::move(done)](
                             const boost::system::error_code& ec, std::size_t n) mutable {
                           if (ec) return done(ec, 0, nullptr);
                           const std::string_view bytes(state->chunk.get(), n);
                           if (!os::writeAll(state->file.get(), bytes)) {
                             return done(boost::system::error_code(), errno, nullptr);
                           }
                           state->remaining -= n;
                           readRestOfFileBody(socket, std::move(state), std::move(done));
                         });
}

// Sends `file` (a memfd blob) from `offset` to its end with sendfile(2), waiting for the socket
// to take more when it is full. done(ok).
template <class Socket, class Done>
void sendFileBody(Socket& socket, core::Payload file, std::uint64_t offset, Done done) {
  boost::system::error_code ignored;
  socket.native_non_blocking(true, ignored);
  while (offset < file->size()) {
    off_t at = static_cast<off_t>(offset);
    const std::size_t step =
        static_cast<std::size_t>(std::min<std::uint64_t>(file->size() - offset, 1u << 30));
    const ssize_t n = ::sendfile(socket.native_handle(), file->fd(), &at, step);
    if (n > 0) {
      offset += static_cast<std::uint64_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      socket.async_wait(Socket::wait_write,
                        [&socket, file = std::move(file), offset,
                         done = std::move(done)](const boost::system::error_code& ec) mutable {
                          if (ec) return done(false);
                          sendFileBody(socket, std::move(file), offset, std::move(done));
                        });
      return;
    }
    return done(false);  // the client went away (EPIPE, ECONNRESET), or 0 from a shrunk file
  }
  done(true);
}

}  // namespace bulkhead::api::http_detail
