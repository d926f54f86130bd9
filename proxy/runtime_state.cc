#include "proxy/runtime_state.h"

#include <algorithm>

#include "proxy/config/config_loader.h"
#include "proxy/keyring/keyring_file.h"

namespace sidecrypt::proxy {

bool usesGossip(const Config& cfg, GossipPool pool) {
  return std::any_of(
      cfg.intercept.ports.begin(), cfg.intercept.ports.end(),
      [pool](const PortSpec& p) { return p.protocol != PortProtocol::Rpc && p.pool == pool; });
}

bool usesRpc(const Config& cfg) {
  return !cfg.listeners.empty() ||
         std::any_of(cfg.intercept.ports.begin(), cfg.intercept.ports.end(),
                     [](const PortSpec& p) { return p.protocol == PortProtocol::Rpc; });
}

std::variant<RpcTlsSetupConstPtr, std::vector<std::string>> buildRpcTlsSetup(const Config& cfg) {
  namespace rt = filters::rpc_tls;
  const TlsConfig& t = cfg.tls;
  rt::TlsSettings s;
  s.ca_file = t.ca_file;
  s.ca_path = t.ca_path;
  s.cert_file = t.cert_file;
  s.key_file = t.key_file;
  s.verify_incoming = t.verify_incoming;
  s.verify_outgoing = t.verify_outgoing;
  s.verify_server_hostname = t.verify_server_hostname;
  s.tls_min_version = t.tls_min_version;
  s.tls_cipher_suites = t.tls_cipher_suites;
  s.session_resumption = t.session_resumption;
  s.datacenter = cfg.agent.datacenter;
  s.domain = cfg.agent.domain;
  auto setup = std::make_shared<RpcTlsSetup>();
  std::vector<std::string> errors;
  auto make = [&](rt::TlsRole role, rt::TlsContextSharedPtr& out, const char* what) {
    auto r = rt::TlsContext::create(s, role);
    if (auto* err = std::get_if<std::string>(&r)) {
      errors.push_back(std::string("tls (") + what + "): " + *err);
    } else {
      out = std::get<rt::TlsContextSharedPtr>(r);
    }
  };
  const bool has_ca = !t.ca_file.empty() || !t.ca_path.empty();
  const bool has_cert = !t.cert_file.empty();
  if (t.verify_outgoing) {
    make(rt::TlsRole::Client, setup->client, "outgoing RPC");
  }
  if (has_cert && cfg.agent.server) {
    make(rt::TlsRole::Server, setup->server, "incoming RPC");
    if (has_ca) {
      make(rt::TlsRole::NativeServer, setup->native_server, "incoming native TLS");
    }
  }
  setup->outbound = {t.verify_outgoing, t.verify_server_hostname};
  setup->inbound.verify_incoming = t.verify_incoming;
  setup->inbound.verify_server_hostname = t.verify_server_hostname;
  setup->inbound.has_certificate = setup->server != nullptr;
  setup->inbound.has_ca = has_ca;
  setup->local_server_name = filters::rpc_tls::serverName(cfg.agent.datacenter, cfg.agent.domain);
  setup->handshake_timeout_ms = t.rpc_handshake_timeout_ms;
  // The contexts read the same files; their lists are merged (identical unless a file changed
  // while they were built, and then both versions are in use).
  auto certificates = std::make_shared<rt::CertInventory>();
  for (const auto* ctx : {setup->client.get(), setup->server.get(), setup->native_server.get()}) {
    if (ctx != nullptr) {
      for (const auto& c : ctx->certificates().certs) {
        certificates->add(c);
      }
    }
  }
  setup->certificates = std::move(certificates);
  if (!errors.empty()) {
    return errors;
  }
  return RpcTlsSetupConstPtr(std::move(setup));
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
  if (usesRpc(cfg)) {
    auto rpc = buildRpcTlsSetup(cfg);
    if (auto* errs = std::get_if<std::vector<std::string>>(&rpc)) {
      errors.insert(errors.end(), errs->begin(), errs->end());
    } else {
      state->rpc = std::get<RpcTlsSetupConstPtr>(rpc);
    }
  }
  if (!errors.empty()) {
    return errors;
  }
  return RuntimeStatePtr(std::move(state));
}

}  // namespace sidecrypt::proxy
