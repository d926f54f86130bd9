#include "proxy/config/config_loader.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <toml++/toml.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <tuple>

#include "filters/common/regular_file.h"
#include "filters/keyring/keyring_codec.h"
#include "proxy/config/did_you_mean.h"

namespace sidecrypt::proxy {

std::string ConfigError::format() const {
  std::string out = where.file;
  if (where.line != 0) {
    out += ":" + std::to_string(where.line) + ":" + std::to_string(where.column);
  }
  out += ": ";
  if (!where.key.empty()) {
    out += where.key + ": ";
  }
  return out + message;
}

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
  return p == PortProtocol::Gossip ? "gossip" : "rpc";
}

std::optional<uint32_t> parseDurationMs(std::string_view s) {
  // Go duration subset Consul users write: "5s", "500ms", "1m", "1m30s".
  uint64_t total = 0;
  size_t i = 0;
  if (s.empty()) {
    return std::nullopt;
  }
  while (i < s.size()) {
    uint64_t n = 0;
    size_t digits = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i])) != 0) {
      n = n * 10 + static_cast<uint64_t>(s[i] - '0');
      if (n > 1'000'000'000) {
        return std::nullopt;
      }
      ++i;
      ++digits;
    }
    if (digits == 0) {
      return std::nullopt;
    }
    std::string_view rest = s.substr(i);
    if (rest.starts_with("ms")) {
      total += n;
      i += 2;
    } else if (rest.starts_with("s")) {
      total += n * 1000;
      i += 1;
    } else if (rest.starts_with("m")) {
      total += n * 60'000;
      i += 1;
    } else if (rest.starts_with("h")) {
      total += n * 3'600'000;
      i += 1;
    } else {
      return std::nullopt;
    }
  }
  if (total > UINT32_MAX) {
    return std::nullopt;
  }
  return static_cast<uint32_t>(total);
}

namespace {

// The cipher suites Consul accepts for tls_cipher_suites (docs/spec/consul-rpc-tls.md §2.2).
constexpr std::string_view kCipherSuites[] = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",       "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",       "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",          "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",          "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
};

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
        "rpc_max_conns_per_client", "datacenter"}},
      {"intercept",
       {"mode", "backend", "install_rules", "unsafe_remove_rules_on_exit", "ipv6", "outbound_port",
        "inbound_port", "divert_mark", "proxy_mark", "route_table", "rule_priority", "drain_time",
        "port", "member_ports", "wan_member_ports"}},
      {"admin", {"listen", "unsafe_allow_remote"}},
      {"metrics", {"listen", "peer_series"}},
      {"census", {"max_peers", "window"}},
      {"log", {"level", "format"}},
      {"listener", {}},  // [[listener]]: an array of tables, loaded by loadListeners
  };
  return kSchema;
}

const std::vector<std::string_view> kPortKeys = {"port", "protocol", "transport", "pool", "name"};
const std::vector<std::string_view> kDatacenterKeys = {"name", "addresses"};
const std::vector<std::string_view> kListenerKeys = {"name", "listen", "upstream", "direction",
                                                     "protocol"};

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

class Loader {
 public:
  explicit Loader(std::string file) : file_(std::move(file)) {}

  std::vector<ConfigError> errors;
  Config cfg;

  // An error about a combination of settings, placed at the first of `keys` that the file has
  // (or at the section of the first key when none is set).
  void crossError(std::initializer_list<std::string_view> keys, std::string msg) {
    for (auto k : keys) {
      auto it = positions_.find(std::string(k));
      if (it != positions_.end()) {
        error(it->second, std::string(k), std::move(msg));
        return;
      }
    }
    std::string first(*keys.begin());
    auto sec = positions_.find(first.substr(0, first.find('.')));
    errors.push_back({{file_, sec == positions_.end() ? 0 : sec->second.begin.line,
                       sec == positions_.end() ? 0 : sec->second.begin.column, first},
                      std::move(msg)});
  }

  void error(const toml::source_region& at, const std::string& key, std::string msg) {
    errors.push_back({{file_, at.begin.line, at.begin.column, key}, std::move(msg)});
  }
  void error(const toml::node& at, const std::string& key, std::string msg) {
    error(at.source(), key, std::move(msg));
  }

