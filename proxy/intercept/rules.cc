#include "proxy/intercept/rules.h"

#include <linux/fib_rules.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <set>

#include "proxy/intercept/capabilities.h"
#include "proxy/intercept/command_runner.h"
#include "proxy/intercept/netlink_routes.h"

namespace sidecrypt::proxy {

namespace {

std::string hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%x", v);
  return buf;
}

std::string joined(const std::vector<uint16_t>& ports, const char* sep) {
  std::string out;
  for (auto p : ports) {
    out += (out.empty() ? "" : sep) + std::to_string(p);
  }
  return out;
}

std::vector<uint16_t> unite(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  std::set<uint16_t> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  return {all.begin(), all.end()};
}

// Outbound destination ports: the agent's own ports plus the fleet's member ports. UDP member
// ports only when some gossip port takes UDP (there is no UDP path otherwise).
std::vector<uint16_t> tcpDst(const RuleParams& p) {
  return unite(p.tcp_out, p.member);
}
std::vector<uint16_t> udpDst(const RuleParams& p) {
  return p.udp.empty() ? p.udp : unite(p.udp, p.member);
}

std::string commentText(const RuleParams& p) {
  return "sidecrypt rules " + rulesFingerprint(p);
}

const char* kIptables[2][2] = {{"iptables-nft", "ip6tables-nft"},
                               {"iptables-legacy", "ip6tables-legacy"}};

std::string iptablesBin(RulesBackend b, bool v6, const char* suffix = "") {
  return std::string(kIptables[b == RulesBackend::IptablesLegacy ? 1 : 0][v6 ? 1 : 0]) + suffix;
}

// Counts "-A" lines in an iptables-save dump: whether a backend already holds rules.
size_t ruleCount(const std::string& bin) {
  auto r = runCommand({bin});
  if (r.exit_code != 0) {
    return 0;
  }
  size_t n = 0;
  for (size_t pos = 0; (pos = r.output.find("\n-A ", pos)) != std::string::npos; ++pos) {
    ++n;
  }
  return n;
}

}  // namespace

RuleParams ruleParams(const Config& cfg) {
  RuleParams p;
  const auto& ic = cfg.intercept;
  p.mode = ic.mode;
  p.outbound_port = ic.outbound_port;
  p.inbound_port = ic.inbound_port;
  p.divert_mark = ic.divert_mark;
  p.proxy_mark = ic.proxy_mark;
  p.table = ic.route_table;
  p.priority = ic.rule_priority;
  p.ipv6 = ic.ipv6;
  std::set<uint16_t> tcp_out;
  std::set<uint16_t> tcp_in;
  std::set<uint16_t> udp;
  for (const auto& port : ic.ports) {
    if (port.transport != Transport::Udp) {
      tcp_out.insert(port.port);
      // A client agent has no RPC listener: only servers take inbound RPC
      // (docs/spec/consul-rpc-tls.md §2.7).
      if (port.protocol != PortProtocol::Rpc || cfg.agent.server ||
          cfg.agent.profile == Profile::Custom) {
        tcp_in.insert(port.port);
      }
    }
    if (port.transport != Transport::Tcp) {
      udp.insert(port.port);
    }
  }
  std::set<uint16_t> member(ic.member_ports.begin(), ic.member_ports.end());
  member.insert(ic.wan_member_ports.begin(), ic.wan_member_ports.end());
  p.member.assign(member.begin(), member.end());
  p.tcp_out.assign(tcp_out.begin(), tcp_out.end());
  p.tcp_in.assign(tcp_in.begin(), tcp_in.end());
  p.udp.assign(udp.begin(), udp.end());
  return p;
}

RulesBackend chooseBackend(RulesBackend requested, std::string& why) {
  if (requested != RulesBackend::Auto) {
    why = "configured (intercept.backend)";
    return requested;
  }
  const size_t legacy = ruleCount("iptables-legacy-save") + ruleCount("ip6tables-legacy-save");
  const bool nft_ok = runCommand({"nft", "list", "tables"}).exit_code == 0;
  if (nft_ok && legacy == 0) {
    why = "native nftables works and no iptables-legacy rules exist";
    return RulesBackend::Nft;
  }
  if (legacy > 0) {
    why = std::to_string(legacy) + " iptables-legacy rule(s) present: using the same backend";
    return RulesBackend::IptablesLegacy;
  }
  why = "nft is not usable; iptables-nft";
  return RulesBackend::IptablesNft;
}

