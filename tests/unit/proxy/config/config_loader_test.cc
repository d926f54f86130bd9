#include "proxy/config/config_loader.h"

#include <catch2/catch.hpp>

#include <fstream>

#include "../../test_util.h"

using namespace sidecrypt::proxy;

namespace {

std::vector<std::string> errorsOf(const std::string& toml) {
  auto r = loadConfigText(toml, "proxy.toml");
  std::vector<std::string> out;
  if (auto* errs = std::get_if<std::vector<ConfigError>>(&r)) {
    for (const auto& e : *errs) {
      out.push_back(e.format());
    }
  }
  return out;
}

// The one error `toml` gives, formatted; the test stops if it gives none or several.
std::string theError(const std::string& toml) {
  auto errs = errorsOf(toml);
  INFO("errors: " << errs.size() << (errs.empty() ? "" : ", first: " + errs.front()));
  REQUIRE(errs.size() == 1);
  return errs.front();
}

Config ok(const std::string& toml) {
  auto r = loadConfigText(toml, "proxy.toml");
  if (auto* errs = std::get_if<std::vector<ConfigError>>(&r)) {
    FAIL("unexpected error: " << errs->front().format());
  }
  return std::move(std::get<Config>(r));
}

bool hasWarning(const Config& c, const std::string& part) {
  for (const auto& w : c.warnings) {
    if (w.find(part) != std::string::npos) {
      return true;
    }
  }
  return false;
}

}  // namespace

TEST_CASE("config: an empty file gives Consul's defaults", "[config]") {
  auto c = ok("");
  CHECK(c.gossip.encrypt_verify_incoming);
  CHECK(c.gossip.encrypt_verify_outgoing);
  CHECK_FALSE(c.tls.verify_incoming);
  CHECK_FALSE(c.tls.verify_outgoing);
  CHECK_FALSE(c.tls.verify_server_hostname);
  CHECK(c.tls.tls_min_version == TlsVersion::Tls12);
  CHECK(c.tls.rpc_handshake_timeout_ms == 5000);
  CHECK(c.agent.datacenter == "dc1");
  CHECK(c.agent.domain == "consul");
  CHECK(c.admin.listen == "127.0.0.1:9920");
  CHECK(c.gossip.keyring_file == "/var/lib/sidecrypt/serf/local.keyring");
  // consul client profile: LAN gossip and outbound RPC
  REQUIRE(c.intercept.ports.size() == 2);
  CHECK(c.intercept.ports[0].port == 8301);
  CHECK(c.intercept.ports[0].transport == Transport::Both);
  CHECK(c.intercept.ports[1].port == 8300);
  CHECK(c.intercept.ports[1].transport == Transport::Tcp);
}

TEST_CASE("config: the consul server profile adds WAN gossip; serf uses 7946", "[config]") {
  auto server = ok("[agent]\nserver = true\n");
  REQUIRE(server.intercept.ports.size() == 3);
  CHECK(server.intercept.ports[1].port == 8302);
  CHECK(server.intercept.ports[1].pool == GossipPool::Wan);
  auto serf = ok("[agent]\nprofile = \"serf\"\n");
  REQUIRE(serf.intercept.ports.size() == 1);
  CHECK(serf.intercept.ports[0].port == 7946);
}

