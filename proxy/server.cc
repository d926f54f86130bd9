#include "proxy/server.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <optional>
#include <string>

#include "proxy/admin/ca_view.h"
#include "proxy/config/config_loader.h"
#include "proxy/config/reload_reach.h"
#include "proxy/intercept/capabilities.h"
#include "proxy/intercept/rules.h"
#include "proxy/keyring/keyring_file.h"
#include "proxy/observe/log.h"

namespace sidecrypt::proxy {

namespace {

std::string ringSummary(const filters::keyring::KeySetConstSharedPtr& keys) {
  if (!keys) {
    return "none";
  }
  std::string out;
  for (size_t i = 0; i < keys->size(); ++i) {
    out += (i == 0 ? "" : ",") + keys->fingerprint(i) + (i == 0 ? "(primary)" : "");
  }
  return out;
}

void logFlag(const char* name, bool before, bool after) {
  if (before != after) {
    spdlog::info("stage changed: {} {} -> {}", name, before, after);
  }
}

// A key counts as in use while some peer sent with it within the window; checked this often.
constexpr uint64_t kKeyUseSweepMs = 15'000;
constexpr int64_t kKeyUseWindowS = 60;

void checkUv(int rc, const char* what) {
  if (rc != 0) {
    spdlog::critical("{} failed: {}", what, uv_strerror(rc));
    std::abort();
  }
}

}  // namespace

void logStateChanges(const RuntimeState& a, const RuntimeState& b) {
  logFlag("gossip.encrypt_verify_incoming", a.config.gossip.encrypt_verify_incoming,
          b.config.gossip.encrypt_verify_incoming);
  logFlag("gossip.encrypt_verify_outgoing", a.config.gossip.encrypt_verify_outgoing,
          b.config.gossip.encrypt_verify_outgoing);
  logFlag("tls.verify_incoming", a.config.tls.verify_incoming, b.config.tls.verify_incoming);
  logFlag("tls.verify_outgoing", a.config.tls.verify_outgoing, b.config.tls.verify_outgoing);
  logFlag("tls.verify_server_hostname", a.config.tls.verify_server_hostname,
          b.config.tls.verify_server_hostname);
  if (a.config.log.level != b.config.log.level || a.config.log.format != b.config.log.format) {
    spdlog::info("log changed: level {} -> {}, format {} -> {}", a.config.log.level,
                 b.config.log.level, a.config.log.format == LogFormat::Json ? "json" : "text",
                 b.config.log.format == LogFormat::Json ? "json" : "text");
  }
  const auto before_lan = ringSummary(a.lan_keys);
  const auto after_lan = ringSummary(b.lan_keys);
  if (before_lan != after_lan) {
    spdlog::info("keyring changed: lan {} -> {}", before_lan, after_lan);
  }
  const auto before_wan = ringSummary(a.wan_keys);
  const auto after_wan = ringSummary(b.wan_keys);
  if (before_wan != after_wan) {
    spdlog::info("keyring changed: wan {} -> {}", before_wan, after_wan);
  }
}

Server::Server(std::filesystem::path config_path, RuntimeStatePtr initial)
    : config_path_(std::move(config_path)), state_(std::move(initial)) {
  checkUv(uv_loop_init(&loop_), "uv_loop_init");
  loop_.data = this;
  for (uv_signal_t* s : {&sig_hup_, &sig_term_, &sig_int_, &sig_usr1_}) {
    checkUv(uv_signal_init(&loop_, s), "uv_signal_init");
    s->data = this;
  }
  checkUv(uv_timer_init(&loop_, &drain_timer_), "uv_timer_init");
  drain_timer_.data = this;
  checkUv(uv_timer_init(&loop_, &key_use_timer_), "uv_timer_init");
  key_use_timer_.data = this;
  checkUv(uv_timer_init(&loop_, &cert_timer_), "uv_timer_init");
  cert_timer_.data = this;
}

Server::~Server() {
  // run() leaves a closed loop behind; a Server that never ran still owns open handles.
  if (!loop_closed_) {
    if (uv_is_closing(reinterpret_cast<uv_handle_t*>(&drain_timer_)) == 0) {
      stop();
    }
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
  }
}

void Server::logState(const char* why) const {
  const auto& c = state_->config;
  spdlog::info(
      "{}: config {}; gossip encrypt_verify_incoming={} encrypt_verify_outgoing={}; "
      "lan keyring {}; wan keyring {}; tls verify_incoming={} verify_outgoing={} "
      "verify_server_hostname={}; reloads {} (failed {})",
      why, config_path_.string(), c.gossip.encrypt_verify_incoming,
      c.gossip.encrypt_verify_outgoing, ringSummary(state_->lan_keys),
      ringSummary(state_->wan_keys), c.tls.verify_incoming, c.tls.verify_outgoing,
      c.tls.verify_server_hostname, reloads_, reload_failures_);
  for (const auto& p : c.intercept.ports) {
    spdlog::debug("intercept {} port {} ({}, {})", p.name, p.port, toString(p.protocol),
                  toString(p.transport));
  }
  if (datapath_) {
    spdlog::info("counters: sessions {}; {}", datapath_->activeSessions(), datapath_->statsText());
  }
}

void Server::reload(ReloadDone done) {
  // A reload that has not started yet serves this request too.
  for (size_t i = job_running_ ? 1 : 0; i < jobs_.size(); ++i) {
    if (jobs_[i]->is_reload) {
      if (done) {
        jobs_[i]->reload_waiters.push_back(std::move(done));
      }
      return;
    }
  }
  if (notifier_) {
    notifier_->reloading();
  }
  auto job = std::make_unique<FileJob>();
  job->is_reload = true;
  job->config_path = config_path_;
  if (done) {
    job->reload_waiters.push_back(std::move(done));
  }
  enqueue(std::move(job));
}

void Server::enqueue(std::unique_ptr<FileJob> job) {
  job->server = this;
  job->req.data = job.get();
  jobs_.push_back(std::move(job));
  startNextJob();
}

void Server::startNextJob() {
  if (job_running_ || jobs_.empty() || loop_closed_) {
    return;
  }
  job_running_ = true;
  FileJob& job = *jobs_.front();
  if (job.tls_watch) {
    // Taken now, not when queued: a reload that ran in between is what this check must follow.
    job.watch_state = state_;
    job.watch_previous = tls_digest_;
    if (queued_tls_check_ == &job) {
      queued_tls_check_ = nullptr;
    }
  }
  const int rc = uv_queue_work(
      &loop_, &job.req,
      [](uv_work_t* req) {
        // Worker thread: only the job's own fields; nothing shared with the loop.
        auto* j = static_cast<FileJob*>(req->data);
        if (j->tls_watch) {
          checkTlsFiles(*j);
        } else if (j->is_reload) {
          j->built = buildRuntimeState(j->config_path, /*create_keyrings=*/true);
        } else {
          j->write_error = writeKeyringFile(j->keyring_path, *j->keys);
        }
      },
      [](uv_work_t* req, int status) {
        auto* j = static_cast<FileJob*>(req->data);
        if (status != 0) {  // cancelled: the loop is stopping
          j->built = std::vector<std::string>{"reload cancelled: sidecrypt is stopping"};
          j->write_error = "sidecrypt is stopping";
        }
        j->server->finishJob(*j);
      });
  if (rc != 0) {
    job.built =
        std::vector<std::string>{std::string("cannot queue the reload: ") + uv_strerror(rc)};
    job.write_error = std::string("cannot queue the keyring write: ") + uv_strerror(rc);
    finishJob(job);
  }
}

void Server::finishJob(FileJob& job) {
  // Take the job off the queue first: its callbacks may queue more work.
  std::unique_ptr<FileJob> own = std::move(jobs_.front());
  jobs_.pop_front();
  job_running_ = false;
  if (job.tls_watch) {
    installTlsCheck(job);
  } else if (job.is_reload) {
    installReload(job);
  } else {
    installKeyring(job);
  }
  startNextJob();
}

void Server::installReload(FileJob& job) {
  auto finish = [this, &job](bool ok, const std::vector<std::string>& errs) {
    last_reload_ok_ = ok;
    if (ok) {
      ++reloads_;
      last_reload_error_.clear();
      spdlog::info("reload complete");
    } else {
      ++reload_failures_;
      spdlog::error("reload failed, keeping the running configuration ({} error(s)):", errs.size());
      last_reload_error_.clear();
      for (const auto& e : errs) {
        spdlog::error("  {}", e);
        last_reload_error_ += (last_reload_error_.empty() ? "" : "\n") + e;
      }
    }
    if (notifier_) {
      notifier_->reloaded(ok, ok || errs.empty() ? "" : errs.front());
    }
    for (auto& waiter : job.reload_waiters) {
      waiter(ok, last_reload_error_);
    }
  };
  if (auto* errs = std::get_if<std::vector<std::string>>(&job.built)) {
    finish(false, *errs);
    return;
  }
  auto next = std::get<RuntimeStatePtr>(std::move(job.built));
  if (stopping_) {
    finish(false, {"sidecrypt is stopping"});
    return;
  }
  // A change only a restart can apply (a socket bound at start, the rules) fails the reload,
  // naming each key, before anything changes (proxy/config/reload_reach.h).
  if (auto refused = reloadRefusals(state_->config, next->config); !refused.empty()) {
    finish(false, refused);
    return;
  }
  // Explicit listeners first: the one part of a reload that can still fail (a socket).
  std::string listener_error;
  if (datapath_ && !datapath_->applyListeners(next->config.listeners, listener_error)) {
    finish(false, {listener_error});
    return;
  }
  for (const auto& n : next->notices) {
    spdlog::warn("{}", n);
  }
  logStateChanges(*state_, *next);
  const bool log_changed = state_->config.log.level != next->config.log.level ||
                           state_->config.log.format != next->config.log.format;
  state_ = std::move(next);
  if (log_changed) {
    applyLogConfig(state_->config.log);
  }
  if (datapath_) {
    datapath_->apply(*state_);
  }
  armTlsWatch();  // the files (or tls.watch) may have changed; learn them again
  finish(true, {});
  checkCertificates();
}

// The inventory was parsed off the loop with the rest of the state: this only compares times.
void Server::checkCertificates() {
  if (stopping_) {
    return;
  }
  const filters::rpc_tls::CertInventory none;
  const auto& inventory =
      state_->rpc && state_->rpc->certificates ? *state_->rpc->certificates : none;
  const int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(WallClock::now().time_since_epoch()).count();
  for (const auto& line : cert_watch_.check(inventory, now)) {
    spdlog::warn("{}", line);
  }
  // A little past the threshold second, so the next check lands on the far side of it.
  const auto in_ms =
      static_cast<uint64_t>(CertExpiryWatch::nextCheckIn(inventory, now)) * 1000 + 100;
  uv_timer_start(
      &cert_timer_, [](uv_timer_t* t) { static_cast<Server*>(t->data)->checkCertificates(); },
      in_ms, 0);
}

void Server::armTlsWatch() {
  const Config& c = state_->config;
  std::vector<std::filesystem::path> files;
  std::vector<std::filesystem::path> trees;
  tlswatch::tlsWatchTargets(c.tls, files, trees);
  const bool want = c.tls.watch && usesRpc(c) && (!files.empty() || !trees.empty());
  tls_watch_.enabled = want;
  if (!want || stopping_) {
    tls_watcher_.reset();
    tls_digest_.reset();
    tls_watch_.directories = 0;
    return;
  }
  if (tls_watcher_) {
    tls_watcher_->setDebounce(c.tls.watch_debounce_ms);
  } else {
    tls_watcher_ = std::make_unique<tlswatch::TlsWatcher>(
        &loop_, c.tls.watch_debounce_ms, [this] { queueTlsCheck(TlsCheck::Event); });
  }
  queueTlsCheck(TlsCheck::Baseline);
}

void Server::queueTlsCheck(TlsCheck mode) {
  if (!tls_watcher_ || stopping_) {
    return;
  }
  if (queued_tls_check_ != nullptr) {  // one waiting to start covers this one too
    queued_tls_check_->watch_mode = std::max(queued_tls_check_->watch_mode, mode);
    return;
  }
  auto job = std::make_unique<FileJob>();
  job->is_reload = false;
  job->tls_watch = true;
  job->watch_mode = mode;
  queued_tls_check_ = job.get();
  enqueue(std::move(job));
}

void Server::checkTlsFiles(FileJob& job) {
  // Worker thread: reads the files and builds; the loop installs (installTlsCheck).
  std::vector<std::filesystem::path> files;
  std::vector<std::filesystem::path> trees;
  const Config& c = job.watch_state->config;
  tlswatch::tlsWatchTargets(c.tls, files, trees);
  job.watch_plan = tlswatch::planWatch(files, trees);
  job.watch_digest = tlswatch::digestFiles(files, trees);
  job.watch_changed = !job.watch_previous || *job.watch_previous != job.watch_digest;
  if (job.watch_changed && job.watch_mode != TlsCheck::Baseline) {
    job.watch_built = buildRpcTlsSetup(c);  // the running config; only the files are new
    const auto* built = std::get_if<RpcTlsSetupConstPtr>(&job.watch_built);
    const auto& running = job.watch_state->rpc;
    if (built != nullptr && *built && (*built)->certificates && running && running->certificates) {
      auto regressions =
          tlswatch::chainRegressions(*running->certificates, *(*built)->certificates);
      if (!regressions.empty()) {
        job.watch_built = std::move(regressions);
      }
    }
  }
}

void Server::installTlsCheck(FileJob& job) {
  if (stopping_ || !tls_watcher_ || !job.watch_state) {
    return;
  }
  const size_t started = tls_watcher_->apply(job.watch_plan);
  tls_watch_.directories = tls_watcher_->directories();
  tls_digest_ = job.watch_digest;
  if (job.watch_mode != TlsCheck::Baseline) {
    const auto now_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(WallClock::now().time_since_epoch())
            .count();
    if (!job.watch_changed) {
      if (job.watch_mode == TlsCheck::Event) {
        ++tls_watch_.counters.unchanged;
        spdlog::debug("tls watch: certificate files touched, contents unchanged: nothing to do");
      }
    } else if (auto* errs = std::get_if<std::vector<std::string>>(&job.watch_built)) {
      ++tls_watch_.counters.failed;
      tls_watch_.last_unix_ms = now_ms;
      tls_watch_.last_ok = false;
      tls_watch_.last_text.clear();
      spdlog::error(
          "tls watch: the changed certificate files are not usable; new handshakes keep the "
          "running set until a good one is written ({} error(s)):",
          errs->size());
      for (const auto& e : *errs) {
        spdlog::error("  {}", e);
        tls_watch_.last_text += (tls_watch_.last_text.empty() ? "" : "\n") + e;
      }
    } else {
      auto next = std::make_shared<RuntimeState>(*state_);
      next->rpc = std::get<RpcTlsSetupConstPtr>(std::move(job.watch_built));
      state_ = std::move(next);
      if (datapath_) {
        datapath_->apply(*state_);
      }
      ++tls_watch_.counters.applied;
      tls_watch_.last_unix_ms = now_ms;
      tls_watch_.last_ok = true;
      tls_watch_.last_text = "applied";
      spdlog::info(
          "tls watch: certificate files changed; new handshakes use the new set, established "
          "connections keep theirs");
      checkCertificates();  // the new certificates' expiry warnings
    }
  }
  if (started > 0) {
    // New watches (a swapped link's new directory): a change made before they were in place
    // would otherwise wait for the next event.
    queueTlsCheck(TlsCheck::Recheck);
  }
}

void Server::sweepKeyUse() {
  if (!datapath_) {
    return;
  }
  std::vector<std::string> ring;
  for (const auto& keys : {state_->lan_keys, state_->wan_keys}) {
    for (size_t i = 0; keys && i < keys->size(); ++i) {
      ring.push_back(keys->fingerprint(i));
    }
  }
  const auto now = WallClock::now();
  for (const auto& [fp, last] :
       datapath_->census().keysFallenOutOfUse(ring, now, std::chrono::seconds(kKeyUseWindowS))) {
    spdlog::info(
        "key {} no longer in use: no peer has sent with it for {} s (last use {} s ago); "
        "`sidecrypt check remove-key {}` says when removing it is safe",
        fp, kKeyUseWindowS, std::chrono::duration_cast<std::chrono::seconds>(now - last).count(),
        fp);
  }
}

void Server::commitKeyring(GossipPool pool, filters::keyring::KeySetConstSharedPtr next,
                           CommitDone done) {
  // A server's WAN pool has its own ring (remote.keyring); everything else uses the LAN ring.
  const bool wan = pool == GossipPool::Wan && state_->wan_keys != nullptr;
  auto job = std::make_unique<FileJob>();
  job->is_reload = false;
  job->pool = wan ? GossipPool::Wan : GossipPool::Lan;
  job->keyring_path =
      wan ? state_->config.gossip.wan_keyring_file : state_->config.gossip.keyring_file;
  job->keys = std::move(next);
  job->commit_done = std::move(done);
  enqueue(std::move(job));
}

void Server::installKeyring(FileJob& job) {
  if (!job.write_error && stopping_) {
    job.write_error = "sidecrypt is stopping";  // written, but no longer applied here
  }
  if (!job.write_error) {
    auto st = std::make_shared<RuntimeState>(*state_);
    (job.pool == GossipPool::Wan ? st->wan_keys : st->lan_keys) = job.keys;
    logStateChanges(*state_, *st);
    state_ = std::move(st);
    if (datapath_) {
      datapath_->apply(*state_);
    }
  }
  if (job.commit_done) {
    job.commit_done(job.write_error);
  }
}

void Server::onSignal(uv_signal_t* handle, int signum) {
  auto* self = static_cast<Server*>(handle->data);
  switch (signum) {
    case SIGHUP:
      spdlog::info("SIGHUP: reloading {}", self->config_path_.string());
      self->reload();  // asynchronous; the outcome is logged
      break;
    case SIGUSR1:
      self->logState("state");
      break;
    default:
      if (self->stopping_) {
        spdlog::info("signal {} again: stopping now", signum);
        self->stop();
      } else {
        self->beginShutdown();
      }
      break;
  }
}

void Server::beginShutdown() {
  stopping_ = true;
  const uint32_t drain = state_->config.intercept.drain_ms;
  if (notifier_) {
    notifier_->stopping(drain == 0 || !datapath_ ? "stopping"
                                                 : "draining for " + std::to_string(drain) + " ms");
  }
  if (drain == 0 || !datapath_) {
    stop();
    return;
  }
  // Keep forwarding a little longer so the agent's own leave (sent when its service manager
  // stops it after us, or concurrently) still leaves encrypted.
  spdlog::info(
      "shutting down: forwarding for {} ms more (intercept.drain_time); signal again to "
      "stop now",
      drain);
  uv_timer_start(
      &drain_timer_, [](uv_timer_t* t) { static_cast<Server*>(t->data)->stop(); }, drain, 0);
}

bool Server::installRules() {
  const auto params = ruleParams(state_->config);
  std::string why;
  const auto backend = chooseBackend(state_->config.intercept.backend, why);
  if (auto err = runPlan(installPlan(params, backend))) {
    spdlog::critical("installing netfilter rules failed ({}): {}", toString(backend), *err);
    return false;
  }
  spdlog::info("netfilter rules installed ({}: {})", toString(backend), why);
  return true;
}

void Server::removeRulesIfConfigured() {
  const auto& ic = state_->config.intercept;
  if (!ic.install_rules) {
    return;
  }
  if (!ic.unsafe_remove_rules_on_exit) {
    spdlog::info(
        "netfilter rules stay installed (fail closed): the agent's intercepted traffic is "
        "dropped until sidecrypt runs again; `sidecrypt rules remove` lifts them");
    return;
  }
  std::string why;
  const auto backend = chooseBackend(ic.backend, why);
  if (auto err = runPlan(removePlan(ruleParams(state_->config), backend))) {
    spdlog::error("removing netfilter rules failed: {}", *err);
  } else {
    spdlog::warn(
        "netfilter rules removed (intercept.unsafe_remove_rules_on_exit): the agent's "
        "traffic now flows unencrypted");
  }
}

StatusInput Server::statusInput() {
  StatusInput in(*state_);
  in.datapath = datapath_.get();
  in.census = datapath_ ? &datapath_->census() : nullptr;
  in.config_path = config_path_.string();
  in.reloads = reloads_;
  in.reload_failures = reload_failures_;
  in.last_reload_error = last_reload_error_;
  in.last_reload_ok = last_reload_ok_;
  in.ready = readyNow(in.ready_detail);
  in.started = started_;
  in.tls_watch = tls_watch_;
  for (const auto* http : {admin_.get(), metrics_.get()}) {
    if (http != nullptr) {
      in.http.emplace_back(http->name(), http->stats());
    }
  }
  return in;
}

bool Server::readyNow(std::string& detail) {
  if (!datapath_ || !datapath_->listening() || stopping_) {
    detail = stopping_ ? "stopping" : "listeners are not bound";
    return false;
  }
  if (state_->config.intercept.ports.empty()) {
    detail = "listeners bound (explicit listeners only, no interception)";
    return true;
  }
  // Checking the rules (netlink dumps; nft/iptables with CAP_NET_ADMIN): at most every 5 s.
  const auto now = std::chrono::steady_clock::now();
  if (now - rules_checked_ > std::chrono::seconds(5)) {
    rules_checked_ = now;
    std::string why;
    // Without CAP_NET_ADMIN only the policy routes are read (in-process): choosing a backend
    // would run nft and iptables-legacy-save from the sandbox for nothing.
    const auto backend = haveCapability(kCapNetAdmin)
                             ? chooseBackend(state_->config.intercept.backend, why)
                             : state_->config.intercept.backend;
    rules_ok_ = rulesInstalled(ruleParams(state_->config), backend, rules_detail_);
  }
  detail = !rules_ok_ ? "netfilter rules: " + rules_detail_
           : rules_detail_ == "installed"
               ? "rules installed, listeners bound"
               : "rules installed, listeners bound (" + rules_detail_ + ")";
  return rules_ok_;
}

namespace {

HttpResponse badQuery(const std::string& why) {
  return {400, "application/json", jsonText(nlohmann::json{{"error", why}}, -1) + "\n"};
}

// `within` as whole seconds ("600", or a duration such as "10m"); nullopt when absent.
std::optional<uint32_t> withinParam(const std::string& query, std::string& error) {
  auto v = queryParam(query, "within");
  if (!v) {
    return std::nullopt;
  }
  if (!v->empty() &&
      std::all_of(v->begin(), v->end(), [](char c) { return c >= '0' && c <= '9'; }) &&
      v->size() <= 9) {
    return static_cast<uint32_t>(std::stoul(*v));
  }
  if (auto ms = parseDurationMs(*v)) {
    return *ms / 1000;
  }
  error = "within: expected seconds or a duration such as 10m";
  return std::nullopt;
}

}  // namespace

HttpResponse Server::handleCheck(const HttpRequest& r) {
  std::string error;
  const auto within = withinParam(r.query, error);
  if (!error.empty()) {
    return badQuery(error);
  }
  const StatusInput in = statusInput();
  if (in.census == nullptr) {
    return {503, "text/plain", "the data path is not running\n"};
  }
  const CheckContext ctx = checkContext(in, within);
  if (r.path == "/check/enforce-incoming") {
    return {200, "application/json",
            jsonText(checkJson(checkEnforceIncoming(*in.census, ctx))) + "\n"};
  }
  if (r.path == "/check/remove-ca") {
    auto ca = queryParam(r.query, "ca");
    std::string given;
    for (const char c : ca.value_or("")) {
      if (c != ':') {
        given += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      }
    }
    if (given.empty()) {
      return badQuery("ca: the SHA-256 fingerprint (hex) of the CA to remove");
    }
    const auto cas = configuredCas(*state_);
    return {200, "application/json",
            jsonText(checkJson(checkRemoveCa(*in.census, ctx, caCheckSubject(cas, given)))) + "\n"};
  }
  auto key = queryParam(r.query, "key");
  if (!key || key->empty()) {
    return badQuery("key: the fingerprint of the key to remove");
  }
  // A fingerprint prefix the rings know is expanded; anything else is checked as given.
  std::string fp = *key;
  for (const auto& keys : {state_->lan_keys, state_->wan_keys}) {
    if (keys) {
      if (auto i = keys->findByFingerprint(fp)) {
        fp = keys->fingerprint(*i);
        break;
      }
    }
  }
  return {
      200, "application/json",
      jsonText(checkJson(checkRemoveKey(*in.census, ctx, fp, primaryPools(*state_, fp)))) + "\n"};
}

HttpResponse Server::handleAdmin(const HttpRequest& r) {
  const std::string& method = r.method;
  const std::string& path = r.path;
  if (path == "/live") {
    return {200, "text/plain", "ok\n"};
  }
  if (path == "/ready") {
    std::string detail;
    const bool ok = readyNow(detail);
    return {ok ? 200 : 503, "text/plain", detail + "\n"};
  }
  if (path == "/reload") {
    if (method != "POST") {
      return {405, "text/plain", "use POST\n"};
    }
    spdlog::info("admin: reloading {}", config_path_.string());
    HttpResponse deferred;
    deferred.later = [this](const HttpResponse::Respond& respond) {
      reload([respond](bool ok, const std::string& error) {
        nlohmann::json j = {{"ok", ok}, {"error", error}};
        respond({ok ? 200 : 500, "application/json", jsonText(j, -1) + "\n"});
      });
    };
    return deferred;
  }
  if (method != "GET") {
    return {405, "text/plain", "use GET\n"};
  }
  if (path == "/status") {
    return {200, "application/json", jsonText(statusJson(statusInput())) + "\n"};
  }
  if (path == "/check/enforce-incoming" || path == "/check/remove-key" ||
      path == "/check/remove-ca") {
    return handleCheck(r);
  }
  if (path == "/peers") {
    if (!datapath_) {
      return {200, "application/json", r.query.empty() ? "[]\n" : "{\"total\":0,\"peers\":[]}\n"};
    }
    if (r.query.empty()) {
      return {200, "application/json", peersText(datapath_->census())};
    }
    PeersQuery q;
    q.plaintext = queryParam(r.query, "plaintext").value_or("0") != "0";
    q.silent = queryParam(r.query, "silent").value_or("0") != "0";
    q.key = queryParam(r.query, "key").value_or("");
    q.ca = queryParam(r.query, "ca").value_or("");
    q.after = queryParam(r.query, "after").value_or("");
    q.by_plaintext = queryParam(r.query, "sort").value_or("") == "plaintext";
    std::string error;
    q.within_s = withinParam(r.query, error).value_or(state_->config.census.window_s);
    if (auto limit = queryParam(r.query, "limit")) {
      char* end = nullptr;
      const unsigned long n = std::strtoul(limit->c_str(), &end, 10);
      if (limit->empty() || *end != '\0' || n == 0 || n > 100000) {
        error = "limit: expected 1..100000";
      }
      q.limit = n;
    }
    if (!error.empty()) {
      return badQuery(error);
    }
    return {200, "application/json", jsonText(peersPageJson(datapath_->census(), q)) + "\n"};
  }
  if (path == "/members") {
    if (!datapath_) {
      return {200, "application/json", "{\"self\":{},\"members\":[]}\n"};
    }
    return {200, "application/json", jsonText(membersJson(datapath_->census())) + "\n"};
  }
  if (path == "/metrics") {
    return {200, "text/plain; version=0.0.4", metricsText(statusInput())};
  }
  return {404, "text/plain",
          "not found: try /status /peers /members /metrics /ready /live /reload "
          "/check/enforce-incoming /check/remove-key?key=FP /check/remove-ca?ca=SHA256\n"};
}

// The read-only listener for a cluster Prometheus: nothing here changes state or names members.
HttpResponse Server::handleMetrics(const HttpRequest& r) {
  if (r.method != "GET" && r.method != "HEAD") {
    return {405, "text/plain", "use GET\n"};
  }
  if (r.path == "/metrics") {
    return {200, "text/plain; version=0.0.4", metricsText(statusInput())};
  }
  if (r.path == "/ready") {
    std::string detail;
    const bool ok = readyNow(detail);
    return {ok ? 200 : 503, "text/plain", detail + "\n"};
  }
  return {404, "text/plain", "not found: this listener serves only /metrics and /ready\n"};
}

bool Server::startHttp(std::string& err) {
  admin_ = std::make_unique<AdminServer>(&loop_,
                                         [this](const HttpRequest& r) { return handleAdmin(r); });
  if (!admin_->listen(SocketAddress::parse(state_->config.admin.listen), err)) {
    return false;
  }
  if (!state_->config.metrics.listen.empty()) {
    metrics_ = std::make_unique<AdminServer>(
        &loop_, [this](const HttpRequest& r) { return handleMetrics(r); },
        HttpLimits{.browser_guard = false}, "metrics");
    if (!metrics_->listen(SocketAddress::parse(state_->config.metrics.listen), err)) {
      return false;
    }
  }
  return true;
}

void Server::stop() {
  stopping_ = true;
  // File jobs that have not started are dropped; the running one cannot be interrupted, so the
  // loop waits for it, and its result is discarded (stopping_).
  while (jobs_.size() > (job_running_ ? 1U : 0U)) {
    jobs_.pop_back();
  }
  queued_tls_check_ = nullptr;  // dropped above if it was waiting
  uv_timer_stop(&drain_timer_);
  tls_watcher_.reset();  // closes its handles; the loop finishes the closing
  if (notifier_) {
    notifier_->close();
  }
  if (admin_) {
    admin_->close();
  }
  if (metrics_) {
    metrics_->close();
  }
  if (lock_ != nullptr) {
    lock_->close();  // stops answering; the lock itself is held until the process exits
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&drain_timer_), nullptr);
  uv_timer_stop(&key_use_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&key_use_timer_), nullptr);
  uv_timer_stop(&cert_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&cert_timer_), nullptr);
  if (datapath_) {
    datapath_->stop();
  }
  for (uv_signal_t* s : {&sig_hup_, &sig_term_, &sig_int_, &sig_usr1_}) {
    if (uv_is_closing(reinterpret_cast<uv_handle_t*>(s)) == 0) {
      uv_close(reinterpret_cast<uv_handle_t*>(s), nullptr);
    }
  }
}