std::string rulesFingerprint(const RuleParams& p) {
  // FNV-1a over everything the rules depend on; "v2" changes when the rule layout does.
  std::string text = "v2 mode=" + std::to_string(static_cast<int>(p.mode)) +
                     " tcp_out=" + joined(p.tcp_out, ",") + " tcp_in=" + joined(p.tcp_in, ",") +
                     " udp=" + joined(p.udp, ",") + " member=" + joined(p.member, ",") +
                     " out=" + std::to_string(p.outbound_port) +
                     " in=" + std::to_string(p.inbound_port) + " dm=" + hex(p.divert_mark) +
                     " pm=" + hex(p.proxy_mark) + " table=" + std::to_string(p.table) +
                     " pref=" + std::to_string(p.priority) + " ipv6=" + (p.ipv6 ? "1" : "0");
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : text) {
    h = (h ^ c) * 0x100000001b3ULL;
  }
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string nftRuleset(const RuleParams& p) {
  const std::string dm = hex(p.divert_mark);
  const std::string pm = hex(p.proxy_mark);
  const std::string out = std::to_string(p.outbound_port);
  const std::string in = std::to_string(p.inbound_port);
  const std::string tcp_out = "{ " + joined(tcpDst(p), ", ") + " }";
  const std::string udp_dst = "{ " + joined(udpDst(p), ", ") + " }";
  const std::string comment = " comment \"" + commentText(p) + "\"";
  const std::string tcp_in = "{ " + joined(p.tcp_in, ", ") + " }";
  const std::string udp = "{ " + joined(p.udp, ", ") + " }";
  std::string t = "table inet sidecrypt\ndelete table inet sidecrypt\ntable inet sidecrypt {\n";
  std::vector<const char*> families = {"ip"};
  if (p.ipv6) {
    families.push_back("ip6");
  }
  auto to = [](const char* fam, const std::string& port) {
    return std::string(fam) + " to " + (std::string(fam) == "ip" ? "127.0.0.1" : "[::1]") + ":" +
           port;
  };
  if (p.mode == InterceptMode::Tproxy) {
    t += "  chain prerouting {\n    type filter hook prerouting priority mangle; policy accept;\n";
    // Packets of flows sidecrypt already owns go straight to their socket. A bare SYN is never
    // such a packet: excluding it keeps a reconnect from a 4-tuple still in TIME_WAIT on the
    // tproxy path instead of reaching the agent's own listener (and then the drop rules).
    t += "    meta l4proto tcp tcp flags & (syn | ack) != syn socket transparent 1 meta mark set " +
         dm + " accept\n";
    t += "    meta l4proto udp socket transparent 1 meta mark set " + dm + " accept\n";
    for (const char* fam : families) {
      const std::string nfproto = std::string(fam) == "ip" ? "ipv4" : "ipv6";
      for (const char* proto : {"tcp", "udp"}) {
        if ((std::string(proto) == "udp" ? p.udp : p.tcp_out).empty()) {
          continue;
        }
        t += "    iifname \"lo\" meta mark " + dm + " fib daddr type != local meta nfproto " +
             nfproto + " meta l4proto " + proto + " tproxy " + to(fam, out) + " accept\n";
      }
      // Serf answers its own queries with a UDP packet to its own address (docs/spec/gossip-wire.md
      // §7.1): that answer comes to sidecrypt too, so a key query the agent originates gets
      // sidecrypt's answer for it (sidecrypt delivers it from a non-gossip source port).
      if (!p.udp.empty()) {
        t += "    iifname \"lo\" meta mark != " + pm + " fib daddr type local meta nfproto " +
             nfproto + " udp sport " + udp + " udp dport " + udp + " tproxy " + to(fam, out) +
             " accept\n";
      }
      // nft's tproxy does not drop when no socket listens (iptables' TPROXY does): without the
      // drop lines a peer would reach the plaintext agent directly, and the agent's traffic
      // could leave, while sidecrypt is down. Fail closed.
      t += "    iifname \"lo\" meta mark " + dm + " fib daddr type != local meta nfproto " +
           nfproto + " meta l4proto { tcp, udp } drop\n";
      const std::string inbound =
          "    iifname != \"lo\" fib daddr type local meta nfproto " + nfproto;
      if (!p.tcp_in.empty()) {
        t += inbound + " tcp dport " + tcp_in + " meta mark set " + dm + " tproxy " + to(fam, in) +
             " accept\n";
        t += inbound + " tcp dport " + tcp_in + " drop\n";
      }
      if (!p.udp.empty()) {
        t += inbound + " udp dport " + udp + " meta mark set " + dm + " tproxy " + to(fam, in) +
             " accept\n";
        t += inbound + " udp dport " + udp + " drop\n";
      }
    }
    t += "  }\n";
    t += "  chain output {\n    type route hook output priority mangle; policy accept;\n";
    t += "    meta mark " + dm + " ct mark set meta mark return\n";
    t += "    meta mark " + pm + " return" + comment + "\n";
    t += "    ct mark " + dm + " meta mark set ct mark return\n";
    t += "    fib daddr type local return\n";
    if (!p.tcp_out.empty()) {
      t += "    tcp dport " + tcp_out + " meta mark set " + dm + "\n";
    }
    if (!p.udp.empty()) {
      t += "    udp dport " + udp_dst + " meta mark set " + dm + "\n";
      t += "    udp sport " + udp + " meta mark set " + dm + "\n";
    }
    t += "  }\n";
  } else {
    t += "  chain nat_output {\n    type nat hook output priority -100; policy accept;\n";
    t += "    meta mark " + pm + " return" + comment + "\n    fib daddr type local return\n";
    if (!p.tcp_out.empty()) {
      t += "    tcp dport " + tcp_out + " redirect to :" + out + "\n";
    }
    t += "  }\n  chain nat_prerouting {\n    type nat hook prerouting priority -100; policy "
         "accept;\n";
    if (!p.tcp_in.empty()) {
      t += "    fib daddr type local tcp dport " + tcp_in + " redirect to :" + in + "\n";
    }
    t += "  }\n";
  }
  t += "}\n";
  return t;
}

