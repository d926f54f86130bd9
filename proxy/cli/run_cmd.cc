#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <iostream>
#include <thread>

#include "filters/common/secret_bytes.h"
#include "proxy/cli/commands.h"
#include "proxy/intercept/capabilities.h"
#include "proxy/intercept/instance_lock.h"
#include "proxy/intercept/rules.h"
#include "proxy/observe/log.h"
#include "proxy/runtime_state.h"
#include "proxy/server.h"

namespace sidecrypt::proxy::cli {

namespace {

void printErrors(const std::vector<std::string>& errors) {
  for (const auto& e : errors) {
    std::cerr << e << "\n";
  }
  std::cerr << errors.size() << (errors.size() == 1 ? " error\n" : " errors\n");
}

// Each proxied connection holds two descriptors; the common soft default (1024) is reached by
// 500 connections. Raise the soft limit to the hard one (systemd's LimitNOFILE, the container
// runtime's ulimit) and say what is in force.
void raiseOpenFileLimit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) {
    spdlog::warn("open-file limit: getrlimit: {}", std::strerror(errno));
    return;
  }
  const rlim_t soft = lim.rlim_cur;
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) {
      spdlog::warn("open-file limit: cannot raise {} to {}: {}", soft, lim.rlim_max,
                   std::strerror(errno));
      return;
    }
    spdlog::info("open-file limit raised from {} to {} (the hard limit)", soft, lim.rlim_cur);
    return;
  }
  spdlog::info("open-file limit {} (the hard limit)", soft);
}

}  // namespace

std::variant<std::unique_ptr<InstanceLock>, LockHolder> takeInstanceLock(
    const std::string& role, const std::filesystem::path& config, const std::string& fingerprint) {
  std::error_code ec;
  const auto abs = std::filesystem::absolute(config, ec);
  const std::string path = ec ? config.string() : abs.lexically_normal().string();
  // A `rules install/remove` finishing in this namespace holds it for a moment: wait (bounded).
  for (int i = 0;; ++i) {
    auto got = InstanceLock::acquire(role, path, fingerprint);
    if (auto* why = std::get_if<std::string>(&got)) {
      std::cerr << "sidecrypt: warning: no instance lock (" << *why
                << "): a second sidecrypt in this network namespace would not be stopped\n";
      return std::unique_ptr<InstanceLock>();
    }
    if (auto* lock = std::get_if<std::unique_ptr<InstanceLock>>(&got)) {
      return std::move(*lock);
    }
    const auto& h = std::get<LockHolder>(got);
    // A running instance names itself as "run"; anything else is a short-lived command.
    if (h.role == "run" || i >= 100) {
      return h;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

int runProxy(const std::filesystem::path& config) {
  // File capabilities granted as permitted only (the container image: cap_net_raw+p) become
  // effective here, before any socket is opened.
  std::string cap_err;
  if (!raisePermittedCapabilities(cap_err)) {
    std::cerr << "sidecrypt: cannot raise the permitted capabilities: " << cap_err << "\n";
  }
  auto built = buildRuntimeState(config, /*create_keyrings=*/true);
  if (auto* errs = std::get_if<std::vector<std::string>>(&built)) {
    printErrors(*errs);
    return 2;
  }
  auto state = std::get<RuntimeStatePtr>(std::move(built));
  // One instance per network namespace, taken before any rule is touched: a second `run`
  // (another profile, started by mistake) must not rewrite the first one's rules. An instance
  // with explicit listeners only touches no rules and takes no lock.
  std::unique_ptr<InstanceLock> lock;
  if (!state->config.intercept.ports.empty()) {
    auto got = takeInstanceLock("run", config, rulesFingerprint(ruleParams(state->config)));
    if (auto* h = std::get_if<LockHolder>(&got)) {
      std::cerr << "sidecrypt: another sidecrypt already runs in this network namespace: "
                << h->describe()
                << "; it owns the interception rules, which stay as they are. One sidecrypt per "
                   "network namespace: stop that one first (abstract socket @"
                << InstanceLock::name() << ")\n";
      return 1;
    }
    lock = std::move(std::get<std::unique_ptr<InstanceLock>>(got));
  }
  setupLogging(state->config.log);
  raiseOpenFileLimit();
  if (const std::string err = filters::disableCoreDumps(); err.empty()) {
    spdlog::info("core dumps off: not dumpable, RLIMIT_CORE 0 (keys stay out of core files)");
  } else {
    spdlog::warn("core dumps could not be turned off fully: {}", err);
  }
  Server server(config, std::move(state));
  server.setInstanceLock(lock.get());
  return server.run();
}

int checkConfig(const std::filesystem::path& config) {
  // Validates everything a start would, but creates nothing (a missing keyring file that
  // gossip.encrypt would create is reported as such, not written).
  auto built = buildRuntimeState(config, /*create_keyrings=*/false);
  if (auto* errs = std::get_if<std::vector<std::string>>(&built)) {
    printErrors(*errs);
    return 2;
  }
  const auto& state = *std::get<RuntimeStatePtr>(built);
  for (const auto& w : state.notices) {
    std::cout << "warning: " << w << "\n";
  }
  auto ring = [](const char* name, const filters::keyring::KeySetConstSharedPtr& keys,
                 const std::filesystem::path& file) {
    if (keys) {
      std::cout << name << " keyring " << file.string() << ": " << keys->size()
                << " key(s), primary " << keys->fingerprint(0) << "\n";
    }
  };
  ring("lan", state.lan_keys, state.config.gossip.keyring_file);
  ring("wan", state.wan_keys, state.config.gossip.wan_keyring_file);
  for (const auto& p : state.config.intercept.ports) {
    std::cout << "intercept " << p.name << ": port " << p.port << " " << toString(p.transport)
              << " (" << toString(p.protocol) << ")\n";
  }
  const auto& ic = state.config.intercept;
  auto list = [](const std::vector<uint16_t>& ports) {
    std::string out;
    for (auto p : ports) {
      out += (out.empty() ? "" : ",") + std::to_string(p);
    }
    return out;
  };
  if (!ic.member_ports.empty()) {
    std::cout << "member ports lan: " << list(ic.member_ports) << "\n";
  }
  if (!ic.wan_member_ports.empty()) {
    std::cout << "member ports wan: " << list(ic.wan_member_ports) << "\n";
  }
  const uint32_t loops = state.config.runtime.loops;
  std::cout << "event loops: " << Datapath::resolveLoops(loops)
            << (loops == 0 ? " (runtime.loops \"auto\": the CPUs this process may use)" : "")
            << "; runtime.loops needs a restart to change\n";
  std::cout << config.string() << ": configuration ok\n";
  return 0;
}

}  // namespace sidecrypt::proxy::cli