  // Reports keys not in `known`, with a suggestion where one is close.
  void checkKeys(const toml::table& tbl, const std::string& prefix,
                 const std::vector<std::string_view>& known) {
    for (auto&& [k, v] : tbl) {
      const std::string name(k.str());
      positions_[prefix.empty() ? name : prefix + "." + name] = k.source();
      if (std::find(known.begin(), known.end(), name) != known.end()) {
        continue;
      }
      std::string msg = "unknown key";
      if (auto hint = didYouMean(name, known)) {
        msg += "; did you mean '" + std::string(*hint) + "'?";
      }
      error(k.source(), prefix.empty() ? name : prefix + "." + name, msg);
    }
  }

  const toml::node* find(const toml::table& tbl, std::string_view key) { return tbl.get(key); }

  void getBool(const toml::table& tbl, const std::string& sec, std::string_view key, bool& out) {
    if (const auto* n = find(tbl, key)) {
      if (auto v = n->value<bool>(); v && n->is_boolean()) {
        out = *v;
      } else {
        error(*n, sec + "." + std::string(key), "expected true or false");
      }
    }
  }

  bool getString(const toml::table& tbl, const std::string& sec, std::string_view key,
                 std::string& out) {
    if (const auto* n = find(tbl, key)) {
      if (n->is_string()) {
        out = n->as_string()->get();
        return true;
      }
      error(*n, sec + "." + std::string(key), "expected a string");
    }
    return false;
  }

  void getPath(const toml::table& tbl, const std::string& sec, std::string_view key,
               std::filesystem::path& out) {
    std::string s;
    if (getString(tbl, sec, key, s)) {
      if (s.empty()) {
        error(*find(tbl, key), sec + "." + std::string(key), "path must not be empty");
      } else {
        out = s;
      }
    }
  }

  std::optional<int64_t> getInt(const toml::table& tbl, const std::string& sec,
                                std::string_view key, int64_t lo, int64_t hi) {
    const auto* n = find(tbl, key);
    if (n == nullptr) {
      return std::nullopt;
    }
    if (!n->is_integer()) {
      error(*n, sec + "." + std::string(key), "expected an integer");
      return std::nullopt;
    }
    int64_t v = n->as_integer()->get();
    if (v < lo || v > hi) {
      error(*n, sec + "." + std::string(key),
            "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " +
                std::to_string(v));
      return std::nullopt;
    }
    return v;
  }

  // An array of ports (1-65535); duplicates are dropped.
  void getPortList(const toml::table& tbl, const std::string& sec, std::string_view key,
                   std::vector<uint16_t>& out) {
    const auto* n = find(tbl, key);
    if (n == nullptr) {
      return;
    }
    const std::string name = sec + "." + std::string(key);
    if (!n->is_array()) {
      error(*n, name, "expected an array of ports, e.g. [7946, 7947]");
      return;
    }
    for (const auto& e : *n->as_array()) {
      const auto v = e.value<int64_t>();
      if (!e.is_integer() || !v || *v < 1 || *v > 65535) {
        error(e, name, "expected ports between 1 and 65535");
        continue;
      }
      const auto port = static_cast<uint16_t>(*v);
      if (std::find(out.begin(), out.end(), port) == out.end()) {
        out.push_back(port);
      }
    }
  }

  // Matches a string against allowed spellings; reports the allowed set otherwise.
  template <typename E>
  bool getEnum(const toml::table& tbl, const std::string& sec, std::string_view key,
               const std::vector<std::pair<std::string_view, E>>& allowed, E& out) {
    std::string s;
    if (!getString(tbl, sec, key, s)) {
      return false;
    }
    for (const auto& [name, value] : allowed) {
      if (s == name) {
        out = value;
        return true;
      }
    }
    std::string list;
    for (const auto& [name, value] : allowed) {
      list += (list.empty() ? "" : ", ") + std::string(name);
    }
    error(*find(tbl, key), sec + "." + std::string(key),
          "unknown value '" + s + "'; expected one of: " + list);
    return false;
  }

