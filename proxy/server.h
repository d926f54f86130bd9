#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <variant>

#include "proxy/admin/admin_server.h"
#include "proxy/admin/status_render.h"
#include "proxy/datapath/datapath.h"
#include "proxy/intercept/instance_lock.h"
#include "proxy/observe/cert_expiry.h"
#include "proxy/observe/sd_notify.h"
#include "proxy/runtime_state.h"
#include "proxy/tlswatch/tls_watcher.h"

namespace sidecrypt::proxy {

// The long-running process: owns the event loop and the current RuntimeState. SIGHUP reloads
// (keeping the old state if anything fails), SIGUSR1 logs the state, SIGTERM/SIGINT stop.
class Server {
 public:
  Server(std::filesystem::path config_path, RuntimeStatePtr initial);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  int run();  // blocks until stopped; returns the process exit code

  // Rebuilds the state from disk on a worker thread (config, keyrings, certificates: nothing that
  // can stall runs on the loop) and installs it on the loop; on failure keeps the current one.
  // `done` runs on the loop with the outcome. Requests made while one is waiting to run share
  // it; a request made while one is building gets a build of its own after it (the files may
  // have changed since that one read them).
  using ReloadDone = std::function<void(bool ok, const std::string& error)>;
  void reload(ReloadDone done = nullptr);
  // Persists a keyring changed by a Serf key query (atomic write with fsync, Consul's format)
  // on a worker thread, then installs it on the loop; an error leaves everything as it was.
  // `done` runs on the loop with the error, if any.
  using CommitDone = std::function<void(std::optional<std::string> error)>;
  void commitKeyring(GossipPool pool, filters::keyring::KeySetConstSharedPtr next, CommitDone done);
  const RuntimeState& state() const { return *state_; }
  // The instance lock this process holds (it outlives the Server): answered from the loop.
  void setInstanceLock(InstanceLock* lock) { lock_ = lock; }
  uint64_t reloadFailures() const { return reload_failures_; }

 private:
  static void onSignal(uv_signal_t* handle, int signum);
  void logState(const char* why) const;
  void beginShutdown();
  void stop();
  bool installRules();
  HttpResponse handleAdmin(const HttpRequest& r);
  HttpResponse handleCheck(const HttpRequest& r);
  HttpResponse handleMetrics(const HttpRequest& r);
  bool startHttp(std::string& err);
  StatusInput statusInput();
  bool readyNow(std::string& detail);
  void removeRulesIfConfigured();

  // Certificate file watch (docs/architecture.md, "Certificate file watching"). Baseline: learn
  // the directories and the contents, change nothing; Event: files changed, rebuild the TLS setup
  // if their contents did; Recheck: as Event after new watches started, without counting an
  // unchanged result.
  enum class TlsCheck : uint8_t { Baseline, Recheck, Event };
  void armTlsWatch();
  void queueTlsCheck(TlsCheck mode);
  // File work (reload builds, keyring writes, certificate checks) runs on libuv's thread pool one
  // job at a time, in order, so a reload never reads a keyring file that a commit is writing.
  struct FileJob {
    uv_work_t req{};
    Server* server = nullptr;
    bool is_reload = true;
    // reload
    std::filesystem::path config_path;
    std::variant<RuntimeStatePtr, std::vector<std::string>> built;
    std::vector<ReloadDone> reload_waiters;
    // keyring commit
    GossipPool pool = GossipPool::Lan;
    filters::keyring::KeySetConstSharedPtr keys;
    std::filesystem::path keyring_path;
    std::optional<std::string> write_error;
    CommitDone commit_done;
    // certificate file watch (tls_watch): checks the TLS files of `watch_state`
    bool tls_watch = false;
    TlsCheck watch_mode = TlsCheck::Baseline;
    RuntimeStatePtr watch_state;                     // the state when the check started
    std::optional<tlswatch::Digest> watch_previous;  // the contents last checked
    tlswatch::WatchPlan watch_plan;
    tlswatch::Digest watch_digest{};
    bool watch_changed = false;
    std::variant<RpcTlsSetupConstPtr, std::vector<std::string>> watch_built;
  };
  void enqueue(std::unique_ptr<FileJob> job);
  void startNextJob();
  void finishJob(FileJob& job);
  void installReload(FileJob& job);
  void installKeyring(FileJob& job);
  void installTlsCheck(FileJob& job);
  static void checkTlsFiles(FileJob& job);     // worker thread
  std::deque<std::unique_ptr<FileJob>> jobs_;  // front() is running while job_running_
  bool job_running_ = false;

  std::filesystem::path config_path_;
  RuntimeStatePtr state_;
  uv_loop_t loop_{};
  uv_signal_t sig_hup_{};
  uv_signal_t sig_term_{};
  uv_signal_t sig_int_{};
  uv_signal_t sig_usr1_{};
  uv_timer_t drain_timer_{};
  uv_timer_t key_use_timer_{};  // "key no longer in use" sweeps
  void sweepKeyUse();
  uv_timer_t cert_timer_{};  // certificate expiry warnings: at start, reload, each threshold
  CertExpiryWatch cert_watch_;
  void checkCertificates();
  std::unique_ptr<tlswatch::TlsWatcher> tls_watcher_;  // null when tls.watch is off
  FileJob* queued_tls_check_ = nullptr;                // queued, not started yet
  std::optional<tlswatch::Digest> tls_digest_;
  tlswatch::WatchStatus tls_watch_;
  std::unique_ptr<Datapath> datapath_;
  std::unique_ptr<AdminServer> admin_;
  std::unique_ptr<AdminServer> metrics_;       // read-only: /metrics and /ready ([metrics] listen)
  std::unique_ptr<ServiceNotifier> notifier_;  // systemd: READY/RELOADING/STOPPING/WATCHDOG
  InstanceLock* lock_ = nullptr;
  std::string last_reload_error_;
  bool last_reload_ok_ = true;
  WallClock::time_point started_{};
  std::chrono::steady_clock::time_point rules_checked_{};
  bool rules_ok_ = false;
  std::string rules_detail_;
  bool stopping_ = false;
  bool loop_closed_ = false;
  uint64_t reloads_ = 0;
  uint64_t reload_failures_ = 0;
};

// Logs what changed between two states (rollout stages, key fingerprints).
void logStateChanges(const RuntimeState& before, const RuntimeState& after);

}  // namespace sidecrypt::proxy
