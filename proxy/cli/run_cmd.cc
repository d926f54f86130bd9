#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <iostream>

#include "proxy/cli/commands.h"
#include "proxy/intercept/capabilities.h"
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
  setupLogging(state->config.log);
  raiseOpenFileLimit();
  Server server(config, std::move(state));
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
  std::cout << config.string() << ": configuration ok\n";
  return 0;
}

}  // namespace sidecrypt::proxy::cli