int Server::run() {
  checkUv(uv_signal_start(&sig_hup_, &Server::onSignal, SIGHUP), "uv_signal_start(SIGHUP)");
  checkUv(uv_signal_start(&sig_term_, &Server::onSignal, SIGTERM), "uv_signal_start(SIGTERM)");
  checkUv(uv_signal_start(&sig_int_, &Server::onSignal, SIGINT), "uv_signal_start(SIGINT)");
  checkUv(uv_signal_start(&sig_usr1_, &Server::onSignal, SIGUSR1), "uv_signal_start(SIGUSR1)");
  for (const auto& n : state_->notices) {
    spdlog::warn("{}", n);
  }
  notifier_ = std::make_unique<ServiceNotifier>(&loop_, SdNotify::fromEnvironment());
  notifier_->status("starting");
  if (std::string lock_err; lock_ != nullptr && !lock_->serve(&loop_, lock_err)) {
    spdlog::warn("{}", lock_err);  // the lock holds anyway; only naming it to others fails
  }
  if (state_->config.intercept.install_rules && !state_->config.intercept.ports.empty() &&
      !installRules()) {
    stop();
    uv_run(&loop_, UV_RUN_DEFAULT);
    loop_closed_ = uv_loop_close(&loop_) == 0;
    return 1;
  }
  datapath_ = std::make_unique<Datapath>(&loop_, *state_);
  datapath_->setKeyringCommit(
      [this](GossipPool pool, filters::keyring::KeySetConstSharedPtr next, CommitDone done) {
        commitKeyring(pool, std::move(next), std::move(done));
      });
  std::string err;
  if (!datapath_->start(err)) {
    spdlog::critical("cannot start the data path: {}", err);
    stop();
    uv_run(&loop_, UV_RUN_DEFAULT);
    datapath_.reset();
    loop_closed_ = uv_loop_close(&loop_) == 0;
    return 1;
  }
  if (!startHttp(err)) {
    spdlog::critical("{}", err);
    stop();
    uv_run(&loop_, UV_RUN_DEFAULT);
    datapath_.reset();
    admin_.reset();
    metrics_.reset();
    loop_closed_ = uv_loop_close(&loop_) == 0;
    return 1;
  }
  uv_timer_start(
      &key_use_timer_, [](uv_timer_t* t) { static_cast<Server*>(t->data)->sweepKeyUse(); },
      kKeyUseSweepMs, kKeyUseSweepMs);
  datapath_->census().setFirstPlaintextHook([](const PeerRecord& p) {
    spdlog::info("peer {} seen sending plaintext for the first time", p.address);
  });
  armTlsWatch();
  started_ = WallClock::now();
  logState("started");
  checkCertificates();
  // READY=1 only once the rules are installed and the listeners bound (the same test as /ready).
  notifier_->start([this](std::string& detail) { return readyNow(detail); });
  uv_run(&loop_, UV_RUN_DEFAULT);
  datapath_.reset();
  admin_.reset();
  metrics_.reset();
  notifier_.reset();
  removeRulesIfConfigured();
  const int rc = uv_loop_close(&loop_);
  loop_closed_ = rc == 0;
  if (rc != 0) {
    spdlog::error("event loop closed with live handles: {}", uv_strerror(rc));
    return 1;
  }
  spdlog::info("stopped");
  return 0;
}

}  // namespace sidecrypt::proxy
