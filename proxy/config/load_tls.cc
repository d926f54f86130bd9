// [tls], its [[tls.datacenter]] routes and [[listener]]: RPC and the TLS it speaks.

#include <algorithm>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/config/did_you_mean.h"
#include "proxy/config/loader.h"

namespace sidecrypt::proxy::config_detail {

namespace {

// The cipher suites Consul accepts for tls_cipher_suites (docs/spec/consul-rpc-tls.md §2.2).
constexpr std::string_view kCipherSuites[] = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",       "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",       "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",          "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",          "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
};

const std::vector<std::string_view> kDatacenterKeys = {"name", "addresses"};
const std::vector<std::string_view> kListenerKeys = {"name", "listen", "upstream", "direction",
                                                     "protocol"};

}  // namespace

void Loader::loadDatacenters(const toml::table& t) {
  const auto* list = find(t, "datacenter");
  if (list == nullptr) {
    return;
  }
  for (const auto& [e, dt, sec] : tablesOf(*list, "tls.datacenter", kDatacenterKeys)) {
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
  if (auto ms = getDurationMs(
          t, s, "rpc_handshake_timeout", [](uint32_t v) { return v > 0; },
          "expected a positive duration such as \"5s\" or \"500ms\"")) {
    c.rpc_handshake_timeout_ms = *ms;
  }
  loadDatacenters(t);
  if (auto v = getInt(t, s, "rpc_max_conns_per_client", 0, 1'000'000)) {
    c.rpc_max_conns_per_client = static_cast<uint32_t>(*v);
  }
  getBool(t, s, "watch", c.watch);
  if (auto ms = getDurationMs(
          t, s, "watch_debounce", [](uint32_t v) { return v <= 60'000; },
          "expected a duration from \"0s\" to \"1m\", such as \"500ms\"")) {
    c.watch_debounce_ms = *ms;
  }
  getBool(t, s, "session_resumption", c.session_resumption);
}

void Loader::loadListeners(const toml::node& n) {
  for (const auto& [e, lt, sec] : tablesOf(n, "listener", kListenerKeys)) {
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

}  // namespace sidecrypt::proxy::config_detail