std::string iptablesRuleset(const RuleParams& p, bool v6) {
  const std::string dm = hex(p.divert_mark);
  const std::string pm = hex(p.proxy_mark);
  const std::string lo = v6 ? "::1" : "127.0.0.1";
  std::string t;
  auto multiport = [](const char* dir, const std::vector<uint16_t>& ports) {
    return std::string("-m multiport --") + dir + " " + joined(ports, ",");
  };
  // multiport takes at most 15 ports per rule: one rule per chunk.
  auto each15 = [](const std::vector<uint16_t>& ports, const auto& emit) {
    for (size_t i = 0; i < ports.size(); i += 15) {
      emit(std::vector<uint16_t>(
          ports.begin() + static_cast<ptrdiff_t>(i),
          ports.begin() + static_cast<ptrdiff_t>(std::min(ports.size(), i + 15))));
    }
  };
  const std::string comment = " -m comment --comment \"" + commentText(p) + "\"";
  if (p.mode == InterceptMode::Tproxy) {
    t += "*mangle\n:SIDECRYPT_PRE - [0:0]\n:SIDECRYPT_OUT - [0:0]\n:SIDECRYPT_DIVERT - [0:0]\n";
    t += "-A SIDECRYPT_DIVERT -j MARK --set-mark " + dm + "\n-A SIDECRYPT_DIVERT -j ACCEPT\n";
    t += "-A SIDECRYPT_PRE -p tcp -m socket --transparent -j SIDECRYPT_DIVERT\n";
    t += "-A SIDECRYPT_PRE -p udp -m socket --transparent -j SIDECRYPT_DIVERT\n";
    t += "-A SIDECRYPT_OUT -m mark --mark " + dm + " -j CONNMARK --save-mark\n";
    t += "-A SIDECRYPT_OUT -m mark --mark " + dm + " -j RETURN\n";
    t += "-A SIDECRYPT_OUT -m mark --mark " + pm + comment + " -j RETURN\n";
    t += "-A SIDECRYPT_OUT -m connmark --mark " + dm + " -j CONNMARK --restore-mark\n";
    t += "-A SIDECRYPT_OUT -m mark --mark " + dm + " -j RETURN\n";
    t += "-A SIDECRYPT_OUT -m addrtype --dst-type LOCAL -j RETURN\n";
    each15(tcpDst(p), [&](const std::vector<uint16_t>& ports) {
      t += "-A SIDECRYPT_OUT -p tcp " + multiport("dports", ports) + " -j MARK --set-mark " + dm +
           "\n";
    });
    each15(udpDst(p), [&](const std::vector<uint16_t>& ports) {
      t += "-A SIDECRYPT_OUT -p udp " + multiport("dports", ports) + " -j MARK --set-mark " + dm +
           "\n";
    });
    if (!p.udp.empty()) {
      t += "-A SIDECRYPT_OUT -p udp " + multiport("sports", p.udp) + " -j MARK --set-mark " + dm +
           "\n";
    }
    const std::string tp_out = " --on-ip " + lo + " --on-port " + std::to_string(p.outbound_port) +
                               " --tproxy-mark " + dm + "\n";
    const std::string tp_in = " --on-ip " + lo + " --on-port " + std::to_string(p.inbound_port) +
                              " --tproxy-mark " + dm + "\n";
    const std::string lo_marked =
        "-A SIDECRYPT_PRE -i lo -m mark --mark " + dm + " -m addrtype ! --dst-type LOCAL -p ";
    if (!p.tcp_out.empty()) {
      t += lo_marked + "tcp -j TPROXY" + tp_out;
    }
    if (!p.udp.empty()) {
      t += lo_marked + "udp -j TPROXY" + tp_out;
    }
    if (!p.udp.empty()) {
      // The agent's answer to its own Serf query (see the nft ruleset).
      t += "-A SIDECRYPT_PRE -i lo -m mark ! --mark " + pm +
           " -m addrtype --dst-type LOCAL -p udp " + multiport("sports", p.udp) + " " +
           multiport("dports", p.udp) + " -j TPROXY" + tp_out;
    }
    if (!p.tcp_in.empty()) {
      t += "-A SIDECRYPT_PRE ! -i lo -m addrtype --dst-type LOCAL -p tcp " +
           multiport("dports", p.tcp_in) + " -j TPROXY" + tp_in;
    }
    if (!p.udp.empty()) {
      t += "-A SIDECRYPT_PRE ! -i lo -m addrtype --dst-type LOCAL -p udp " +
           multiport("dports", p.udp) + " -j TPROXY" + tp_in;
    }
  } else {
    t += "*nat\n:SIDECRYPT_NAT_OUT - [0:0]\n:SIDECRYPT_NAT_IN - [0:0]\n";
    t += "-A SIDECRYPT_NAT_OUT -m mark --mark " + pm + comment + " -j RETURN\n";
    t += "-A SIDECRYPT_NAT_OUT -m addrtype --dst-type LOCAL -j RETURN\n";
    each15(tcpDst(p), [&](const std::vector<uint16_t>& ports) {
      t += "-A SIDECRYPT_NAT_OUT -p tcp " + multiport("dports", ports) +
           " -j REDIRECT --to-ports " + std::to_string(p.outbound_port) + "\n";
    });
    if (!p.tcp_in.empty()) {
      t += "-A SIDECRYPT_NAT_IN -m addrtype --dst-type LOCAL -p tcp " +
           multiport("dports", p.tcp_in) + " -j REDIRECT --to-ports " +
           std::to_string(p.inbound_port) + "\n";
    }
  }
  t += "COMMIT\n";
  return t;
}

