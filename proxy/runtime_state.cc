#include "proxy/runtime_state.h"

#include <algorithm>

#include "proxy/config/config_loader.h"
#include "proxy/keyring/keyring_file.h"

namespace sidecrypt::proxy {

bool usesGossip(const Config& cfg, GossipPool pool) {
  return std::any_of(
      cfg.intercept.ports.begin(), cfg.intercept.ports.end(),
      [pool](const PortSpec& p) { return p.protocol == PortProtocol::Gossip && p.pool == pool; });
}

std::variant<RuntimeStatePtr, std::vector<std::string>> buildRuntimeState(
    const std::filesystem::path& config_path, bool create_keyrings) {
  auto loaded = loadConfig(config_path);
  if (auto* errs = std::get_if<std::vector<ConfigError>>(&loaded)) {
    std::vector<std::string> out;
    for (const auto& e : *errs) {
      out.push_back(e.format());
    }
    return out;
  }
  auto state = std::make_shared<RuntimeState>();
  state->config = std::move(std::get<Config>(loaded));
  const Config& cfg = state->config;
  state->notices = cfg.warnings;
  std::vector<std::string> errors;
  auto resolve = [&](GossipPool pool, const std::filesystem::path& file,
                     filters::keyring::KeySetConstSharedPtr& out) {
    if (!usesGossip(cfg, pool)) {
      return;
    }
    auto r = resolveKeyring(file, cfg.gossip.encrypt.get(), create_keyrings);
    if (auto* err = std::get_if<std::string>(&r)) {
      errors.push_back(*err);
      return;
    }
    auto& resolved = std::get<ResolvedKeyring>(r);
    if (!resolved.keys) {
      errors.push_back(file.string() + ": no gossip key: set gossip.encrypt in " +
                       config_path.string() +
                       " or create the keyring with `sidecrypt keyring install KEY --file " +
                       file.string() + "`");
      return;
    }
    if (resolved.created) {
      state->notices.push_back(file.string() + ": keyring file created from gossip.encrypt");
    }
    for (auto& w : resolved.warnings) {
      state->notices.push_back(std::move(w));
    }
    out = resolved.keys;
  };
  resolve(GossipPool::Lan, cfg.gossip.keyring_file, state->lan_keys);
  resolve(GossipPool::Wan, cfg.gossip.wan_keyring_file, state->wan_keys);
  if (!errors.empty()) {
    return errors;
  }
  return RuntimeStatePtr(std::move(state));
}

}  // namespace sidecrypt::proxy
