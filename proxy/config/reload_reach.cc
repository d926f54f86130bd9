#include "proxy/config/reload_reach.h"

#include <algorithm>
#include <array>
#include <tuple>

#include "proxy/config/config_loader.h"

namespace sidecrypt::proxy {

namespace {

std::string text(bool b) {
  return b ? "true" : "false";
}

std::string text(const std::vector<uint16_t>& ports) {
  std::string out = "[";
  for (size_t i = 0; i < ports.size(); ++i) {
    out += (i == 0 ? "" : ", ") + std::to_string(ports[i]);
  }
  return out + "]";
}

std::string quoted(const std::string& s) {
  return "\"" + s + "\"";
}

const char* profileName(Profile p) {
  switch (p) {
    case Profile::Consul:
      return "consul";
    case Profile::Serf:
      return "serf";
    case Profile::Custom:
      return "custom";
    case Profile::Alertmanager:
      return "alertmanager";
    case Profile::GrafanaAlerting:
      return "grafana-alerting";
    case Profile::Nomad:
      return "nomad";
  }
  return "?";
}

std::string portsText(const Config& c) {
  std::string out;
  for (const auto& p : c.intercept.ports) {
    out += (out.empty() ? "" : ", ") + p.name + " " + std::to_string(p.port) + " " +
           toString(p.protocol) + " " + toString(p.transport) + " " +
           (p.pool == GossipPool::Lan ? "lan" : "wan");
  }
  return out.empty() ? "none" : out;
}

using R = ReloadReach;

// Explanations several keys share.
constexpr std::string_view kNextGossip =
    "the next packet and the next stream; established streams keep their stage";
constexpr std::string_view kKeyringFile = "re-read; a bad file fails the reload";
constexpr std::string_view kTlsFile =
    "re-read; new connections use it, established ones keep their session";
constexpr std::string_view kNewRpc = "new RPC connections";
constexpr std::string_view kServerName = "the server name new RPC connections expect";
constexpr std::string_view kAtStop = "read when sidecrypt stops";
constexpr std::string_view kMemberPorts =
    "the rules capture them: `sidecrypt rules install`, then restart";
constexpr std::string_view kLogLine = "the next log line";

// Every key of the loader's schema (configKeys()), in its order. "Live" means: the next packet,
// connection, request or log line uses the new value; established connections keep what they
// started with.
const std::array kTable = {
    ReloadReachEntry{"agent.profile", R::Restart,
                     "chooses the intercepted ports, hence the capture sockets and the rules",
                     [](const Config& c) { return std::string(profileName(c.agent.profile)); }},
    ReloadReachEntry{"agent.server", R::Restart,
                     "adds the WAN gossip port and inbound RPC (sockets and rules)",
                     [](const Config& c) { return text(c.agent.server); }},
    ReloadReachEntry{"agent.node_name", R::Restart, "the census's name for this node",
                     [](const Config& c) { return quoted(c.agent.node_name); }},
    ReloadReachEntry{"agent.datacenter", R::Live, kServerName},
    ReloadReachEntry{"agent.domain", R::Live, kServerName},
    ReloadReachEntry{"agent.data_dir", R::Reopened,
                     "the keyring files at their default paths are re-read from it"},
    ReloadReachEntry{"gossip.encrypt", R::Reopened,
                     "creates a missing keyring file; an existing one is re-read and wins"},
    ReloadReachEntry{"gossip.encrypt_verify_incoming", R::Live, kNextGossip},
    ReloadReachEntry{"gossip.encrypt_verify_outgoing", R::Live, kNextGossip},
    ReloadReachEntry{"gossip.keyring_file", R::Reopened, kKeyringFile},
    ReloadReachEntry{"gossip.wan_keyring_file", R::Reopened, kKeyringFile},
    ReloadReachEntry{"gossip.label", R::Live,
                     "the next packet and the next stream; established streams keep theirs"},
    ReloadReachEntry{"gossip.max_streams_per_source", R::Live, "the next inbound gossip stream"},
    ReloadReachEntry{"tls.ca_file", R::Reopened, kTlsFile},
    ReloadReachEntry{"tls.ca_path", R::Reopened, kTlsFile},
    ReloadReachEntry{"tls.cert_file", R::Reopened, kTlsFile},
    ReloadReachEntry{"tls.key_file", R::Reopened, kTlsFile},
    ReloadReachEntry{"tls.verify_incoming", R::Live, kNewRpc},
    ReloadReachEntry{"tls.verify_outgoing", R::Live, kNewRpc},
    ReloadReachEntry{"tls.verify_server_hostname", R::Live, kNewRpc},
    ReloadReachEntry{"tls.tls_min_version", R::Live, kNewRpc},
    ReloadReachEntry{"tls.tls_cipher_suites", R::Live, kNewRpc},
    ReloadReachEntry{"tls.rpc_handshake_timeout", R::Live, kNewRpc},
    ReloadReachEntry{"tls.rpc_max_conns_per_client", R::Live, "the next inbound RPC connection"},
    ReloadReachEntry{"tls.session_resumption", R::Live, kNewRpc},
    ReloadReachEntry{"tls.datacenter", R::Live, "new outbound RPC connections"},
    ReloadReachEntry{"tls.watch", R::Live,
                     "the watch starts or stops; the files it watches follow the new paths"},
    ReloadReachEntry{"tls.watch_debounce", R::Live, "the next change of a watched file"},
    ReloadReachEntry{"intercept.mode", R::Restart, "the capture sockets and the rules",
                     [](const Config& c) {
                       return std::string(c.intercept.mode == InterceptMode::Tproxy ? "tproxy"
                                                                                    : "redirect");
                     }},
    ReloadReachEntry{"intercept.backend", R::Restart, "the rules installed and checked",
                     [](const Config& c) { return std::string(toString(c.intercept.backend)); }},
    ReloadReachEntry{"intercept.install_rules", R::Restart, "rules are installed at start",
                     [](const Config& c) { return text(c.intercept.install_rules); }},
    ReloadReachEntry{"intercept.unsafe_remove_rules_on_exit", R::Live, kAtStop},
    ReloadReachEntry{"intercept.ipv6", R::Restart, "the IPv6 capture sockets and rules",
                     [](const Config& c) { return text(c.intercept.ipv6); }},
    ReloadReachEntry{"intercept.outbound_port", R::Restart, "a capture socket and the rules",
                     [](const Config& c) { return std::to_string(c.intercept.outbound_port); }},
    ReloadReachEntry{"intercept.inbound_port", R::Restart, "a capture socket and the rules",
                     [](const Config& c) { return std::to_string(c.intercept.inbound_port); }},
    ReloadReachEntry{"intercept.divert_mark", R::Restart, "the rules and the policy routes",
                     [](const Config& c) { return std::to_string(c.intercept.divert_mark); }},
    ReloadReachEntry{"intercept.proxy_mark", R::Restart, "the rules and sidecrypt's own sockets",
                     [](const Config& c) { return std::to_string(c.intercept.proxy_mark); }},
    ReloadReachEntry{"intercept.route_table", R::Restart, "the policy routes",
                     [](const Config& c) { return std::to_string(c.intercept.route_table); }},
    ReloadReachEntry{"intercept.rule_priority", R::Restart, "the policy routes",
                     [](const Config& c) { return std::to_string(c.intercept.rule_priority); }},
    ReloadReachEntry{"intercept.drain_time", R::Live, kAtStop},
    ReloadReachEntry{"intercept.tproxy_source_ports", R::Live,
                     "the next connection to the agent from a peer's address"},
    ReloadReachEntry{"intercept.port", R::Restart,
                     "the intercepted ports: capture sockets and rules (also follows "
                     "agent.profile and agent.server)",
                     portsText},
    ReloadReachEntry{"intercept.member_ports", R::Restart, kMemberPorts,
                     [](const Config& c) { return text(c.intercept.member_ports); }},
    ReloadReachEntry{"intercept.wan_member_ports", R::Restart, kMemberPorts,
                     [](const Config& c) { return text(c.intercept.wan_member_ports); }},
    ReloadReachEntry{"admin.listen", R::Restart,
                     "bound at start (the reload itself may be answering on it)",
                     [](const Config& c) { return quoted(c.admin.listen); }},
    ReloadReachEntry{"admin.unsafe_allow_remote", R::Live,
                     "only checks admin.listen, which needs a restart"},
    ReloadReachEntry{"metrics.listen", R::Restart, "bound at start",
                     [](const Config& c) { return quoted(c.metrics.listen); }},
    ReloadReachEntry{"metrics.peer_series", R::Live, "the next scrape"},
    ReloadReachEntry{"census.max_peers", R::Live, "at once (a smaller census evicts as it fills)"},
    ReloadReachEntry{"census.window", R::Live, "the next scrape and check"},
    ReloadReachEntry{"log.level", R::Live, kLogLine},
    ReloadReachEntry{"log.format", R::Live, kLogLine},
    ReloadReachEntry{
        "runtime.loops", R::Restart, "the event loop threads are started with the process",
        [](const Config& c) {
          return c.runtime.loops == 0 ? quoted("auto") : std::to_string(c.runtime.loops);
        }},
    ReloadReachEntry{"listener", R::Reopened,
                     "a kept listen address keeps its socket, a removed listener stops accepting "
                     "(its connections go on), a new one is bound; one that cannot be bound fails "
                     "the reload"},
};

// Where `key` is in the file (else its section), as "file:line:column".
std::string where(const Config& c, const std::string& key) {
  std::string file = c.source.empty() ? "proxy.toml" : c.source.string();
  auto it = c.positions.find(key);
  if (it == c.positions.end()) {
    it = c.positions.find(key.substr(0, key.find('.')));
  }
  if (it == c.positions.end()) {
    return file;
  }
  return file + ":" + std::to_string(it->second.first) + ":" + std::to_string(it->second.second);
}

}  // namespace

const char* toString(ReloadReach r) {
  switch (r) {
    case ReloadReach::Live:
      return "applied";
    case ReloadReach::Reopened:
      return "re-read";
    case ReloadReach::Restart:
      return "needs a restart";
  }
  return "?";
}

std::span<const ReloadReachEntry> reloadReach() {
  return kTable;
}

std::vector<std::string> reloadRefusals(const Config& running, const Config& next) {
  std::vector<std::tuple<uint32_t, uint32_t, std::string>> found;
  for (const auto& e : kTable) {
    if (e.reach != ReloadReach::Restart) {
      continue;
    }
    const std::string before = e.value(running);
    const std::string after = e.value(next);
    if (before == after) {
      continue;
    }
    const std::string key(e.key);
    auto at = next.positions.find(key);
    const auto pos =
        at == next.positions.end() ? std::pair<uint32_t, uint32_t>{UINT32_MAX, 0} : at->second;
    found.emplace_back(pos.first, pos.second,
                       where(next, key) + ": " + key + ": changed from " + before + " to " + after +
                           ", which needs a restart (" + std::string(e.how) +
                           "); the reload changed nothing: restart sidecrypt, or put the "
                           "running value back");
  }
  std::stable_sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    return std::tie(std::get<0>(a), std::get<1>(a)) < std::tie(std::get<0>(b), std::get<1>(b));
  });
  std::vector<std::string> out;
  out.reserve(found.size());
  for (auto& f : found) {
    out.push_back(std::move(std::get<2>(f)));
  }
  return out;
}

std::string reloadReachMarkdown() {
  std::string out = "| key | on reload | what |\n| --- | --- | --- |\n";
  for (const auto& e : kTable) {
    out += "| `" + std::string(e.key) + "` | " + toString(e.reach) + " | " + std::string(e.how) +
           " |\n";
  }
  return out;
}

}  // namespace sidecrypt::proxy