  void loadAgent(const toml::table& t);
  void loadGossip(toml::table& t);
  void loadTls(const toml::table& t);
  void loadDatacenters(const toml::table& t);
  void loadIntercept(const toml::table& t, bool& ports_given);
  void loadAdmin(const toml::table& t);
  void loadMetrics(const toml::table& t);
  void loadListeners(const toml::node& n);
  void loadLog(const toml::table& t);
  void loadCensus(const toml::table& t);
  void applyDefaults(bool ports_given, const toml::table* intercept);
  void memberPortDefaults();
  void keepPositions() {
    for (const auto& [key, at] : positions_) {
      cfg.positions[key] = {at.begin.line, at.begin.column};
    }
  }

 private:
  std::string file_;
  std::map<std::string, toml::source_region> positions_;
};

void Loader::loadAgent(const toml::table& t) {
  const std::string s = "agent";
  getEnum<Profile>(
      t, s, "profile",
      {{"consul", Profile::Consul}, {"serf", Profile::Serf}, {"custom", Profile::Custom}},
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

void Loader::loadGossip(toml::table& t) {
  const std::string s = "gossip";
  if (auto* n = t.get("encrypt")) {
    if (!n->is_string()) {
      error(*n, "gossip.encrypt", "expected a base64 string (as printed by `sidecrypt keygen`)");
    } else {
      std::string& text = n->as_string()->get();
      auto decoded = filters::keyring::decodeKey(text);
      // The key text must not linger in the parsed document.
      sodium_memzero(text.data(), text.size());
      if (auto* err = std::get_if<std::string>(&decoded)) {
        error(*n, "gossip.encrypt", *err);
      } else {
        cfg.gossip.encrypt = std::make_shared<const filters::SecretBytes>(
            std::move(std::get<filters::SecretBytes>(decoded)));
      }
    }
  }
  getBool(t, s, "encrypt_verify_incoming", cfg.gossip.encrypt_verify_incoming);
  getBool(t, s, "encrypt_verify_outgoing", cfg.gossip.encrypt_verify_outgoing);
  getPath(t, s, "keyring_file", cfg.gossip.keyring_file);
  getPath(t, s, "wan_keyring_file", cfg.gossip.wan_keyring_file);
  if (auto v = getInt(t, s, "max_streams_per_source", 0, 1'000'000)) {
    cfg.gossip.max_streams_per_source = static_cast<uint32_t>(*v);
  }
  if (getString(t, s, "label", cfg.gossip.label) && cfg.gossip.label.size() > 255) {
    error(*find(t, "label"), "gossip.label",
          "label must be at most 255 bytes, got " + std::to_string(cfg.gossip.label.size()));
  }
}

void Loader::loadDatacenters(const toml::table& t) {
  const auto* list = find(t, "datacenter");
  if (list == nullptr) {
    return;
  }
  if (!list->is_array_of_tables()) {
    error(*list, "tls.datacenter", "expected [[tls.datacenter]] tables");
    return;
  }
  size_t i = 0;
  for (const auto& e : *list->as_array()) {
    const std::string sec = "tls.datacenter[" + std::to_string(i++) + "]";
    const auto& dt = *e.as_table();
    checkKeys(dt, sec, kDatacenterKeys);
    DatacenterRoute route;
    if (!getString(dt, sec, "name", route.name)) {
      if (dt.get("name") == nullptr) {
        error(e, sec + ".name", "missing required key 'name' (the datacenter, e.g. \"dc2\")");
      }
    } else if (!validDatacenter(route.name)) {
      error(*dt.get("name"), sec + ".name",
            "datacenter must be letters, digits, '-' or '_' (as in Consul)");
    }
    route.name = lowered(route.name);
    const auto* addrs = dt.get("addresses");
    if (addrs == nullptr || !addrs->is_array() || addrs->as_array()->empty()) {
      error(addrs != nullptr ? *addrs : e, sec + ".addresses",
            "expected a non-empty array of addresses or CIDR blocks, e.g. [\"10.2.0.0/16\"]");
    } else {
      for (const auto& a : *addrs->as_array()) {
        const auto* text = a.as_string();
        Cidr cidr = text != nullptr ? Cidr::parse(text->get()) : Cidr();
        if (!cidr.valid()) {
          error(a, sec + ".addresses",
                "expected an IPv4/IPv6 address or CIDR block such as \"10.2.0.0/16\"");
          continue;
        }
        route.addresses.push_back(cidr);
      }
    }
    cfg.tls.datacenters.push_back(std::move(route));
  }
}

void Loader::loadTls(const toml::table& t) {
  const std::string s = "tls";
  auto& c = cfg.tls;
  getPath(t, s, "ca_file", c.ca_file);
  getPath(t, s, "ca_path", c.ca_path);
  getPath(t, s, "cert_file", c.cert_file);
  getPath(t, s, "key_file", c.key_file);
  getBool(t, s, "verify_incoming", c.verify_incoming);
  getBool(t, s, "verify_outgoing", c.verify_outgoing);
  getBool(t, s, "verify_server_hostname", c.verify_server_hostname);
  const bool min_given = getEnum<TlsVersion>(t, s, "tls_min_version",
                                             {{"TLSv1_0", TlsVersion::Tls10},
                                              {"TLSv1_1", TlsVersion::Tls11},
                                              {"TLSv1_2", TlsVersion::Tls12},
                                              {"TLSv1_3", TlsVersion::Tls13},
                                              {"TLS_AUTO", TlsVersion::Tls12}},
                                             c.tls_min_version);
  (void)min_given;
  if (const auto* n = find(t, "tls_cipher_suites")) {
    std::vector<std::string> names;
    if (n->is_string()) {  // Consul's form: comma-separated
      std::string_view all = n->as_string()->get();
      while (!all.empty()) {
        size_t comma = all.find(',');
        std::string_view one = all.substr(0, comma);
        while (!one.empty() && one.front() == ' ') {
          one.remove_prefix(1);
        }
        while (!one.empty() && one.back() == ' ') {
          one.remove_suffix(1);
        }
        names.emplace_back(one);
        all = comma == std::string_view::npos ? std::string_view{} : all.substr(comma + 1);
      }
    } else if (n->is_array()) {
      for (const auto& e : *n->as_array()) {
        if (e.is_string()) {
          names.push_back(e.as_string()->get());
        } else {
          error(e, "tls.tls_cipher_suites", "expected cipher suite names as strings");
        }
      }
    } else {
      error(*n, "tls.tls_cipher_suites", "expected a comma-separated string or an array");
    }
    for (const auto& name : names) {
      if (std::find(std::begin(kCipherSuites), std::end(kCipherSuites), name) ==
          std::end(kCipherSuites)) {
        std::string msg = "unsupported cipher suite '" + name + "'";
        std::vector<std::string_view> all(std::begin(kCipherSuites), std::end(kCipherSuites));
        if (auto hint = didYouMean(name, all)) {
          msg += "; did you mean '" + std::string(*hint) + "'?";
        }
        error(*n, "tls.tls_cipher_suites", msg);
      }
    }
    if (!names.empty() && c.tls_min_version == TlsVersion::Tls13) {
      error(*n, "tls.tls_cipher_suites",
            "TLS 1.3 cipher suites are not configurable; remove tls_cipher_suites or lower "
            "tls_min_version");
    }
    c.tls_cipher_suites = std::move(names);
  }
  if (const auto* n = find(t, "rpc_handshake_timeout")) {
    std::optional<uint32_t> ms;
    if (n->is_string()) {
      ms = parseDurationMs(n->as_string()->get());
    }
    if (!ms || *ms == 0) {
      error(*n, "tls.rpc_handshake_timeout",
            "expected a positive duration such as \"5s\" or \"500ms\"");
    } else {
      c.rpc_handshake_timeout_ms = *ms;
    }
  }
  loadDatacenters(t);
  if (auto v = getInt(t, s, "rpc_max_conns_per_client", 0, 1'000'000)) {
    c.rpc_max_conns_per_client = static_cast<uint32_t>(*v);
  }
}

void Loader::loadIntercept(const toml::table& t, bool& ports_given) {
  const std::string s = "intercept";
  getEnum<InterceptMode>(t, s, "mode",
                         {{"tproxy", InterceptMode::Tproxy}, {"redirect", InterceptMode::Redirect}},
                         cfg.intercept.mode);
  auto& ic = cfg.intercept;
  getEnum<RulesBackend>(t, s, "backend",
                        {{"auto", RulesBackend::Auto},
                         {"nft", RulesBackend::Nft},
                         {"iptables-nft", RulesBackend::IptablesNft},
                         {"iptables-legacy", RulesBackend::IptablesLegacy}},
                        ic.backend);
  getBool(t, s, "install_rules", ic.install_rules);
  getBool(t, s, "unsafe_remove_rules_on_exit", ic.unsafe_remove_rules_on_exit);
  if (ic.unsafe_remove_rules_on_exit) {
    cfg.warnings.push_back(
        "intercept.unsafe_remove_rules_on_exit: when sidecrypt stops, the agent's traffic flows "
        "in plaintext");
  }
  getBool(t, s, "ipv6", ic.ipv6);
  if (auto v = getInt(t, s, "outbound_port", 1, 65535)) {
    ic.outbound_port = static_cast<uint16_t>(*v);
  }
  if (auto v = getInt(t, s, "inbound_port", 1, 65535)) {
    ic.inbound_port = static_cast<uint16_t>(*v);
  }
  if (ic.inbound_port == ic.outbound_port) {
    crossError({"intercept.inbound_port", "intercept.outbound_port"},
               "inbound_port and outbound_port must differ");
  }
  constexpr int64_t kMaxU32 = 0xffffffffLL;
  if (auto v = getInt(t, s, "divert_mark", 1, kMaxU32)) {
    ic.divert_mark = static_cast<uint32_t>(*v);
  }
  if (auto v = getInt(t, s, "proxy_mark", 1, kMaxU32)) {
    ic.proxy_mark = static_cast<uint32_t>(*v);
  }
  if (ic.divert_mark == ic.proxy_mark) {
    crossError({"intercept.proxy_mark", "intercept.divert_mark"},
               "divert_mark and proxy_mark must differ");
  }
  if (auto v = getInt(t, s, "route_table", 1, 0xfffffffe)) {
    ic.route_table = static_cast<uint32_t>(*v);
  }
  if (auto v = getInt(t, s, "rule_priority", 1, 32765)) {
    ic.rule_priority = static_cast<uint32_t>(*v);
  }
  if (const auto* n = find(t, "drain_time")) {
    std::optional<uint32_t> ms;
    if (n->is_string()) {
      ms = parseDurationMs(n->as_string()->get());
    }
    if (!ms) {
      error(*n, "intercept.drain_time", "expected a duration such as \"5s\" (0s for none)");
    } else {
      ic.drain_ms = *ms;
    }
  }
  getPortList(t, s, "member_ports", ic.member_ports);
  getPortList(t, s, "wan_member_ports", ic.wan_member_ports);
  const auto* ports = find(t, "port");
  if (ports == nullptr) {
    return;
  }
  if (!ports->is_array_of_tables()) {
    error(*ports, "intercept.port", "expected [[intercept.port]] tables");
    return;
  }
  ports_given = true;
  size_t i = 0;
  for (const auto& e : *ports->as_array()) {
    const std::string sec = "intercept.port[" + std::to_string(i++) + "]";
    const auto& pt = *e.as_table();
    checkKeys(pt, sec, kPortKeys);
    PortSpec p;
    if (auto v = getInt(pt, sec, "port", 1, 65535)) {
      p.port = static_cast<uint16_t>(*v);
    } else if (pt.get("port") == nullptr) {
      error(e, sec + ".port", "missing required key 'port'");
    }
    getEnum<PortProtocol>(pt, sec, "protocol",
                          {{"gossip", PortProtocol::Gossip}, {"rpc", PortProtocol::Rpc}},
                          p.protocol);
    p.transport = p.protocol == PortProtocol::Rpc ? Transport::Tcp : Transport::Both;
    if (getEnum<Transport>(
            pt, sec, "transport",
            {{"udp", Transport::Udp}, {"tcp", Transport::Tcp}, {"both", Transport::Both}},
            p.transport) &&
        p.protocol == PortProtocol::Rpc && p.transport != Transport::Tcp) {
      error(*pt.get("transport"), sec + ".transport", "the rpc protocol is TCP only");
      p.transport = Transport::Tcp;
    }
    getEnum<GossipPool>(pt, sec, "pool", {{"lan", GossipPool::Lan}, {"wan", GossipPool::Wan}},
                        p.pool);
    getString(pt, sec, "name", p.name);
    if (p.name.empty()) {
      p.name = std::string(toString(p.protocol)) + "_" + std::to_string(p.port);
    }
    for (const auto& other : cfg.intercept.ports) {
      const bool overlap = other.transport == Transport::Both || p.transport == Transport::Both ||
                           other.transport == p.transport;
      if (other.port == p.port && p.port != 0 && overlap) {
        error(e, sec + ".port", "port " + std::to_string(p.port) + " is listed twice");
      }
    }
    cfg.intercept.ports.push_back(p);
  }
}

// Parses "127.0.0.1:9920" or "[::1]:9920"; returns the host part and whether it is loopback.
std::optional<std::pair<std::string, bool>> parseListen(const std::string& s) {
  std::string host;
  std::string port;
  if (!s.empty() && s.front() == '[') {
    size_t close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      return std::nullopt;
    }
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    size_t colon = s.rfind(':');
    if (colon == std::string::npos) {
      return std::nullopt;
    }
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoi(port) > 65535) {
    return std::nullopt;
  }
  in_addr a4{};
  in6_addr a6{};
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) {
    return std::make_pair(host, (ntohl(a4.s_addr) >> 24) == 127);
  }
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) {
    return std::make_pair(host, IN6_IS_ADDR_LOOPBACK(&a6) != 0);
  }
  return std::nullopt;
}