TEST_CASE("config: memberlist product profiles imply their ports, pools and Serf handling",
          "[config]") {
  for (const auto& [name, port] :
       {std::pair{"alertmanager", 9094}, {"grafana-alerting", 9094}, {"nomad", 4648}}) {
    INFO(name);
    // agent.server changes nothing for them: one gossip pool, no RPC port.
    auto c = ok(std::string("[agent]\nprofile = \"") + name + "\"\nserver = true\n");
    REQUIRE(c.intercept.ports.size() == 1);
    CHECK(c.intercept.ports[0].port == port);
    CHECK(c.intercept.ports[0].protocol == PortProtocol::Gossip);
    CHECK(c.intercept.ports[0].transport == Transport::Both);
    CHECK(c.intercept.ports[0].pool == GossipPool::Lan);
    CHECK(c.intercept.member_ports == std::vector<uint16_t>{static_cast<uint16_t>(port)});
    CHECK(c.intercept.wan_member_ports.empty());
    CHECK(profileSpeaksSerf(c.agent.profile) == (std::string(name) == "nomad"));
  }
  CHECK(profileSpeaksSerf(Profile::Consul));
  CHECK(profileSpeaksSerf(Profile::Serf));
  CHECK(profileSpeaksSerf(Profile::Custom));
  // Members on other ports: the pool's plan takes them, as for Consul.
  auto am = ok("[agent]\nprofile = \"alertmanager\"\n[intercept]\nmember_ports = [9095]\n");
  CHECK(am.intercept.member_ports == std::vector<uint16_t>{9094, 9095});
  CHECK(theError("[agent]\nprofile = \"alertmanager\"\n[intercept]\nwan_member_ports = [9095]\n")
            .find("no WAN gossip port is intercepted") != std::string::npos);
}

TEST_CASE("config: a bad gossip key names file, line, column and key", "[config]") {
  const std::string err =
      theError("[gossip]\n\nencrypt = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\"\n");
  CHECK(err ==
        "proxy.toml:3:11: gossip.encrypt: key must be 16, 24 or 32 bytes of base64, "
        "got 31");
}

TEST_CASE("config: gossip.encrypt takes the URL-safe alphabet (Nomad's) too", "[config]") {
  auto url = ok("[gossip]\nencrypt = \"VyCxNNGoItgU4Da78vpwEz72f-XlruLSaDvb9QaqQGg\"\n");
  auto std_form = ok("[gossip]\nencrypt = \"VyCxNNGoItgU4Da78vpwEz72f+XlruLSaDvb9QaqQGg=\"\n");
  REQUIRE(url.gossip.encrypt);
  REQUIRE(std_form.gossip.encrypt);
  CHECK(url.gossip.encrypt->equals(*std_form.gossip.encrypt));
  CHECK(theError("[gossip]\n\nencrypt = \"VyCxNNGoItgU4Da78vpwEz72f-XlruLSaDvb9QaqQG/\"\n") ==
        "proxy.toml:3:11: gossip.encrypt: key mixes the standard ('+', '/') and URL-safe ('-', "
        "'_') base64 alphabets");
}

TEST_CASE("config: a good gossip key is decoded into locked memory", "[config]") {
  auto c = ok("[gossip]\nencrypt = \"IbdPNaip2hxZV5nxiJGOwA==\"\n");
  REQUIRE(c.gossip.encrypt);
  CHECK(c.gossip.encrypt->size() == 16);
}

TEST_CASE("config: unknown keys are errors with a did-you-mean hint", "[config]") {
  auto errs = errorsOf(
      "[gossip]\nencrypt_verify_incomming = false\n[tls]\nverfy_outgoing = true\n"
      "[nonsense]\n");
  REQUIRE(errs.size() == 3);
  CHECK(errs[0] ==
        "proxy.toml:2:1: gossip.encrypt_verify_incomming: unknown key; did you mean "
        "'encrypt_verify_incoming'?");
  CHECK(errs[1] ==
        "proxy.toml:4:1: tls.verfy_outgoing: unknown key; did you mean "
        "'verify_outgoing'?");
  CHECK(errs[2] == "proxy.toml:5:2: nonsense: unknown key");
}

TEST_CASE("config: every error is reported at once, in file order", "[config]") {
  auto errs = errorsOf(
      "[agent]\nprofile = \"vault\"\n[gossip]\nencrypt_verify_outgoing = \"yes\"\n"
      "[tls]\ntls_min_version = \"TLSv9\"\n[log]\nlevel = \"loud\"\n");
  REQUIRE(errs.size() == 4);
  CHECK(errs[0] ==
        "proxy.toml:2:11: agent.profile: unknown value 'vault'; expected one of: "
        "consul, serf, custom, alertmanager, grafana-alerting, nomad");
  CHECK(errs[1] == "proxy.toml:4:27: gossip.encrypt_verify_outgoing: expected true or false");
  CHECK(errs[2] ==
        "proxy.toml:6:19: tls.tls_min_version: unknown value 'TLSv9'; expected one "
        "of: TLSv1_0, TLSv1_1, TLSv1_2, TLSv1_3, TLS_AUTO");
  CHECK(errs[3] ==
        "proxy.toml:8:9: log.level: unknown value 'loud'; expected one of: trace, "
        "debug, info, warn, error, critical, off");
}