namespace {

using Kind = RuleStep::Kind;

void policyRouting(const RuleParams& p, std::vector<RuleStep>& steps, bool install) {
  if (p.mode != InterceptMode::Tproxy) {
    return;
  }
  const std::string pref = std::to_string(p.priority);
  const std::string mark = hex(p.divert_mark);
  const std::string table = std::to_string(p.table);
  std::vector<std::pair<const char*, const char*>> fams = {{"-4", "0.0.0.0/0"}};
  if (p.ipv6) {
    fams.emplace_back("-6", "::/0");
  }
  for (const auto& [fam, any] : fams) {
    const std::vector<std::string> del = {"ip", fam,      "rule", "del",    "pref",
                                          pref, "fwmark", mark,   "lookup", table};
    if (install) {
      // `ip rule add` is not idempotent (docs/spec/interception.md §E.5), but deleting first
      // leaves a moment with no rule, in which marked packets route normally and leave in
      // plaintext: add, then drop older copies down to one.
      // (A kernel that refuses an identical rule answers "File exists": fine, KeepOne then
      // checks that exactly one copy is there.)
      steps.push_back({{"ip", fam, "rule", "add", "pref", pref, "fwmark", mark, "lookup", table},
                       "",
                       Kind::Optional});
      steps.push_back({del,
                       "",
                       Kind::KeepOne,
                       {"ip", fam, "rule", "list", "pref", pref},
                       "fwmark " + mark + " lookup " + table});
      steps.push_back({{"ip", fam, "route", "replace", "local", any, "dev", "lo", "table", table},
                       "",
                       Kind::Must});
    } else {
      steps.push_back({del, "", Kind::Repeat});
      steps.push_back({{"ip", fam, "route", "flush", "table", table}, "", Kind::Optional});
    }
  }
}

struct Jump {
  const char* table;
  const char* hook;
  const char* chain;
};

// e.g. iptables-nft -t mangle -I PREROUTING [1] -j SIDECRYPT_PRE; REDIRECT jumps are TCP only.
std::vector<std::string> jumpArgs(const std::string& bin, const Jump& j, const char* op) {
  std::vector<std::string> args = {bin, "-t", j.table, op, j.hook};
  if (std::string(j.table) == "nat") {
    args.insert(args.end(), {"-p", "tcp"});
  }
  args.insert(args.end(), {"-j", j.chain});
  return args;
}

std::vector<Jump> jumps(const RuleParams& p) {
  if (p.mode == InterceptMode::Tproxy) {
    return {{"mangle", "PREROUTING", "SIDECRYPT_PRE"}, {"mangle", "OUTPUT", "SIDECRYPT_OUT"}};
  }
  return {{"nat", "PREROUTING", "SIDECRYPT_NAT_IN"}, {"nat", "OUTPUT", "SIDECRYPT_NAT_OUT"}};
}

std::vector<const char*> chains(const RuleParams& p) {
  if (p.mode == InterceptMode::Tproxy) {
    return {"SIDECRYPT_PRE", "SIDECRYPT_OUT", "SIDECRYPT_DIVERT"};
  }
  return {"SIDECRYPT_NAT_IN", "SIDECRYPT_NAT_OUT"};
}

}  // namespace

