#include "proxy/config/config_loader.h"

#include <toml++/toml.h>
#include <algorithm>
#include <cctype>
#include <tuple>

#include "filters/common/regular_file.h"
#include "filters/common/secret_bytes.h"
#include "proxy/config/loader.h"

namespace sidecrypt::proxy {

const char* toString(TlsVersion v) {
  switch (v) {
    case TlsVersion::Tls10:
      return "TLSv1_0";
    case TlsVersion::Tls11:
      return "TLSv1_1";
    case TlsVersion::Tls12:
      return "TLSv1_2";
    case TlsVersion::Tls13:
      return "TLSv1_3";
  }
  return "?";
}

const char* toString(Transport t) {
  switch (t) {
    case Transport::Udp:
      return "udp";
    case Transport::Tcp:
      return "tcp";
    case Transport::Both:
      return "udp+tcp";
  }
  return "?";
}

const char* toString(PortProtocol p) {
  return p == PortProtocol::Gossip ? "gossip" : p == PortProtocol::Dskit ? "dskit" : "rpc";
}

const char* toString(RulesBackend b) {
  switch (b) {
    case RulesBackend::Auto:
      return "auto";
    case RulesBackend::Nft:
      return "nft";
    case RulesBackend::IptablesNft:
      return "iptables-nft";
    case RulesBackend::IptablesLegacy:
      return "iptables-legacy";
  }
  return "?";
}

namespace config_detail {

bool validDatacenter(const std::string& dc) {
  return !dc.empty() && std::all_of(dc.begin(), dc.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_';
  });
}

std::string lowered(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](char c) {
    return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  });
  return s;
}

void Loader::loadAgent(const toml::table& t) {
  const std::string s = "agent";
  getEnum<Profile>(t, s, "profile",
                   {{"consul", Profile::Consul},
                    {"serf", Profile::Serf},
                    {"custom", Profile::Custom},
                    {"alertmanager", Profile::Alertmanager},
                    {"grafana-alerting", Profile::GrafanaAlerting},
                    {"nomad", Profile::Nomad}},
                   cfg.agent.profile);
  getBool(t, s, "server", cfg.agent.server);
  getString(t, s, "node_name", cfg.agent.node_name);
  if (getString(t, s, "datacenter", cfg.agent.datacenter)) {
    if (!validDatacenter(cfg.agent.datacenter)) {
      error(*find(t, "datacenter"), "agent.datacenter",
            "datacenter must be letters, digits, '-' or '_' (as in Consul)");
    }
    cfg.agent.datacenter = lowered(std::move(cfg.agent.datacenter));
  }
  if (getString(t, s, "domain", cfg.agent.domain)) {
    while (!cfg.agent.domain.empty() && cfg.agent.domain.back() == '.') {
      cfg.agent.domain.pop_back();  // Consul strips the trailing dot
    }
    if (cfg.agent.domain.empty()) {
      error(*find(t, "domain"), "agent.domain", "domain must not be empty");
    }
  }
  getPath(t, s, "data_dir", cfg.agent.data_dir);
}