TEST_CASE("config: TOML syntax errors carry the position", "[config]") {
  const std::string err = theError("[gossip]\nencrypt = \n");
  CHECK(err.starts_with("proxy.toml:2:"));
  CHECK(err.find("TOML syntax error") != std::string::npos);
}

TEST_CASE("config: verify flags need a CA, as in Consul", "[config]") {
  const std::string err = theError("[tls]\nverify_outgoing = true\n");
  CHECK(err ==
        "proxy.toml:2:1: tls.verify_outgoing: verify_outgoing set but no CA "
        "certificates were provided (set tls.ca_file or tls.ca_path)");
  const std::string in =
      theError("[agent]\nserver = true\n[tls]\nca_file = \"ca.pem\"\nverify_incoming = true\n");
  CHECK(in ==
        "proxy.toml:5:1: tls.verify_incoming: verify_incoming requires tls.cert_file "
        "and tls.key_file");
}

TEST_CASE("config: verify_server_hostname implies verify_outgoing", "[config]") {
  auto c = ok("[tls]\nca_file = \"ca.pem\"\nverify_server_hostname = true\n");
  CHECK(c.tls.verify_outgoing);
  const std::string err = theError("[tls]\nverify_server_hostname = true\n");
  CHECK(err.starts_with("proxy.toml:2:1: tls.verify_server_hostname: verify_outgoing set"));
}

TEST_CASE("config: tls.session_resumption is on by default and may be turned off", "[config]") {
  CHECK(ok("").tls.session_resumption);
  CHECK_FALSE(ok("[tls]\nsession_resumption = false\n").tls.session_resumption);
  CHECK(theError("[tls]\nsession_resumption = \"no\"\n") ==
        "proxy.toml:2:22: tls.session_resumption: expected true or false");
}

TEST_CASE("config: cert_file and key_file go together", "[config]") {
  const std::string err = theError("[tls]\ncert_file = \"a.pem\"\n");
  CHECK(err == "proxy.toml:2:1: tls.cert_file: cert_file and key_file must be set together");
}

TEST_CASE("config: cipher suites use Consul's names and are not allowed with TLS 1.3 minimum",
          "[config]") {
  auto c =
      ok("[tls]\ntls_cipher_suites = \"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, "
         "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\"\n");
  CHECK(c.tls.tls_cipher_suites.size() == 2);
  const std::string err =
      theError("[tls]\ntls_cipher_suites = \"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA265\"\n");
  CHECK(err ==
        "proxy.toml:2:21: tls.tls_cipher_suites: unsupported cipher suite "
        "'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA265'; did you mean "
        "'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256'?");
  const std::string v13 = theError(
      "[tls]\ntls_min_version = \"TLSv1_3\"\ntls_cipher_suites = "
      "[\"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\"]\n");
  CHECK(v13.find("TLS 1.3 cipher suites are not configurable") != std::string::npos);
}

TEST_CASE("config: weakening TLS below 1.2 is allowed only with a warning", "[config]") {
  auto c = ok("[tls]\ntls_min_version = \"TLSv1_0\"\n");
  CHECK(c.tls.tls_min_version == TlsVersion::Tls10);
  CHECK(hasWarning(c, "allows obsolete TLS versions"));
}

TEST_CASE("config: turning gossip verification off warns", "[config]") {
  auto c = ok("[gossip]\nencrypt_verify_incoming = false\nencrypt_verify_outgoing = false\n");
  CHECK(hasWarning(c, "plaintext gossip from peers is accepted"));
  CHECK(hasWarning(c, "gossip leaves in plaintext"));
}