RulePlan installPlan(const RuleParams& p, RulesBackend backend) {
  RulePlan plan{backend, {}};
  policyRouting(p, plan.steps, true);
  if (backend == RulesBackend::Nft) {
    plan.steps.push_back({{"nft", "-f", "-"}, nftRuleset(p), Kind::Must});
    return plan;
  }
  for (bool v6 : {false, true}) {
    if (v6 && !p.ipv6) {
      continue;
    }
    // --noflush: only our chains are (re)created; the load is atomic per table
    // (docs/spec/interception.md §E.5).
    plan.steps.push_back(
        {{iptablesBin(backend, v6, "-restore"), "--noflush"}, iptablesRuleset(p, v6), Kind::Must});
    const std::string bin = iptablesBin(backend, v6);
    for (const auto& j : jumps(p)) {
      // Our jumps go first so a foreign ACCEPT cannot skip them (docs/spec/interception.md §E.3):
      // delete every copy, then insert at position 1.
      plan.steps.push_back({jumpArgs(bin, j, "-D"), "", Kind::Repeat});
      auto insert = jumpArgs(bin, j, "-I");
      insert.insert(insert.begin() + 5, "1");
      plan.steps.push_back({insert, "", Kind::Must});
    }
  }
  return plan;
}

RulePlan removePlan(const RuleParams& p, RulesBackend backend) {
  RulePlan plan{backend, {}};
  if (backend == RulesBackend::Nft) {
    plan.steps.push_back(
        {{"nft", "-f", "-"}, "table inet sidecrypt\ndelete table inet sidecrypt\n", Kind::Must});
  } else {
    for (bool v6 : {false, true}) {
      if (v6 && !p.ipv6) {
        continue;
      }
      const std::string bin = iptablesBin(backend, v6);
      for (const auto& j : jumps(p)) {
        plan.steps.push_back({jumpArgs(bin, j, "-D"), "", Kind::Repeat});
      }
      const char* table = p.mode == InterceptMode::Tproxy ? "mangle" : "nat";
      for (const char* c : chains(p)) {
        plan.steps.push_back({{bin, "-t", table, "-F", c}, "", Kind::Optional});
      }
      for (const char* c : chains(p)) {
        plan.steps.push_back({{bin, "-t", table, "-X", c}, "", Kind::Optional});
      }
    }
  }
  policyRouting(p, plan.steps, false);
  return plan;
}

