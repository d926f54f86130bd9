#include "proxy/observe/sd_notify.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace sidecrypt::proxy {

namespace {

bool parseUint(const char* text, uint64_t& out) {
  if (text == nullptr || *text == '\0') {
    return false;
  }
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || end == nullptr || *end != '\0') {
    return false;
  }
  out = v;
  return true;
}

// One line of STATUS=: systemd shows the text as is; a newline would start another assignment.
std::string oneLine(const std::string& text) {
  std::string out = text;
  for (char& c : out) {
    if (c == '\n' || c == '\r') {
      c = ' ';
    }
  }
  return out;
}

}  // namespace

SdNotify SdNotify::fromEnvironment() {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  if (socket == nullptr || (socket[0] != '/' && socket[0] != '@')) {
    return {};
  }
  uint64_t usec = 0;
  if (!parseUint(std::getenv("WATCHDOG_USEC"), usec)) {
    usec = 0;
  }
  uint64_t pid = 0;
  if (usec != 0 && parseUint(std::getenv("WATCHDOG_PID"), pid) &&
      pid != static_cast<uint64_t>(::getpid())) {
    usec = 0;  // the watchdog is meant for another process (e.g. our parent)
  }
  return {socket, usec};
}

bool SdNotify::send(const std::string& message, std::string& err) const {
  if (!enabled()) {
    return true;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_.size() >= sizeof addr.sun_path) {
    err = "NOTIFY_SOCKET is too long";
    return false;
  }
  std::memcpy(addr.sun_path, socket_.data(), socket_.size());
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_.size());
  if (socket_[0] == '@') {
    addr.sun_path[0] = '\0';  // abstract namespace: no terminating NUL counted
  } else {
    len += 1;
  }
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = std::string("socket(AF_UNIX): ") + std::strerror(errno);
    return false;
  }
  // Never block the event loop on a service manager that does not read.
  const ssize_t n = ::sendto(fd, message.data(), message.size(), MSG_NOSIGNAL | MSG_DONTWAIT,
                             reinterpret_cast<const sockaddr*>(&addr), len);
  const int saved = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(message.size())) {
    err = "sendto " + socket_ + ": " + (n < 0 ? std::strerror(saved) : "short write");
    return false;
  }
  return true;
}

uint64_t monotonicUsec() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000ULL + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

ServiceNotifier::ServiceNotifier(uv_loop_t* loop, SdNotify notify) : notify_(std::move(notify)) {
  if (!notify_.enabled()) {
    return;
  }
  uv_timer_init(loop, &watchdog_);
  uv_timer_init(loop, &poll_timer_);
  watchdog_.data = this;
  poll_timer_.data = this;
  timers_open_ = true;
  const uint64_t usec = notify_.watchdogUsec();
  if (usec != 0) {
    // Half the interval, as sd_watchdog_enabled(3) recommends; at least 1 ms.
    const uint64_t every_ms = std::max<uint64_t>(usec / 2000, 1);
    uv_timer_start(
        &watchdog_,
        [](uv_timer_t* t) { static_cast<ServiceNotifier*>(t->data)->send("WATCHDOG=1"); }, 0,
        every_ms);
    spdlog::info("systemd watchdog: {} ms, pinging every {} ms", usec / 1000, every_ms);
  }
}

ServiceNotifier::~ServiceNotifier() {
  // The owner closes the timers (close()) and runs the loop before destroying this object.
}

void ServiceNotifier::send(const std::string& message) {
  std::string err;
  if (!notify_.send(message, err) && !send_failed_logged_) {
    send_failed_logged_ = true;  // once: a watchdog ping fails every few seconds otherwise
    spdlog::warn("systemd notification failed: {}", err);
  }
}

void ServiceNotifier::status(const std::string& text) {
  if (!notify_.enabled() || text == last_status_) {
    return;
  }
  last_status_ = text;
  send("STATUS=" + oneLine(text));
}

void ServiceNotifier::start(ReadyProbe ready, uint64_t poll_ms) {
  if (!notify_.enabled() || stopping_ || !timers_open_) {
    return;
  }
  ready_ = std::move(ready);
  uv_timer_start(
      &poll_timer_, [](uv_timer_t* t) { static_cast<ServiceNotifier*>(t->data)->poll(); }, 0,
      poll_ms);
}

void ServiceNotifier::poll() {
  if (ready_sent_ || stopping_ || !ready_) {
    uv_timer_stop(&poll_timer_);
    return;
  }
  std::string detail;
  if (!ready_(detail)) {
    status("waiting: " + detail);
    return;
  }
  uv_timer_stop(&poll_timer_);
  ready_sent_ = true;
  last_status_ = "ready: " + detail;
  send("READY=1\nSTATUS=" + oneLine(last_status_));
  spdlog::info("systemd notified: ready ({})", detail);
}

void ServiceNotifier::reloading() {
  // Before the first READY=1 systemd still waits for the start; a reload then is not a reload.
  if (!notify_.enabled() || !ready_sent_ || stopping_) {
    return;
  }
  reloading_ = true;
  last_status_ = "reloading";
  send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonicUsec()) + "\nSTATUS=reloading");
}

void ServiceNotifier::reloaded(bool ok, const std::string& detail) {
  if (!notify_.enabled() || !reloading_ || stopping_) {
    return;
  }
  reloading_ = false;
  last_status_ =
      ok ? "ready: reloaded" : "ready: reload failed, running configuration kept: " + detail;
  send("READY=1\nSTATUS=" + oneLine(last_status_));
}

void ServiceNotifier::stopping(const std::string& why) {
  if (!notify_.enabled() || stopping_) {
    return;
  }
  stopping_ = true;
  if (timers_open_) {
    uv_timer_stop(&poll_timer_);
  }
  last_status_ = "stopping: " + why;
  send("STOPPING=1\nSTATUS=" + oneLine(last_status_));
}

void ServiceNotifier::close() {
  if (!timers_open_) {
    return;
  }
  timers_open_ = false;
  for (uv_timer_t* t : {&watchdog_, &poll_timer_}) {
    uv_timer_stop(t);
    uv_close(reinterpret_cast<uv_handle_t*>(t), nullptr);
  }
}

}  // namespace sidecrypt::proxy