TEST_CASE("config: the admin endpoint must stay on loopback unless unsafe_allow_remote",
          "[config]") {
  const std::string err = theError("[admin]\nlisten = \"0.0.0.0:9920\"\n");
  CHECK(err ==
        "proxy.toml:2:10: admin.listen: 0.0.0.0 is not a loopback address; the admin "
        "API can reload and reveal the census, so set admin.unsafe_allow_remote = "
        "true to expose it");
  auto c = ok("[admin]\nlisten = \"0.0.0.0:9920\"\nunsafe_allow_remote = true\n");
  CHECK(hasWarning(c, "reachable from the network"));
  CHECK(ok("[admin]\nlisten = \"[::1]:9920\"\n").admin.listen == "[::1]:9920");
  const std::string bad = theError("[admin]\nlisten = \"localhost\"\n");
  CHECK(bad.starts_with("proxy.toml:2:10: admin.listen: expected an IP address and port"));
}

TEST_CASE("config: explicit ports replace the profile and are checked", "[config]") {
  auto c =
      ok("[agent]\nprofile = \"custom\"\n[[intercept.port]]\nport = 9301\n"
         "[[intercept.port]]\nport = 9300\nprotocol = \"rpc\"\n");
  REQUIRE(c.intercept.ports.size() == 2);
  CHECK(c.intercept.ports[0].protocol == PortProtocol::Gossip);
  CHECK(c.intercept.ports[1].transport == Transport::Tcp);
  auto errs = errorsOf(
      "[[intercept.port]]\nport = 70000\n[[intercept.port]]\nport = 8300\n"
      "protocol = \"rpc\"\ntransport = \"udp\"\n[[intercept.port]]\nport = 8300\n"
      "protocol = \"rpc\"\n");
  REQUIRE(errs.size() == 3);
  CHECK(errs[0] ==
        "proxy.toml:2:8: intercept.port[0].port: must be between 1 and 65535, got "
        "70000");
  CHECK(errs[1] == "proxy.toml:6:13: intercept.port[1].transport: the rpc protocol is TCP only");
  CHECK(errs[2].starts_with("proxy.toml:7:1: intercept.port[2].port: port 8300 is listed twice"));
}

TEST_CASE("config: a dskit port is TCP only and seals with its gossip pool", "[config][dskit]") {
  // docs/products/dskit.md: Grafana dskit's TCP-only memberlist transport on 7946.
  auto c =
      ok("[agent]\nprofile = \"custom\"\n[[intercept.port]]\nport = 7946\n"
         "protocol = \"dskit\"\n");
  REQUIRE(c.intercept.ports.size() == 1);
  CHECK(c.intercept.ports[0].protocol == PortProtocol::Dskit);
  CHECK(c.intercept.ports[0].transport == Transport::Tcp);
  CHECK(c.intercept.ports[0].pool == GossipPool::Lan);
  CHECK(c.intercept.ports[0].name == "dskit_7946");
  const std::string err = theError(
      "[agent]\nprofile = \"custom\"\n[[intercept.port]]\nport = 7946\n"
      "protocol = \"dskit\"\ntransport = \"both\"\n");
  CHECK(err == "proxy.toml:6:13: intercept.port[0].transport: the dskit protocol is TCP only");
}

TEST_CASE("config: the custom profile needs ports or listeners", "[config]") {
  const std::string err = theError("[agent]\nprofile = \"custom\"\n");
  CHECK(err ==
        "proxy.toml:2:1: agent.profile: profile \"custom\" needs at least one "
        "[[intercept.port]] or [[listener]]");
  // Explicit listeners alone are a complete configuration (no interception).
  auto c =
      ok("[agent]\nprofile = \"custom\"\n[tls]\ncert_file = \"c.pem\"\nkey_file = "
         "\"k.pem\"\n[[listener]]\nlisten = \"10.0.0.1:8443\"\nupstream = "
         "\"127.0.0.1:8300\"\ndirection = \"inbound\"\n");
  CHECK(c.intercept.ports.empty());
  REQUIRE(c.listeners.size() == 1);
  CHECK(c.listeners[0].name == "rpc_in_8443");
  CHECK(c.listeners[0].direction == ListenerDirection::Inbound);
  CHECK(c.listeners[0].upstream.toString() == "127.0.0.1:8300");
}

