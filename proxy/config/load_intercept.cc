// [intercept], its [[intercept.port]] tables and the member ports of each gossip pool: what
// the interception rules are built from.

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "proxy/config/loader.h"

namespace sidecrypt::proxy::config_detail {

namespace {

const std::vector<std::string_view> kPortKeys = {"port", "protocol", "transport", "pool", "name"};

}  // namespace

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
  if (auto ms = getDurationMs(
          t, s, "drain_time", [](uint32_t) { return true; },
          "expected a duration such as \"5s\" (0s for none)")) {
    ic.drain_ms = *ms;
  }
  if (const auto* n = find(t, "tproxy_source_ports")) {
    const auto* a = n->as_array();
    const auto lo = a != nullptr && a->size() == 2 ? a->get(0)->value<int64_t>() : std::nullopt;
    const auto hi = a != nullptr && a->size() == 2 ? a->get(1)->value<int64_t>() : std::nullopt;
    if (!lo || !hi || !a->get(0)->is_integer() || !a->get(1)->is_integer() || *lo < 1024 ||
        *hi > 65535 || *hi - *lo < 255) {
      error(*n, s + ".tproxy_source_ports",
            "expected [first, last]: ports between 1024 and 65535, at least 256 of them, e.g. "
            "[16384, 32767]");
    } else {
      ic.tproxy_source_port_min = static_cast<uint16_t>(*lo);
      ic.tproxy_source_port_max = static_cast<uint16_t>(*hi);
    }
  }
  getPortList(t, s, "member_ports", ic.member_ports);
  getPortList(t, s, "wan_member_ports", ic.wan_member_ports);
  const auto* ports = find(t, "port");
  if (ports == nullptr) {
    return;
  }
  ports_given = ports->is_array_of_tables();
  for (const auto& [e, pt, sec] : tablesOf(*ports, "intercept.port", kPortKeys)) {
    PortSpec p;
    if (auto v = getInt(pt, sec, "port", 1, 65535)) {
      p.port = static_cast<uint16_t>(*v);
    } else if (pt.get("port") == nullptr) {
      error(e, sec + ".port", "missing required key 'port'");
    }
    getEnum<PortProtocol>(pt, sec, "protocol",
                          {{"gossip", PortProtocol::Gossip},
                           {"rpc", PortProtocol::Rpc},
                           {"dskit", PortProtocol::Dskit}},
                          p.protocol);
    const bool tcp_only = p.protocol != PortProtocol::Gossip;
    p.transport = tcp_only ? Transport::Tcp : Transport::Both;
    if (getEnum<Transport>(
            pt, sec, "transport",
            {{"udp", Transport::Udp}, {"tcp", Transport::Tcp}, {"both", Transport::Both}},
            p.transport) &&
        tcp_only && p.transport != Transport::Tcp) {
      error(*pt.get("transport"), sec + ".transport",
            std::string("the ") + toString(p.protocol) + " protocol is TCP only");
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

}  // namespace sidecrypt::proxy::config_detail