void Loader::loadListeners(const toml::node& n) {
  if (!n.is_array_of_tables()) {
    error(n, "listener", "expected [[listener]] tables");
    return;
  }
  size_t i = 0;
  for (const auto& e : *n.as_array()) {
    const std::string sec = "listener[" + std::to_string(i++) + "]";
    const auto& lt = *e.as_table();
    checkKeys(lt, sec, kListenerKeys);
    ListenerConfig l;
    getString(lt, sec, "name", l.name);
    for (const char* key : {"listen", "upstream"}) {
      std::string text;
      if (!getString(lt, sec, key, text)) {
        if (lt.get(key) == nullptr) {
          error(e, sec + "." + key, std::string("missing required key '") + key + "'");
        }
        continue;
      }
      const SocketAddress a = SocketAddress::parse(text);
      if (!a.valid() || a.port() == 0) {
        error(*lt.get(key), sec + "." + key,
              "expected an IP address and port such as \"127.0.0.1:9000\" or \"[::1]:9000\"");
        continue;
      }
      (std::string(key) == "listen" ? l.listen : l.upstream) = a;
    }
    if (lt.get("direction") == nullptr) {
      error(e, sec + ".direction",
            "missing required key 'direction' (\"outbound\" or \"inbound\")");
    } else {
      getEnum<ListenerDirection>(
          lt, sec, "direction",
          {{"outbound", ListenerDirection::Outbound}, {"inbound", ListenerDirection::Inbound}},
          l.direction);
    }
    std::string protocol = "rpc";
    if (getString(lt, sec, "protocol", protocol) && protocol != "rpc") {
      error(*lt.get("protocol"), sec + ".protocol",
            "only \"rpc\" listeners exist (gossip is intercepted, not listened for)");
    }
    for (const auto& other : cfg.listeners) {
      if (l.listen.valid() && other.listen == l.listen) {
        error(*lt.get("listen"), sec + ".listen", l.listen.toString() + " is listed twice");
      }
    }
    if (l.name.empty()) {
      l.name = std::string(l.direction == ListenerDirection::Outbound ? "rpc_out_" : "rpc_in_") +
               std::to_string(l.listen.port());
    }
    cfg.listeners.push_back(std::move(l));
  }
}