TEST_CASE("config: datacenter, domain, label and durations are validated", "[config]") {
  auto c =
      ok("[agent]\ndatacenter = \"EU-West_1\"\ndomain = \"example.\"\n"
         "[tls]\nrpc_handshake_timeout = \"1m30s\"\n");
  CHECK(c.agent.datacenter == "eu-west_1");
  CHECK(c.agent.domain == "example");
  CHECK(c.tls.rpc_handshake_timeout_ms == 90000);
  auto errs = errorsOf("[agent]\ndatacenter = \"dc 1\"\n[gossip]\nlabel = \"" +
                       std::string(256, 'x') + "\"\n[tls]\nrpc_handshake_timeout = \"5 s\"\n");
  REQUIRE(errs.size() == 3);
  CHECK(errs[0].starts_with("proxy.toml:2:14: agent.datacenter: datacenter must be"));
  CHECK(errs[1] == "proxy.toml:4:9: gossip.label: label must be at most 255 bytes, got 256");
  CHECK(errs[2].starts_with("proxy.toml:6:25: tls.rpc_handshake_timeout: expected a positive"));
}

TEST_CASE("config: tls.watch and tls.watch_debounce", "[config]") {
  auto c = ok("");
  CHECK(c.tls.watch);
  CHECK(c.tls.watch_debounce_ms == 500);
  c = ok("[tls]\nwatch = false\nwatch_debounce = \"50ms\"\n");
  CHECK_FALSE(c.tls.watch);
  CHECK(c.tls.watch_debounce_ms == 50);
  CHECK(ok("[tls]\nwatch_debounce = \"0s\"\n").tls.watch_debounce_ms == 0);
  auto errs = errorsOf("[tls]\nwatch = \"yes\"\nwatch_debounce = \"2m\"\n");
  REQUIRE(errs.size() == 2);
  CHECK(errs[0].starts_with("proxy.toml:2:9: tls.watch: "));
  CHECK(errs[1].starts_with("proxy.toml:3:18: tls.watch_debounce: expected a duration from"));
}

TEST_CASE("config: the shipped proxy.toml loads without errors", "[config]") {
  auto r = loadConfig(std::filesystem::path(SIDECRYPT_SOURCE_DIR) / "proxy.toml");
  if (auto* errs = std::get_if<std::vector<ConfigError>>(&r)) {
    FAIL(errs->front().format());
  }
  CHECK(std::get<Config>(r).agent.profile == Profile::Consul);
}

TEST_CASE("config: a missing file is a clear error", "[config]") {
  auto r = loadConfig("/nonexistent/proxy.toml");
  REQUIRE(std::holds_alternative<std::vector<ConfigError>>(r));
  CHECK(std::get<std::vector<ConfigError>>(r)[0].format() ==
        "/nonexistent/proxy.toml: cannot open config file: No such file or directory");
}