std::string describePlan(const RulePlan& plan) {
  std::string out = "# backend: " + std::string(toString(plan.backend)) + "\n";
  for (const auto& s : plan.steps) {
    std::string cmd;
    for (const auto& a : s.argv) {
      cmd += (cmd.empty() ? "" : " ") + a;
    }
    if (s.kind == Kind::Repeat) {
      out += "while " + cmd + " 2>/dev/null; do :; done\n";
    } else if (s.kind == Kind::KeepOne) {
      std::string list;
      for (const auto& a : s.list) {
        list += (list.empty() ? "" : " ") + a;
      }
      out += "while [ \"$(" + list + " | grep -c '" + s.needle + "')\" -gt 1 ]; do " + cmd +
             "; done\n" + list + " | grep -q '" + s.needle + "'\n";
    } else if (s.kind == Kind::Optional) {
      out += cmd + " 2>/dev/null || true\n";
    } else if (!s.input.empty()) {
      out += cmd + " <<'EOF'\n" + s.input + "EOF\n";
    } else {
      out += cmd + "\n";
    }
  }
  return out;
}

std::optional<std::string> runPlan(const RulePlan& plan) {
  for (const auto& s : plan.steps) {
    if (s.kind == Kind::Repeat) {
      for (int i = 0; i < 64 && runCommand(s.argv, s.input).exit_code == 0; ++i) {
      }
      continue;
    }
    if (s.kind == Kind::KeepOne) {
      size_t copies = 0;
      std::string listed_out;
      for (int i = 0; i < 64; ++i) {
        const auto listed = runCommand(s.list);
        listed_out = listed.output;
        copies = 0;
        for (size_t pos = 0; (pos = listed.output.find(s.needle, pos)) != std::string::npos;
             pos += s.needle.size()) {
          ++copies;
        }
        if (listed.exit_code != 0 || copies <= 1 || runCommand(s.argv).exit_code != 0) {
          break;
        }
      }
      if (copies == 0) {
        std::string cmd;
        for (const auto& a : s.list) {
          cmd += (cmd.empty() ? "" : " ") + a;
        }
        return cmd + " shows no '" + s.needle + "' after adding it: " + listed_out;
      }
      continue;
    }
    auto r = runCommand(s.argv, s.input);
    if (r.exit_code != 0 && s.kind == Kind::Must) {
      std::string cmd;
      for (const auto& a : s.argv) {
        cmd += (cmd.empty() ? "" : " ") + a;
      }
      while (!r.output.empty() && r.output.back() == '\n') {
        r.output.pop_back();
      }
      return cmd + " failed (exit " + std::to_string(r.exit_code) + "): " + r.output;
    }
  }
  return std::nullopt;
}

