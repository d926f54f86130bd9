#pragma once

// Helpers for the in-process tests of the loop layer (StreamSession, UdpRelay, Datapath): a libuv
// loop whose every wait is bounded and which, at the end of a test, must close with no handle
// left and every descriptor given back (libuv's own tests end the same way), and plain
// non-blocking loopback sockets for the agent and the peer, driven between loop turns on the
// same thread. Nothing here needs root.

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>
#include <catch2/catch.hpp>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "proxy/net/address.h"

namespace sidecrypt::test::loop {

using proxy::SocketAddress;
using Clock = std::chrono::steady_clock;

// Open descriptors of this process (/proc/self/fd, minus the one opendir uses).
inline int countOpenFds() {
  DIR* d = ::opendir("/proc/self/fd");
  REQUIRE(d != nullptr);
  int n = 0;
  while (::readdir(d) != nullptr) {
    ++n;
  }
  ::closedir(d);
  return n - 3;  // ".", "..", and the directory's own fd
}

// A libuv loop for one test. finish() is the leak check: every handle the code under test
// opened must close by itself (bounded), uv_loop_close() must return 0, and the process must hold
// exactly the descriptors it held before the loop existed.
class TestLoop {
 public:
  TestLoop() : fds_before_((warmUp(), countOpenFds())) { REQUIRE(uv_loop_init(&loop_) == 0); }
  // A test that failed before finish() leaves its loop as it is: closing handles behind the
  // back of the objects that own them would only add crashes to the failure report.
  ~TestLoop() = default;
  TestLoop(const TestLoop&) = delete;
  TestLoop& operator=(const TestLoop&) = delete;

  uv_loop_t* get() { return &loop_; }

  // Runs the loop until `done` is true or `ms` passed; `done` is also checked every millisecond
  // (a tick timer), so it may poll the test's own sockets, which the loop does not watch.
  bool runUntil(const std::function<bool()>& done, int ms) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(ms);
    uv_timer_t tick;
    uv_timer_init(&loop_, &tick);
    uv_timer_start(
        &tick, [](uv_timer_t*) {}, 1, 1);
    bool ok = false;
    for (;;) {
      if (done()) {
        ok = true;
        break;
      }
      if (Clock::now() >= deadline) {
        break;
      }
      uv_run(&loop_, UV_RUN_ONCE);
    }
    uv_timer_stop(&tick);
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);  // the tick's close callback
    return ok;
  }

  // Runs the loop for `ms` whatever happens (to show that something does NOT happen).
  void runFor(int ms) {
    runUntil([] { return false; }, ms);
  }

  // Handles that are still open (not closing), by type name, for a failure message.
  std::vector<std::string> openHandles() {
    std::vector<std::string> names;
    uv_walk(
        &loop_,
        [](uv_handle_t* h, void* arg) {
          static_cast<std::vector<std::string>*>(arg)->emplace_back(
              uv_handle_type_name(uv_handle_get_type(h)));
        },
        &names);
    return names;
  }

  // The leak check. Call once every object under test was stopped (or closed itself) and the
  // test's own sockets were closed.
  void finish() {
    const bool drained = runUntil([this] { return openHandles().size() <= 1; }, 2000);  // 1: tick
    INFO("handles left open: " << Catch::Detail::stringify(openHandles()));
    REQUIRE(drained);
    REQUIRE(uv_run(&loop_, UV_RUN_NOWAIT) == 0);
    REQUIRE(uv_loop_close(&loop_) == 0);
    REQUIRE(countOpenFds() == fds_before_);
  }

 private:
  // The first loop of a process opens libuv's global descriptors (the signal lock pipe), which
  // stay open for good: count after that.
  static void warmUp() {
    static const bool once = [] {
      uv_loop_t l;
      REQUIRE(uv_loop_init(&l) == 0);
      REQUIRE(uv_loop_close(&l) == 0);
      return true;
    }();
    (void)once;
  }

  uv_loop_t loop_{};
  int fds_before_;
};

// ---- plain sockets for the test's agent and peer ------------------------------------------------

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset(o.release());
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1) {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

inline SocketAddress boundAddress(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0);
  return SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

// A non-blocking TCP listener on 127.0.0.1, kernel-chosen port. `buffers` > 0 sets SO_SNDBUF
// and SO_RCVBUF, which the accepted sockets inherit.
inline Fd listenTcp(int buffers = 0, const char* ip = "127.0.0.1") {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  REQUIRE(fd.valid());
  if (buffers > 0) {
    for (int opt : {SO_SNDBUF, SO_RCVBUF}) {
      REQUIRE(::setsockopt(fd.get(), SOL_SOCKET, opt, &buffers, sizeof buffers) == 0);
    }
  }
  SocketAddress a = SocketAddress::parse(std::string(ip) + ":0");
  REQUIRE(::bind(fd.get(), a.sa(), a.len()) == 0);
  REQUIRE(::listen(fd.get(), 16) == 0);
  return fd;
}

// A non-blocking connect to `to` (completes in the background on loopback).
inline Fd connectTcp(const SocketAddress& to, int sndbuf = 0, int rcvbuf = 0) {
  Fd fd(::socket(to.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  REQUIRE(fd.valid());
  for (auto [opt, v] : {std::pair{SO_SNDBUF, sndbuf}, std::pair{SO_RCVBUF, rcvbuf}}) {
    if (v > 0) {
      REQUIRE(::setsockopt(fd.get(), SOL_SOCKET, opt, &v, sizeof v) == 0);
    }
  }
  const int rc = ::connect(fd.get(), to.sa(), to.len());
  REQUIRE((rc == 0 || errno == EINPROGRESS));
  return fd;
}

// Takes one pending connection, or an invalid Fd if none is pending.
inline Fd tryAccept(int listener) {
  return Fd(::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
}

// Writes as much of `data` from `at` as the socket takes now; returns the new `at`.
inline size_t sendSome(int fd, const std::string& data, size_t at) {
  while (at < data.size()) {
    const ssize_t n = ::send(fd, data.data() + at, data.size() - at, MSG_NOSIGNAL);
    if (n <= 0) {
      break;
    }
    at += static_cast<size_t>(n);
  }
  return at;
}

// What a non-blocking read found: bytes appended to `into`, and whether the stream ended.
enum class ReadState : uint8_t { Open, Eof, Reset };
inline ReadState recvSome(int fd, std::string& into) {
  char buf[65536];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      into.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) {
      return ReadState::Eof;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return ReadState::Open;
    }
    return ReadState::Reset;
  }
}

// A byte pattern whose every position differs from its neighbours' (reordering or loss shows).
inline std::string pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761U + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245U + 12345U;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

}  // namespace sidecrypt::test::loop