TEST_CASE("config: [[tls.datacenter]] maps server addresses to their datacenter", "[config]") {
  auto c =
      ok("[tls]\n"
         "[[tls.datacenter]]\n"
         "name = \"DC2\"\n"
         "addresses = [\"10.2.0.0/16\", \"fd00:2::/64\", \"192.0.2.7\"]\n");
  REQUIRE(c.tls.datacenters.size() == 1);
  const auto& r = c.tls.datacenters[0];
  CHECK(r.name == "dc2");  // lower-cased, as Consul does
  REQUIRE(r.addresses.size() == 3);
  CHECK(r.addresses[0].contains(SocketAddress::parse("10.2.255.1:8300")));
  CHECK_FALSE(r.addresses[0].contains(SocketAddress::parse("10.3.0.1:8300")));
  CHECK(r.addresses[0].contains(SocketAddress::parse("[::ffff:10.2.0.9]:8300")));
  CHECK(r.addresses[1].contains(SocketAddress::parse("[fd00:2::1234]:8300")));
  CHECK_FALSE(r.addresses[1].contains(SocketAddress::parse("[fd00:3::1]:8300")));
  CHECK(r.addresses[2].contains(SocketAddress::parse("192.0.2.7:8300")));
  CHECK_FALSE(r.addresses[2].contains(SocketAddress::parse("192.0.2.8:8300")));
  CHECK(Cidr::parse("10.0.0.0/12").contains(SocketAddress::parse("10.15.0.1:1")));
  CHECK_FALSE(Cidr::parse("10.0.0.0/12").contains(SocketAddress::parse("10.16.0.1:1")));
  CHECK(Cidr::parse("0.0.0.0/0").contains(SocketAddress::parse("203.0.113.1:1")));
  CHECK_FALSE(Cidr::parse("10.0.0.0/33").valid());
  CHECK_FALSE(Cidr::parse("10.0.0/8").valid());
  CHECK_FALSE(Cidr::parse("10.0.0.0/").valid());
}

TEST_CASE("config: bad [[tls.datacenter]] entries are all reported with positions", "[config]") {
  auto errs = errorsOf(
      "[tls]\n"
      "[[tls.datacenter]]\n"
      "name = \"dc 2\"\n"
      "addresses = [\"10.2.0.0/40\", 7]\n"
      "[[tls.datacenter]]\n"
      "addresses = []\n");
  REQUIRE(errs.size() == 5);
  CHECK(errs[0] ==
        "proxy.toml:3:8: tls.datacenter[0].name: datacenter must be letters, digits, '-' or '_' "
        "(as in Consul)");
  CHECK(errs[1].rfind("proxy.toml:4:14: tls.datacenter[0].addresses: expected an IPv4/IPv6", 0) ==
        0);
  CHECK(errs[2].rfind("proxy.toml:4:29: tls.datacenter[0].addresses:", 0) == 0);
  CHECK(errs[3].find("tls.datacenter[1].name: missing required key 'name'") != std::string::npos);
  CHECK(errs[4].find("tls.datacenter[1].addresses: expected a non-empty array") !=
        std::string::npos);
}

TEST_CASE("config: the metrics listener is on loopback by default and may be moved or turned off",
          "[config]") {
  CHECK(ok("").metrics.listen == "127.0.0.1:9921");
  CHECK(ok("[metrics]\nlisten = \"0.0.0.0:9921\"\n").metrics.listen == "0.0.0.0:9921");
  CHECK_FALSE(hasWarning(ok("[metrics]\nlisten = \"0.0.0.0:9921\"\n"), "metrics"));
  CHECK(ok("[metrics]\nlisten = \"\"\n").metrics.listen.empty());
  const std::string bad = theError("[metrics]\nlisten = \"pod:9921\"\n");
  CHECK(bad.starts_with("proxy.toml:2:10: metrics.listen: expected an IP address and port"));
  const std::string same =
      theError("[admin]\nlisten = \"127.0.0.1:9000\"\n[metrics]\nlisten = \"127.0.0.1:9000\"\n");
  CHECK(same.find("metrics.listen: 127.0.0.1:9000 is also admin.listen") != std::string::npos);
}