bool policyRoutesInstalled(const RuleParams& p, std::string& detail) {
  // Read over rtnetlink in-process, not with `ip`: the proxy runs sandboxed (systemd's
  // SystemCallFilter=~@privileged makes `ip` fail on its capset()), and a dump needs no privilege.
  const std::string pref = std::to_string(p.priority);
  const std::string rule = "fwmark " + hex(p.divert_mark) + " lookup " + std::to_string(p.table);
  const unsigned lo = ::if_nametoindex("lo");
  for (const int family : {AF_INET, AF_INET6}) {
    if (family == AF_INET6 && !p.ipv6) {
      continue;
    }
    const std::string fam = family == AF_INET ? "-4" : "-6";
    std::string error;
    const auto rules = dumpPolicyRules(family, error);
    if (!rules) {
      detail = "cannot read the policy rules (ip " + fam + " rule): " + error;
      return false;
    }
    bool found = false;
    for (const auto& r : *rules) {
      found = found || (r.priority == p.priority && r.has_fwmark && r.fwmark == p.divert_mark &&
                        r.table == p.table && r.action == FR_ACT_TO_TBL);
    }
    if (!found) {
      detail = "policy rule ip " + fam + " pref " + pref + " " + rule + " is missing";
      return false;
    }
    const auto routes = dumpRoutes(family, error);
    if (!routes) {
      detail = "cannot read the routes (ip " + fam + " route): " + error;
      return false;
    }
    found = false;
    for (const auto& r : *routes) {
      found = found || (r.table == p.table && r.type == RTN_LOCAL && r.dst_len == 0 && !r.has_dst &&
                        lo != 0 && r.oif == static_cast<int>(lo));
    }
    if (!found) {
      detail = "local route (ip " + fam + " route show table " + std::to_string(p.table) +
               ") is missing";
      return false;
    }
  }
  detail = "policy routes installed";
  return true;
}

bool rulesInstalled(const RuleParams& p, RulesBackend backend, std::string& detail) {
  if (!haveCapability(kCapNetAdmin)) {
    // Reading nftables or iptables needs CAP_NET_ADMIN, which the data path does not have when
    // it runs with CAP_NET_RAW only and a privileged step installed the rules (systemd
    // ExecStartPre=+, a Kubernetes init container). The policy routes can be read by anyone.
    const char* unread = "netfilter rules not readable without CAP_NET_ADMIN";
    if (p.mode != InterceptMode::Tproxy) {
      detail = std::string(unread) + " (not checked)";
      return true;
    }
    if (!policyRoutesInstalled(p, detail)) {
      return false;
    }
    detail = std::string("policy routes installed; ") + unread;
    return true;
  }
  // Our rules carry the fingerprint of the config they were made from: rules of another
  // config (another profile's ports) are not this instance's rules.
  const std::string mine = commentText(p);
  auto fingerprintOf = [&mine](const std::string& dump, const std::string& where,
                               std::string& why) {
    if (dump.find(mine) != std::string::npos) {
      return true;
    }
    const size_t at = dump.find("sidecrypt rules ");
    why = where + (at == std::string::npos
                       ? " carries no sidecrypt fingerprint (rules of an older sidecrypt?)"
                       : " holds the rules of another configuration (" + dump.substr(at, 32) +
                             ", this config's: " + mine + ")");
    return false;
  };
  if (backend == RulesBackend::Nft) {
    auto r = runCommand({"nft", "list", "table", "inet", "sidecrypt"});
    if (r.exit_code != 0) {
      detail = "nft table inet sidecrypt is missing";
      return false;
    }
    if (!fingerprintOf(r.output, "nft table inet sidecrypt", detail)) {
      return false;
    }
  } else {
    const char* table = p.mode == InterceptMode::Tproxy ? "mangle" : "nat";
    for (bool v6 : {false, true}) {
      if (v6 && !p.ipv6) {
        continue;
      }
      for (const auto& j : jumps(p)) {
        if (runCommand(jumpArgs(iptablesBin(backend, v6), j, "-C")).exit_code != 0) {
          detail = std::string("jump to ") + j.chain + " in " + (v6 ? "ip6 " : "") + j.table + " " +
                   j.hook + " is missing";
          return false;
        }
      }
      auto r = runCommand({iptablesBin(backend, v6, "-save"), "-t", table});
      if (!fingerprintOf(r.output, iptablesBin(backend, v6) + " " + table, detail)) {
        return false;
      }
    }
  }
  if (p.mode == InterceptMode::Tproxy) {
    auto r = runCommand({"ip", "-4", "rule", "list", "pref", std::to_string(p.priority)});
    if (r.output.find("lookup " + std::to_string(p.table)) == std::string::npos) {
      detail = "policy rule pref " + std::to_string(p.priority) + " is missing";
      return false;
    }
  }
  detail = "installed";
  return true;
}

}  // namespace sidecrypt::proxy