void Loader::loadAdmin(const toml::table& t) {
  getBool(t, "admin", "unsafe_allow_remote", cfg.admin.unsafe_allow_remote);
  if (getString(t, "admin", "listen", cfg.admin.listen)) {
    auto parsed = parseListen(cfg.admin.listen);
    if (!parsed) {
      error(*find(t, "listen"), "admin.listen",
            "expected an IP address and port such as \"127.0.0.1:9920\" or \"[::1]:9920\"");
    } else if (!parsed->second && !cfg.admin.unsafe_allow_remote) {
      error(*find(t, "listen"), "admin.listen",
            parsed->first +
                " is not a loopback address; the admin API can reload and reveal "
                "the census, so set admin.unsafe_allow_remote = true to expose it");
    } else if (!parsed->second) {
      cfg.warnings.push_back("admin.listen " + cfg.admin.listen +
                             " is reachable from the network (admin.unsafe_allow_remote)");
    }
  }
}

void Loader::loadMetrics(const toml::table& t) {
  if (auto v = getInt(t, "metrics", "peer_series", 0, 1000)) {
    cfg.metrics.peer_series = static_cast<uint32_t>(*v);
  }
  if (getString(t, "metrics", "listen", cfg.metrics.listen) && !cfg.metrics.listen.empty()) {
    if (!parseListen(cfg.metrics.listen)) {
      error(*find(t, "listen"), "metrics.listen",
            "expected an IP address and port such as \"127.0.0.1:9921\" or \"0.0.0.0:9921\", "
            "or \"\" to turn the metrics listener off");
    } else if (SocketAddress::parse(cfg.metrics.listen) == SocketAddress::parse(cfg.admin.listen)) {
      error(*find(t, "listen"), "metrics.listen",
            cfg.metrics.listen + " is also admin.listen; give the metrics listener its own port");
    }
  }
}