TEST_CASE("config: member ports default to the pool's own gossip ports and are checked",
          "[config][member_ports]") {
  auto serf = ok("[agent]\nprofile = \"serf\"\n");
  CHECK(serf.intercept.member_ports == std::vector<uint16_t>{7946});
  CHECK(serf.intercept.wan_member_ports.empty());
  auto more = ok("[agent]\nprofile = \"serf\"\n[intercept]\nmember_ports = [7948, 7947, 7947]\n");
  CHECK(more.intercept.member_ports == std::vector<uint16_t>{7946, 7947, 7948});
  auto server = ok("[agent]\nserver = true\n[intercept]\nwan_member_ports = [9302]\n");
  CHECK(server.intercept.member_ports == std::vector<uint16_t>{8301});
  CHECK(server.intercept.wan_member_ports == std::vector<uint16_t>{8302, 9302});
  auto errs = errorsOf("[intercept]\nmember_ports = [8300, 0, \"x\"]\nwan_member_ports = [8302]\n");
  REQUIRE(errs.size() == 4);
  CHECK(errs[0].starts_with("proxy.toml:2:1: intercept.member_ports: port 8300 is also rpc"));
  CHECK(errs[1] == "proxy.toml:2:23: intercept.member_ports: expected ports between 1 and 65535");
  CHECK(errs[2] == "proxy.toml:2:26: intercept.member_ports: expected ports between 1 and 65535");
  CHECK(errs[3].starts_with("proxy.toml:3:1: intercept.wan_member_ports: no WAN gossip port"));
  auto both = errorsOf(
      "[agent]\nserver = true\n[intercept]\nmember_ports = [9000]\n"
      "wan_member_ports = [9000]\n");
  REQUIRE_FALSE(both.empty());
  CHECK(both.back().find("both a LAN and a WAN member port") != std::string::npos);
}

TEST_CASE("config: the census holds a fleet by default; its window and size are checked",
          "[config]") {
  CHECK(ok("").census.max_peers == 65536);
  CHECK(ok("").census.window_s == 600);
  CHECK(ok("").metrics.peer_series == 0);
  auto c = ok("[census]\nmax_peers = 200000\nwindow = \"15m\"\n[metrics]\npeer_series = 20\n");
  CHECK(c.census.max_peers == 200000);
  CHECK(c.census.window_s == 900);
  CHECK(c.metrics.peer_series == 20);
  auto errs =
      errorsOf("[census]\nmax_peers = 10\nwindow = \"500ms\"\n[metrics]\npeer_series = 5000\n");
  REQUIRE(errs.size() == 3);
  CHECK(errs[0].starts_with("proxy.toml:2:"));
  CHECK(errs[0].find("census.max_peers") != std::string::npos);
  CHECK(errs[1].starts_with("proxy.toml:3:"));
  CHECK(errs[1].find("census.window: expected a whole number of seconds") != std::string::npos);
  CHECK(errs[2].find("metrics.peer_series") != std::string::npos);
}

TEST_CASE("config: intercept.tproxy_source_ports is a range outside the usual ephemeral ports",
          "[config]") {
  auto c = ok("");
  CHECK(c.intercept.tproxy_source_port_min == 16384);
  CHECK(c.intercept.tproxy_source_port_max == 32767);
  c = ok("[intercept]\ntproxy_source_ports = [1024, 1279]\n");
  CHECK(c.intercept.tproxy_source_port_min == 1024);
  CHECK(c.intercept.tproxy_source_port_max == 1279);
  for (const char* bad : {"[80, 40000]", "[20000, 20100]", "[30000, 70000]", "[40000, 30000]",
                          "[20000]", "\"16384-32767\"", "[20000, \"30000\"]"}) {
    INFO(bad);
    CHECK(theError(std::string("[intercept]\ntproxy_source_ports = ") + bad + "\n")
              .starts_with("proxy.toml:2:23: intercept.tproxy_source_ports: expected [first, "
                           "last]: ports between 1024 and 65535, at least 256"));
  }
}

TEST_CASE("config: runtime.loops is \"auto\" by default, \"auto\" or 1..64", "[config]") {
  CHECK(ok("").runtime.loops == 0);
  CHECK(ok("[runtime]\nloops = \"auto\"\n").runtime.loops == 0);
  CHECK(ok("[runtime]\nloops = 1\n").runtime.loops == 1);
  CHECK(ok("[runtime]\nloops = 64\n").runtime.loops == 64);
  for (const char* bad : {"0", "65", "-1", "\"all\"", "2.5", "true"}) {
    CAPTURE(bad);
    auto errs = errorsOf(std::string("[runtime]\nloops = ") + bad + "\n");
    REQUIRE(errs.size() == 1);
    CHECK(errs[0].starts_with("proxy.toml:2:9: runtime.loops: expected \"auto\""));
  }
}
