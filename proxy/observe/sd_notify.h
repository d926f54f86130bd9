#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>

namespace sidecrypt::proxy {

// systemd's notification protocol (sd_notify(3)), without libsystemd: each message is one
// datagram of newline-separated KEY=VALUE lines sent to the AF_UNIX socket named by
// $NOTIFY_SOCKET (a path, or an abstract name written with a leading '@').
class SdNotify {
 public:
  SdNotify() = default;  // disabled: send() does nothing and succeeds
  SdNotify(std::string socket, uint64_t watchdog_usec)
      : socket_(std::move(socket)), watchdog_usec_(watchdog_usec) {}

  // From $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID: the watchdog applies to this process
  // only when WATCHDOG_PID is unset or equal to getpid() (as sd_watchdog_enabled(3)).
  static SdNotify fromEnvironment();

  bool enabled() const { return !socket_.empty(); }
  // The watchdog interval systemd expects pings within; 0 when there is no watchdog.
  uint64_t watchdogUsec() const { return watchdog_usec_; }
  const std::string& socket() const { return socket_; }

  // Sends one message; on failure returns false and says why in `err`.
  bool send(const std::string& message, std::string& err) const;

 private:
  std::string socket_;
  uint64_t watchdog_usec_ = 0;
};

// CLOCK_MONOTONIC in microseconds, as systemd wants it in MONOTONIC_USEC= with RELOADING=1.
uint64_t monotonicUsec();

// The service's life cycle told to systemd, on a libuv loop:
//   - READY=1 once `ready` (polled until then) says the service is ready, with STATUS= saying
//     what it waits for meanwhile;
//   - RELOADING=1 + MONOTONIC_USEC= when a reload starts, READY=1 when it is done (either way:
//     a failed reload keeps the running state);
//   - STOPPING=1 once; nothing but STATUS= follows it (READY=1 never follows STOPPING=1);
//   - WATCHDOG=1 every half watchdog interval from a loop timer, so a stuck loop is noticed.
// Without $NOTIFY_SOCKET it does nothing (no timers are started).
class ServiceNotifier {
 public:
  using ReadyProbe = std::function<bool(std::string& detail)>;

  ServiceNotifier(uv_loop_t* loop, SdNotify notify);
  ~ServiceNotifier();
  ServiceNotifier(const ServiceNotifier&) = delete;
  ServiceNotifier& operator=(const ServiceNotifier&) = delete;

  // Starts polling `ready` every `poll_ms` (and once now) until it returns true.
  void start(ReadyProbe ready, uint64_t poll_ms = 1000);
  void status(const std::string& text);
  void reloading();
  void reloaded(bool ok, const std::string& detail);
  void stopping(const std::string& why);
  // Closes the timers (the loop can then finish); idempotent.
  void close();

  bool readySent() const { return ready_sent_; }

 private:
  void poll();
  void send(const std::string& message);

  SdNotify notify_;
  uv_timer_t watchdog_{};
  uv_timer_t poll_timer_{};
  bool timers_open_ = false;
  ReadyProbe ready_;
  std::string last_status_;
  bool ready_sent_ = false;
  bool reloading_ = false;
  bool stopping_ = false;
  bool send_failed_logged_ = false;
};

}  // namespace sidecrypt::proxy
