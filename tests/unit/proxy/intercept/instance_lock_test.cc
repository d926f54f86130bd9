#include "proxy/intercept/instance_lock.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>
#include <catch2/catch.hpp>

#include <atomic>
#include <csignal>
#include <cstring>
#include <thread>

using namespace sidecrypt::proxy;

namespace {

// A fresh network namespace for this thread, given back on scope exit (the other unit tests
// use the original one).
struct OwnNetns {
  int saved = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  bool entered = saved >= 0 && ::unshare(CLONE_NEWNET) == 0;
  ~OwnNetns() {
    if (entered) {
      (void)::setns(saved, CLONE_NEWNET);
    }
    if (saved >= 0) {
      ::close(saved);
    }
  }
};

}  // namespace

// Abstract socket names are per network namespace: the test takes its own namespace when it can
// (root), so it never meets a real sidecrypt of the host. Without that privilege it still runs
// in the host namespace unless a sidecrypt already holds the lock there.
TEST_CASE("instance lock: one holder per network namespace, the second learns who holds it",
          "[instance_lock]") {
  OwnNetns ns;
  if (!ns.entered && InstanceLock::holder()) {
    WARN("not run: a sidecrypt holds the lock of this namespace and we cannot make our own");
    return;
  }
  REQUIRE_FALSE(InstanceLock::holder().has_value());
  {
    auto first = InstanceLock::acquire("run", "/etc/sidecrypt/a b.toml", "0123456789abcdef");
    REQUIRE(std::holds_alternative<std::unique_ptr<InstanceLock>>(first));
    auto second = InstanceLock::acquire("run", "/etc/sidecrypt/other.toml", "ffff");
    REQUIRE(std::holds_alternative<LockHolder>(second));
    const auto& h = std::get<LockHolder>(second);
    // Not serving (no loop): the kernel still names the holder, and its command line.
    CHECK(h.pid == ::getpid());
    CHECK(h.describe().starts_with("pid " + std::to_string(::getpid())));
    uv_loop_t loop;
    REQUIRE(uv_loop_init(&loop) == 0);
    auto& lock = *std::get<std::unique_ptr<InstanceLock>>(first);
    std::string err;
    REQUIRE(lock.serve(&loop, err));
    // The answer comes from the loop: ask from another thread while it runs.
    // `asked` tells the loop below that the asker is done; `seen` is read only after the join
    // (reading it while the asker writes it was a data race, found by ThreadSanitizer).
    std::optional<LockHolder> seen;
    std::atomic<bool> asked{false};
    std::thread asker([&seen, &asked] {
      seen = InstanceLock::holder();
      asked.store(true, std::memory_order_release);
    });
    for (int i = 0; i < 200 && !asked.load(std::memory_order_acquire); ++i) {
      uv_run(&loop, UV_RUN_NOWAIT);
      ::usleep(5000);
    }
    asker.join();
    REQUIRE(seen.has_value());
    CHECK(seen->pid == ::getpid());
    CHECK(seen->role == "run");
    CHECK(seen->config == "/etc/sidecrypt/a b.toml");
    CHECK(seen->fingerprint == "0123456789abcdef");
    CHECK(seen->describe() ==
          "pid " + std::to_string(::getpid()) + " (sidecrypt run, config /etc/sidecrypt/a b.toml)");
    lock.close();
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
  }
  // Released with the holder: the next one takes it.
  CHECK_FALSE(InstanceLock::holder().has_value());
  auto again = InstanceLock::acquire("rules install", "/x.toml", "1");
  CHECK(std::holds_alternative<std::unique_ptr<InstanceLock>>(again));
}

// Any local user can bind an abstract name. A squatter (another user, or a name bound with
// nobody listening) must not stop sidecrypt from starting: acquire() says why it goes on without
// a lock instead of naming a holder.
TEST_CASE("instance lock: a squatter of another user is not taken for an instance",
          "[instance_lock]") {
  OwnNetns ns;
  if (!ns.entered || ::geteuid() != 0) {
    WARN("not run: needs root and a network namespace of its own");
    return;
  }
  for (const bool listens : {true, false}) {
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      // The squatter: nobody (65534), the lock's name, a fake answer line.
      if (::setgid(65534) != 0 || ::setuid(65534) != 0) {
        ::_exit(3);
      }
      sockaddr_un sa{};
      sa.sun_family = AF_UNIX;
      const char name[] = "sidecrypt/instance-lock";
      std::memcpy(sa.sun_path + 1, name, sizeof name - 1);
      const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
      const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + sizeof name);
      if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sa), len) != 0 ||
          (listens && ::listen(fd, 4) != 0)) {
        ::_exit(4);
      }
      (void)!::write(ready[1], "x", 1);
      for (int i = 0; i < 100; ++i) {
        const int c = listens ? ::accept(fd, nullptr, nullptr) : -1;
        if (c >= 0) {
          const char line[] = "pid=1 role=run fingerprint=0 config=/fake\n";
          (void)!::write(c, line, sizeof line - 1);
          ::close(c);
        } else {
          ::usleep(50000);
        }
      }
      ::_exit(0);
    }
    char b = 0;
    REQUIRE(::read(ready[0], &b, 1) == 1);
    auto got = InstanceLock::acquire("run", "/etc/sidecrypt/proxy.toml", "1");
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    ::close(ready[0]);
    ::close(ready[1]);
    REQUIRE(std::holds_alternative<std::string>(got));
    CHECK_THAT(std::get<std::string>(got),
               Catch::Contains(listens ? "held by uid 65534" : "nobody listens"));
  }
}
