#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proxy/net/address.h"

#include "filters/common/direction.h"
#include "filters/common/secret_bytes.h"
#include "filters/rpc_tls/tls_version.h"

namespace sidecrypt::proxy {

// Where a value came from, for messages like "proxy.toml:12:3: gossip.encrypt: ...".
struct SourceRef {
  std::string file;
  uint32_t line = 0;
  uint32_t column = 0;
  std::string key;  // dotted path, e.g. "gossip.encrypt"
};

// Which product sidecrypt sits beside (agent.profile): its ports and whether its gossip carries
// Serf (key-manager queries are answered only then). docs/products/ has a page per product.
enum class Profile : uint8_t { Consul, Serf, Custom, Alertmanager, GrafanaAlerting, Nomad };
// Consul, Serf and Nomad run Serf over memberlist (key rotation by Serf key-manager queries);
// Alertmanager and Grafana alerting use memberlist alone. "custom" keeps the answering on: it
// acts only on a user message that decodes as a Serf query named _serf_*-key.
inline bool profileSpeaksSerf(Profile p) {
  return p != Profile::Alertmanager && p != Profile::GrafanaAlerting;
}
enum class InterceptMode : uint8_t { Tproxy, Redirect };
// Dskit: Grafana dskit's TCP-only memberlist transport (docs/spec/dskit-transport.md), sealed with
// the port's gossip pool (docs/products/dskit.md).
enum class PortProtocol : uint8_t { Gossip, Rpc, Dskit };
enum class Transport : uint8_t { Udp, Tcp, Both };
enum class GossipPool : uint8_t { Lan, Wan };
using filters::rpc_tls::TlsVersion;
enum class LogFormat : uint8_t { Text, Json };

struct AgentConfig {
  Profile profile = Profile::Consul;
  bool server = false;  // Consul's `server`: fronting a server (inbound RPC, WAN pool)
  std::string node_name;
  std::string datacenter = "dc1";
  std::string domain = "consul";
  std::filesystem::path data_dir = "/var/lib/sidecrypt";
};

struct GossipConfig {
  // The key from `encrypt`, decoded into locked memory; the text in the parsed TOML is wiped.
  std::shared_ptr<const filters::SecretBytes> encrypt;
  bool encrypt_verify_incoming = true;  // Consul's defaults
  bool encrypt_verify_outgoing = true;
  std::filesystem::path keyring_file;      // LAN; default <data_dir>/serf/local.keyring
  std::filesystem::path wan_keyring_file;  // WAN (servers); default <data_dir>/serf/remote.keyring
  std::string label;                       // memberlist label (HEAD); empty as in Consul CE
  // Concurrent inbound gossip TCP streams per peer address (0 = no limit). memberlist opens one
  // per push/pull or reliable message and closes it within TCPTimeout: a handful at most.
  uint32_t max_streams_per_source = 64;
};

// Servers of another datacenter (WAN), by address: verify_server_hostname then checks
// server.<name>.<domain> for them instead of the local datacenter.
struct DatacenterRoute {
  std::string name;
  std::vector<Cidr> addresses;
};

struct TlsConfig {
  std::filesystem::path ca_file;
  std::filesystem::path ca_path;
  std::filesystem::path cert_file;
  std::filesystem::path key_file;
  bool verify_incoming = false;  // Consul's defaults; a warning says what this accepts
  bool verify_outgoing = false;
  bool verify_server_hostname = false;
  TlsVersion tls_min_version = TlsVersion::Tls12;
  std::vector<std::string> tls_cipher_suites;  // IANA names as Consul spells them
  uint32_t rpc_handshake_timeout_ms = 5000;    // Consul limits.rpc_handshake_timeout
  uint32_t rpc_max_conns_per_client = 100;     // Consul limits.rpc_max_conns_per_client
  bool session_resumption = true;              // TLS session tickets / cached sessions
  std::vector<DatacenterRoute> datacenters;    // [[tls.datacenter]]
  // Watch cert_file, key_file, ca_file and ca_path and swap in a new set once it is complete and
  // valid (proxy/tlswatch/). watch_debounce: quiet time after the last change.
  bool watch = true;
  uint32_t watch_debounce_ms = 500;
};

struct PortSpec {
  uint16_t port = 0;
  PortProtocol protocol = PortProtocol::Gossip;
  Transport transport = Transport::Both;
  GossipPool pool = GossipPool::Lan;
  std::string name;  // "serf_lan", "rpc", ...
};

enum class RulesBackend : uint8_t { Auto, Nft, IptablesNft, IptablesLegacy };

struct InterceptConfig {
  InterceptMode mode = InterceptMode::Tproxy;
  RulesBackend backend = RulesBackend::Auto;
  bool install_rules = false;  // `sidecrypt run` installs its own rules at start
  // Fail closed: rules stay when sidecrypt exits, so the agent's gossip and RPC are dropped
  // rather than sent in plaintext. true removes them on exit (traffic then flows unencrypted).
  bool unsafe_remove_rules_on_exit = false;
  bool ipv6 = true;
  uint16_t outbound_port = 15001;  // capture port for the agent's outgoing traffic
  uint16_t inbound_port = 15006;   // capture port for peers' traffic to the agent
  uint32_t divert_mark = 0x539;    // fwmark routed to lo; also marks spoofed-source deliveries
  uint32_t proxy_mark = 0x53a;     // SO_MARK of sidecrypt's own outward sockets (never captured)
  uint32_t route_table = 133;
  uint32_t rule_priority = 100;  // `ip rule` preference; must precede foreign catch-all rules
  uint32_t drain_ms = 5000;      // on SIGTERM, keep forwarding this long (agent's leave)
  // Source ports of the connections sidecrypt opens to the agent from a peer's own address
  // (TPROXY, inbound): a range outside the peers' ephemeral ports, so that such a connection
  // never takes the 4-tuple of one the peer itself opens to the agent (docs/deployment.md,
  // "Source ports of spoofed connections").
  uint16_t tproxy_source_port_min = 16384;
  uint16_t tproxy_source_port_max = 32767;
  std::vector<PortSpec> ports;  // filled from the profile unless given explicitly
  // The fleet's gossip port plan: every port other members of the LAN (WAN) pool listen on.
  // The agent's TCP and UDP to any address on these ports is intercepted (sealed, or dropped
  // while sidecrypt is down), whatever its source port. Always includes the pool's own gossip
  // ports; filled and validated by the loader.
  std::vector<uint16_t> member_ports;
  std::vector<uint16_t> wan_member_ports;
};

// An explicit RPC listener (no netfilter): a fixed listen address and a fixed upstream.
// Outbound: the agent (or a client) connects here in plaintext and sidecrypt dials `upstream`
// with Consul's RPC TLS; inbound: peers connect here with Consul's RPC TLS (0x03) and sidecrypt
// hands the plaintext stream to `upstream` (the agent). Used with Consul's advertise_addrs.
using ListenerDirection = filters::Direction;
struct ListenerConfig {
  std::string name;
  SocketAddress listen;
  SocketAddress upstream;
  ListenerDirection direction = ListenerDirection::Outbound;
};

struct AdminConfig {
  std::string listen = "127.0.0.1:9920";
  bool unsafe_allow_remote = false;
};

// The read-only metrics listener: GET /metrics and GET /ready only, never reload or the member
// list, so it may listen on a pod or host address for a cluster Prometheus. Empty: off.
struct MetricsConfig {
  std::string listen = "127.0.0.1:9921";
  // Per-peer series (sidecrypt_peer_*_total{peer,node}) for the top K peers by plaintext volume.
  // 0 (default): none, so the series count does not grow with the fleet.
  uint32_t peer_series = 0;
};

// The per-peer census behind `sidecrypt status`, /peers and the rollout checks.
struct CensusConfig {
  uint32_t max_peers = 65536;  // peers by IP and gossip members by name, each
  uint32_t window_s = 600;     // window of the census gauges and sidecrypt_check_ok
};

// [runtime]: how the process uses the machine.
struct RuntimeConfig {
  // Event loops (docs/architecture.md, "Worker loops"): 1..64, or 0 = "auto" (default), the CPUs
  // the process may use (resolved at start). 1: one loop, no extra thread.
  uint32_t loops = 0;
};

struct LogConfig {
  std::string level = "info";  // trace|debug|info|warn|error|critical|off
  LogFormat format = LogFormat::Text;
};

struct Config {
  std::filesystem::path source;
  AgentConfig agent;
  GossipConfig gossip;
  TlsConfig tls;
  InterceptConfig intercept;
  AdminConfig admin;
  MetricsConfig metrics;
  CensusConfig census;
  std::vector<ListenerConfig> listeners;  // [[listener]]
  LogConfig log;
  RuntimeConfig runtime;
  // Settings that are legal but weaken a safe default; logged at startup and by check-config.
  std::vector<std::string> warnings;
  // Where each key and section given in the file starts ("log.level" -> line, column), for
  // messages after loading (a reload refusing a change names the line).
  std::map<std::string, std::pair<uint32_t, uint32_t>> positions;
};

const char* toString(TlsVersion v);
const char* toString(Transport t);
const char* toString(PortProtocol p);
const char* toString(RulesBackend b);  // "nft", "iptables-legacy": as proxy.toml spells it

}  // namespace sidecrypt::proxy