void Loader::applyDefaults(bool ports_given, const toml::table* intercept) {
  auto& a = cfg.agent;
  auto& g = cfg.gossip;
  if (g.keyring_file.empty()) {
    g.keyring_file = a.data_dir / "serf" / "local.keyring";
  }
  if (g.wan_keyring_file.empty()) {
    g.wan_keyring_file = a.data_dir / "serf" / "remote.keyring";
  }
  if (!ports_given) {
    switch (a.profile) {
      case Profile::Consul:
        cfg.intercept.ports.push_back(
            {8301, PortProtocol::Gossip, Transport::Both, GossipPool::Lan, "serf_lan"});
        if (a.server) {
          cfg.intercept.ports.push_back(
              {8302, PortProtocol::Gossip, Transport::Both, GossipPool::Wan, "serf_wan"});
        }
        cfg.intercept.ports.push_back(
            {8300, PortProtocol::Rpc, Transport::Tcp, GossipPool::Lan, "rpc"});
        break;
      case Profile::Serf:
        cfg.intercept.ports.push_back(
            {7946, PortProtocol::Gossip, Transport::Both, GossipPool::Lan, "serf"});
        break;
      case Profile::Alertmanager:
      case Profile::GrafanaAlerting:
        // Prometheus Alertmanager's and Grafana unified alerting's cluster (memberlist, no
        // Serf, no RPC): --cluster.listen-address / [unified_alerting] ha_listen_address.
        cfg.intercept.ports.push_back(
            {9094, PortProtocol::Gossip, Transport::Both, GossipPool::Lan,
             a.profile == Profile::Alertmanager ? "alertmanager" : "grafana_alerting"});
        break;
      case Profile::Nomad:
        // Nomad servers' Serf gossip (ports.serf). Nomad's RPC (4647) is not intercepted: its
        // first bytes and server.<region>.nomad names are not proven here (docs/products/nomad.md).
        cfg.intercept.ports.push_back(
            {4648, PortProtocol::Gossip, Transport::Both, GossipPool::Lan, "nomad_serf"});
        break;
      case Profile::Custom:
        (void)intercept;
        if (cfg.listeners.empty()) {
          crossError({"agent.profile"},
                     "profile \"custom\" needs at least one [[intercept.port]] or [[listener]]");
        }
        break;
    }
  }
  memberPortDefaults();
  auto& t = cfg.tls;
  if (t.verify_server_hostname) {
    t.verify_outgoing = true;  // Consul: verify_server_hostname implies verify_outgoing
  }
  const bool has_ca = !t.ca_file.empty() || !t.ca_path.empty();
  const bool uses_rpc =
      std::any_of(cfg.intercept.ports.begin(), cfg.intercept.ports.end(),
                  [](const PortSpec& p) { return p.protocol == PortProtocol::Rpc; });
  if (t.cert_file.empty() != t.key_file.empty()) {
    crossError({"tls.cert_file", "tls.key_file"}, "cert_file and key_file must be set together");
  }
  if (t.verify_outgoing && !has_ca) {
    crossError({"tls.verify_outgoing", "tls.verify_server_hostname"},
               "verify_outgoing set but no CA certificates were provided (set tls.ca_file or "
               "tls.ca_path)");
  }
  if (t.verify_incoming && !has_ca) {
    crossError({"tls.verify_incoming"},
               "verify_incoming set but no CA certificates were provided (set tls.ca_file or "
               "tls.ca_path)");
  }
  for (const auto& l : cfg.listeners) {
    if (l.direction == ListenerDirection::Inbound && t.cert_file.empty()) {
      crossError({"listener", "tls.cert_file"}, "an inbound listener (" + l.name +
                                                    ") answers TLS: set tls.cert_file and "
                                                    "tls.key_file");
    }
  }
  if (t.verify_incoming && a.server && t.cert_file.empty()) {
    crossError({"tls.verify_incoming"}, "verify_incoming requires tls.cert_file and tls.key_file");
  }
  if (t.verify_outgoing && t.cert_file.empty()) {
    cfg.warnings.push_back(
        "tls.verify_outgoing is set without tls.cert_file: servers with verify_incoming will "
        "refuse this agent's RPC");
  }
  if (!t.ca_file.empty() && !t.ca_path.empty()) {
    cfg.warnings.push_back(
        "tls.ca_file and tls.ca_path are both set; ca_path is ignored (as in "
        "Consul)");
  }
  if (t.tls_min_version < TlsVersion::Tls12) {
    cfg.warnings.push_back(std::string("tls.tls_min_version = ") + toString(t.tls_min_version) +
                           " allows obsolete TLS versions; TLSv1_2 is the safe minimum");
  }
  if (uses_rpc) {
    if (!t.verify_outgoing) {
      cfg.warnings.push_back(
          "tls.verify_outgoing is off: this agent's RPC leaves in plaintext (rollout stage "
          "'plaintext' or 'accept both')");
    }
    if (a.server && !t.verify_incoming) {
      cfg.warnings.push_back(
          "tls.verify_incoming is off: plaintext RPC from peers is accepted (rollout stage "
          "'accept both')");
    }
    if (t.verify_outgoing && !t.verify_server_hostname) {
      cfg.warnings.push_back(
          "tls.verify_server_hostname is off: any certificate signed by the CA is accepted as a "
          "server (Consul's default, but weaker)");
    }
  }
  if (cfg.intercept.mode == InterceptMode::Redirect) {
    for (const auto& p : cfg.intercept.ports) {
      if (p.protocol == PortProtocol::Gossip && p.transport != Transport::Tcp) {
        crossError({"intercept.mode"},
                   "mode \"redirect\" cannot intercept UDP gossip (REDIRECT loses the original "
                   "destination, so gossip would leak or break); use \"tproxy\"");
        break;
      }
    }
    cfg.warnings.push_back(
        "intercept.mode = redirect: the agent sees sidecrypt's address instead "
        "of each peer's on inbound connections");
  }
  if (!a.server && t.verify_incoming) {
    cfg.warnings.push_back("tls.verify_incoming has no effect on a client agent (no inbound RPC)");
  }
  if (!g.encrypt_verify_incoming) {
    cfg.warnings.push_back(
        "gossip.encrypt_verify_incoming is off: plaintext gossip from peers is accepted");
  }
  if (!g.encrypt_verify_outgoing) {
    cfg.warnings.push_back(
        "gossip.encrypt_verify_outgoing is off: this agent's gossip leaves in plaintext");
  }
}

}  // namespace config_detail

