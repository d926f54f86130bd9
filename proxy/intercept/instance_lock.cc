#include "proxy/intercept/instance_lock.h"

#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

namespace sidecrypt::proxy {

namespace {

constexpr char kName[] = "sidecrypt/instance-lock";

// Who may hold the lock: root, this process's own user, and the service user (the `sidecrypt`
// account of the unit and the image, uid 1337 in the image). Anyone else holding the name is a
// squatter.
bool trustedHolder(long uid) {
  if (uid == 0 || uid == static_cast<long>(::geteuid()) || uid == 1337) {
    return true;
  }
  const passwd* pw = ::getpwnam("sidecrypt");
  return pw != nullptr && static_cast<long>(pw->pw_uid) == uid;
}

socklen_t abstractAddress(sockaddr_un& sa) {
  std::memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path + 1, kName, sizeof kName - 1);
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + sizeof kName - 1);
}

// "key=value" fields separated by spaces; config= runs to the end of the line (paths may hold
// spaces).
LockHolder parseLine(const std::string& line, LockHolder h) {
  size_t pos = 0;
  while (pos < line.size()) {
    const size_t eq = line.find('=', pos);
    if (eq == std::string::npos) {
      break;
    }
    const std::string key = line.substr(pos, eq - pos);
    size_t end = key == "config" ? line.size() : line.find(' ', eq);
    if (end == std::string::npos) {
      end = line.size();
    }
    std::string value = line.substr(eq + 1, end - eq - 1);
    if (key == "pid") {
      h.pid = std::strtol(value.c_str(), nullptr, 10);
    } else if (key == "role") {
      for (char& c : value) {
        c = c == '_' ? ' ' : c;
      }
      h.role = value;
    } else if (key == "fingerprint") {
      h.fingerprint = value;
    } else if (key == "config") {
      h.config = value;
    }
    pos = end + 1;
  }
  return h;
}

// The holder's own answer; when it does not answer (a short-lived `rules` command), what the
// kernel says about the listener (SO_PEERCRED) and its command line.
std::optional<LockHolder> query() {
  sockaddr_un sa{};
  const socklen_t len = abstractAddress(sa);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return std::nullopt;
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), len) != 0) {
    ::close(fd);
    return std::nullopt;
  }
  LockHolder h;
  ucred cred{};
  socklen_t clen = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0) {
    h.pid = cred.pid;
    h.uid = static_cast<long>(cred.uid);
  }
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  while (line.find('\n') == std::string::npos && line.size() < 4096) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) {
      break;
    }
    char buf[512];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) {
      break;
    }
    line.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (const size_t nl = line.find('\n'); nl != std::string::npos) {
    return parseLine(line.substr(0, nl), h);
  }
  if (h.pid > 0) {
    // No answer: read what the process was started with (same pid namespace only).
    std::ifstream f("/proc/" + std::to_string(h.pid) + "/cmdline", std::ios::binary);
    std::string cmd((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::string prev;
    size_t pos = 0;
    while (pos < cmd.size()) {
      const size_t end = cmd.find('\0', pos);
      const std::string arg = cmd.substr(pos, end == std::string::npos ? end : end - pos);
      if (prev == "--config") {
        h.config = arg;
      }
      if (prev == "rules" && (arg == "install" || arg == "remove")) {
        h.role = "rules " + arg;
      }
      prev = arg;
      pos = end == std::string::npos ? cmd.size() : end + 1;
    }
  }
  return h;
}

}  // namespace

const char* InstanceLock::name() {
  return kName;
}

std::string LockHolder::describe() const {
  std::string out = pid > 0 ? "pid " + std::to_string(pid) : std::string("a process");
  out += " (sidecrypt " + (role.empty() ? std::string("?") : role);
  out += config.empty() ? std::string(", config unknown") : ", config " + config;
  return out + ")";
}

std::variant<std::unique_ptr<InstanceLock>, LockHolder, std::string> InstanceLock::acquire(
    const std::string& role, const std::string& config, const std::string& fingerprint) {
  sockaddr_un sa{};
  const socklen_t len = abstractAddress(sa);
  // A holder that just bound may not listen yet: ask again briefly before naming "a process".
  for (int attempt = 0;; ++attempt) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      return std::string("socket(AF_UNIX): ") + std::strerror(errno);
    }
    const bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&sa), len) == 0;
    if (!bound && errno != EADDRINUSE) {
      const int e = errno;
      ::close(fd);
      return std::string("bind(@") + kName + "): " + std::strerror(e);
    }
    if (bound && ::listen(fd, 16) != 0) {
      const int e = errno;
      ::close(fd);
      return std::string("listen(@") + kName + "): " + std::strerror(e);
    }
    if (bound) {
      std::string r = role;
      for (char& c : r) {
        c = c == ' ' ? '_' : c;
      }
      return std::unique_ptr<InstanceLock>(
          new InstanceLock(fd, "pid=" + std::to_string(::getpid()) + " role=" + r +
                                   " fingerprint=" + fingerprint + " config=" + config + "\n"));
    }
    ::close(fd);
    auto h = query();
    if (h && h->uid >= 0 && !trustedHolder(h->uid)) {
      return "@" + std::string(kName) + " is held by uid " + std::to_string(h->uid) + " (pid " +
             std::to_string(h->pid) +
             "), not by root or sidecrypt's user: a squatter, not a sidecrypt instance";
    }
    if (h) {
      return *h;
    }
    if (attempt >= 20) {
      // Every sidecrypt listens right after it binds; a name that stays bound with nobody
      // listening is not one of ours.
      return "@" + std::string(kName) + " is bound but nobody listens on it: not a sidecrypt";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

std::optional<LockHolder> InstanceLock::holder() {
  return query();
}

bool InstanceLock::serve(uv_loop_t* loop, std::string& err) {
  poll_ = new uv_poll_t{};
  poll_->data = this;
  int rc = uv_poll_init(loop, poll_, fd_);
  if (rc == 0) {
    rc = uv_poll_start(poll_, UV_READABLE, &InstanceLock::onQuery);
  }
  if (rc != 0) {
    err = std::string("instance lock: ") + uv_strerror(rc);
    return false;
  }
  return true;
}

void InstanceLock::onQuery(uv_poll_t* handle, int status, int /*events*/) {
  auto* self = static_cast<InstanceLock*>(handle->data);
  if (status < 0 || self == nullptr) {
    return;
  }
  // Bounded per wake-up; the answer is one short line that fits any socket buffer.
  for (int i = 0; i < 16; ++i) {
    int c = ::accept4(self->fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0) {
      return;
    }
    (void)!::send(c, self->line_.data(), self->line_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    ::close(c);
  }
}

void InstanceLock::close() {
  if (poll_ != nullptr) {
    uv_poll_stop(poll_);
    poll_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(poll_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    poll_ = nullptr;
  }
}

InstanceLock::~InstanceLock() {
  // close() must have run on the loop thread before the loop closed; the fd goes last, which
  // releases the lock.
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

}  // namespace sidecrypt::proxy
