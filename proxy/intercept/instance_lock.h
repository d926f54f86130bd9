#pragma once

#include <memory>
#include <optional>
#include <string>
#include <variant>

// libuv's handle types, declared only: the commands that take or query the lock (the CLI) do not
// compile against libuv; `run` serves it on the server's loop (docs/architecture.md §1.1).
struct uv_loop_s;
struct uv_poll_s;

namespace sidecrypt::proxy {

// Who holds the instance lock of this network namespace, as it describes itself.
struct LockHolder {
  long pid = 0;                  // 0 when unknown (another pid namespace, nothing answered)
  std::string role;              // "run", "rules install", "rules remove"; empty when unknown
  std::string config;            // the holder's config path
  std::string fingerprint;       // rulesFingerprint() of the holder's config
  long uid = -1;                 // the listener's user (SO_PEERCRED); -1 when unknown
  std::string describe() const;  // "pid 123 (sidecrypt run, config /etc/sidecrypt/proxy.toml)"
};

// One sidecrypt per network namespace: an abstract Unix socket. Abstract socket names belong to
// the network namespace, so the lock is naturally per namespace, needs no file, no privilege and
// no cleanup: the kernel releases it when the holder exits, however it exits. The holder
// listens on it and answers every connection with one line describing itself, so a second
// instance (even in another pid namespace, e.g. another container of the same pod) can name it.
class InstanceLock {
 public:
  ~InstanceLock();
  InstanceLock(const InstanceLock&) = delete;
  InstanceLock& operator=(const InstanceLock&) = delete;

  // Takes the lock, or returns who holds it, or (string) why no lock can be made here at all
  // (no AF_UNIX socket: a sandbox), or why the name's holder is not a sidecrypt (another user
  // squats it: abstract names carry no permissions, so any local user can bind one); callers
  // then go on without a lock, loudly. Only root, this process's user and the sidecrypt service
  // user count as holders, so a local user cannot stop sidecrypt from starting.
  static std::variant<std::unique_ptr<InstanceLock>, LockHolder, std::string> acquire(
      const std::string& role, const std::string& config, const std::string& fingerprint);
  // Who holds the lock now, without taking it; nullopt when nobody does.
  static std::optional<LockHolder> holder();

  // Answers queries from the event loop (a running instance); short-lived commands do not.
  bool serve(uv_loop_s* loop, std::string& err);
  void close();

  // The abstract socket name (without the leading NUL), e.g. for `ss -xl`.
  static const char* name();

 private:
  InstanceLock(int fd, std::string line) : fd_(fd), line_(std::move(line)) {}
  static void onQuery(uv_poll_s* handle, int status, int events);
  int fd_ = -1;
  std::string line_;
  uv_poll_s* poll_ = nullptr;
};

}  // namespace sidecrypt::proxy