void Loader::loadCensus(const toml::table& t) {
  if (auto v = getInt(t, "census", "max_peers", 1024, 10'000'000)) {
    cfg.census.max_peers = static_cast<uint32_t>(*v);
  }
  if (const auto* n = find(t, "window")) {
    std::optional<uint32_t> ms;
    if (n->is_string()) {
      ms = parseDurationMs(n->as_string()->get());
    }
    if (!ms || *ms < 1000 || *ms % 1000 != 0) {
      error(*n, "census.window",
            "expected a whole number of seconds of at least 1s, such as \"10m\" or \"90s\"");
    } else {
      cfg.census.window_s = *ms / 1000;
    }
  }
}

void Loader::loadLog(const toml::table& t) {
  std::string level;
  getEnum<std::string>(t, "log", "level",
                       {{"trace", "trace"},
                        {"debug", "debug"},
                        {"info", "info"},
                        {"warn", "warn"},
                        {"error", "error"},
                        {"critical", "critical"},
                        {"off", "off"}},
                       cfg.log.level);
  getEnum<LogFormat>(t, "log", "format", {{"text", LogFormat::Text}, {"json", LogFormat::Json}},
                     cfg.log.format);
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

// The member port plan of each pool: its own gossip ports plus intercept.(wan_)member_ports. A
// member port maps to one pool and must not be an RPC port or a capture port.
void Loader::memberPortDefaults() {
  auto& ic = cfg.intercept;
  for (auto [pool, key, list] :
       {std::tuple{GossipPool::Lan, "intercept.member_ports", &ic.member_ports},
        std::tuple{GossipPool::Wan, "intercept.wan_member_ports", &ic.wan_member_ports}}) {
    std::vector<uint16_t> own;
    for (const auto& p : ic.ports) {
      if (p.protocol == PortProtocol::Gossip && p.pool == pool) {
        own.push_back(p.port);
      }
    }
    if (own.empty() && !list->empty()) {
      crossError({key}, std::string("no ") + (pool == GossipPool::Lan ? "LAN" : "WAN") +
                            " gossip port is intercepted, so member ports of that pool mean "
                            "nothing");
      continue;
    }
    for (uint16_t m : *list) {
      for (const auto& p : ic.ports) {
        if (p.port == m && (p.protocol != PortProtocol::Gossip || p.pool != pool)) {
          crossError({key}, "port " + std::to_string(m) + " is also " + p.name +
                                " (a member port must belong to one gossip pool only)");
        }
      }
      if (m == ic.outbound_port || m == ic.inbound_port) {
        crossError({key}, "port " + std::to_string(m) + " is a capture port");
      }
    }
    for (uint16_t p : own) {
      if (std::find(list->begin(), list->end(), p) == list->end()) {
        list->push_back(p);
      }
    }
    std::sort(list->begin(), list->end());
  }
  for (uint16_t m : ic.member_ports) {
    if (std::find(ic.wan_member_ports.begin(), ic.wan_member_ports.end(), m) !=
        ic.wan_member_ports.end()) {
      crossError({"intercept.wan_member_ports", "intercept.member_ports"},
                 "port " + std::to_string(m) + " is both a LAN and a WAN member port");
    }
  }
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