namespace {

using config_detail::Loader;

struct Section {
  std::string_view name;
  std::vector<std::string_view> keys;
};

const std::vector<Section>& schema() {
  static const std::vector<Section> kSchema = {
      {"agent", {"profile", "server", "node_name", "datacenter", "domain", "data_dir"}},
      {"gossip",
       {"encrypt", "encrypt_verify_incoming", "encrypt_verify_outgoing", "keyring_file",
        "wan_keyring_file", "label", "max_streams_per_source"}},
      {"tls",
       {"ca_file", "ca_path", "cert_file", "key_file", "verify_incoming", "verify_outgoing",
        "verify_server_hostname", "tls_min_version", "tls_cipher_suites", "rpc_handshake_timeout",
        "rpc_max_conns_per_client", "session_resumption", "datacenter", "watch", "watch_debounce"}},
      {"intercept",
       {"mode", "backend", "install_rules", "unsafe_remove_rules_on_exit", "ipv6", "outbound_port",
        "inbound_port", "divert_mark", "proxy_mark", "route_table", "rule_priority", "drain_time",
        "tproxy_source_ports", "port", "member_ports", "wan_member_ports"}},
      {"admin", {"listen", "unsafe_allow_remote"}},
      {"metrics", {"listen", "peer_series"}},
      {"census", {"max_peers", "window"}},
      {"log", {"level", "format"}},
      {"runtime", {"loops"}},
      {"listener", {}},  // [[listener]]: an array of tables, loaded by loadListeners
  };
  return kSchema;
}

ConfigResult runLoader(toml::table& root, Loader& l) {
  std::vector<std::string_view> sections;
  for (const auto& s : schema()) {
    sections.push_back(s.name);
  }
  l.checkKeys(root, "", sections);
  bool ports_given = false;
  const toml::table* intercept = nullptr;
  for (const auto& sec : schema()) {
    auto* node = root.get(sec.name);
    if (node == nullptr) {
      continue;
    }
    if (sec.name == "listener") {
      l.loadListeners(*node);
      continue;
    }
    if (!node->is_table()) {
      l.error(*node, std::string(sec.name), "expected a table [" + std::string(sec.name) + "]");
      continue;
    }
    auto& tbl = *node->as_table();
    l.checkKeys(tbl, std::string(sec.name), sec.keys);
    if (sec.name == "agent") {
      l.loadAgent(tbl);
    } else if (sec.name == "gossip") {
      l.loadGossip(tbl);
    } else if (sec.name == "tls") {
      l.loadTls(tbl);
    } else if (sec.name == "intercept") {
      intercept = &tbl;
      l.loadIntercept(tbl, ports_given);
    } else if (sec.name == "admin") {
      l.loadAdmin(tbl);
    } else if (sec.name == "metrics") {
      l.loadMetrics(tbl);
    } else if (sec.name == "log") {
      l.loadLog(tbl);
    } else if (sec.name == "census") {
      l.loadCensus(tbl);
    } else if (sec.name == "runtime") {
      l.loadRuntime(tbl);
    }
  }
  l.applyDefaults(ports_given, intercept);
  if (!l.errors.empty()) {
    std::stable_sort(
        l.errors.begin(), l.errors.end(), [](const ConfigError& a, const ConfigError& b) {
          return std::tie(a.where.line, a.where.column) < std::tie(b.where.line, b.where.column);
        });
    return std::move(l.errors);
  }
  l.keepPositions();
  return std::move(l.cfg);
}

}  // namespace

std::vector<std::string> configKeys() {
  std::vector<std::string> out;
  for (const auto& sec : schema()) {
    if (sec.keys.empty()) {
      out.emplace_back(sec.name);
    }
    for (auto k : sec.keys) {
      out.push_back(std::string(sec.name) + "." + std::string(k));
    }
  }
  return out;
}

ConfigResult loadConfigText(std::string_view text, const std::string& display_name) {
  filters::ensureSodium();
  Loader l(display_name);
  toml::table root;
  try {
    root = toml::parse(text, display_name);
  } catch (const toml::parse_error& e) {
    // toml++ stops at the first syntax error; there is nothing reliable after it.
    return std::vector<ConfigError>{
        {{display_name, e.source().begin.line, e.source().begin.column, ""},
         "TOML syntax error: " + std::string(e.description())}};
  }
  return runLoader(root, l);
}

ConfigResult loadConfig(const std::filesystem::path& path) {
  const std::string name = path.string();
  // Never blocks on the path (a FIFO or device is refused at once); the file may carry
  // gossip.encrypt, so it is read into locked memory.
  auto opened = filters::openRegularFile(path);
  if (auto* refused = std::get_if<filters::FileRefused>(&opened)) {
    return std::vector<ConfigError>{{{name, 0, 0, ""},
                                     refused->error != 0
                                         ? "cannot open config file: " + refused->text
                                         : "config file " + refused->text}};
  }
  auto read = filters::readAll(std::get<filters::RegularFile>(opened), size_t{4} << 20);
  if (auto* err = std::get_if<std::string>(&read)) {
    return std::vector<ConfigError>{{{name, 0, 0, ""}, "config file " + *err}};
  }
  const auto& body = std::get<filters::SecretBytes>(read);
  auto result = loadConfigText(body.view(), name);
  if (auto* cfg = std::get_if<Config>(&result)) {
    cfg->source = path;
  }
  return result;
}

}  // namespace sidecrypt::proxy
