// `sidecrypt doctor`, the checks of The host: capabilities, the netfilter backend, the kernel,
// sidecrypt's rules and policy routes, sysctls, ephemeral ports.
#include "proxy/cli/doctor.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "proxy/cli/admin_client.h"
#include "proxy/cli/commands.h"
#include "proxy/config/config_loader.h"
#include "proxy/intercept/capabilities.h"
#include "proxy/intercept/command_runner.h"
#include "proxy/intercept/instance_lock.h"
#include "proxy/intercept/rules.h"
#include "proxy/net/address.h"

namespace sidecrypt::proxy::cli::doctor {

using nlohmann::json;
namespace fs = std::filesystem;

void Doctor::checkCapabilities() {
  const auto caps = effectiveCapabilities();
  const uint64_t set = caps.value_or(0);
  std::string with;
  std::string without;
  for (int cap : {kCapNetAdmin, kCapNetRaw, kCapNetBindService, kCapSysAdmin}) {
    std::string& list = hasCapability(set, cap) ? with : without;
    list += (list.empty() ? "" : ", ") + capabilityName(cap);
  }
  const std::string have =
      (with.empty() ? "" : "has " + with) +
      (without.empty() ? "" : (with.empty() ? "lacks " : "; lacks ") + without);
  const bool legacy = cfg_.intercept.backend == RulesBackend::IptablesLegacy;
  can_read_rules_ = hasCapability(set, kCapNetAdmin) && (!legacy || hasCapability(set, kCapNetRaw));
  if (!can_read_rules_) {
    add("capabilities", Status::Fail,
        "this doctor " + have + ": reading netfilter rules needs CAP_NET_ADMIN" +
            (legacy ? " and CAP_NET_RAW (iptables-legacy)" : ""),
        "sudo sidecrypt doctor --config " + cfg_path_ + "  # as root");
    return;
  }
  add("capabilities", Status::Ok,
      "this doctor " + have +
          (hasCapability(set, kCapSysAdmin)
               ? ""
               : " (without CAP_SYS_ADMIN there is no scratch namespace: rule contents are not "
                 "compared)"));
}

void Doctor::checkBackend() {
  if (!can_read_rules_) {
    // Without CAP_NET_ADMIN neither nft nor iptables can be read, so the choice would be wrong.
    backend_ =
        cfg_.intercept.backend == RulesBackend::Auto ? RulesBackend::Nft : cfg_.intercept.backend;
    add("backend", Status::Skip,
        "not determined: needs CAP_NET_ADMIN (see capabilities); assuming " +
            std::string(toString(backend_)));
    return;
  }
  backend_ = chooseBackend(cfg_.intercept.backend, backend_why_);
  std::vector<std::string> tools;
  if (backend_ == RulesBackend::Nft) {
    tools = {"nft"};
  } else {
    tools = {iptablesTool(backend_, false), std::string(iptablesTool(backend_, false)) + "-save",
             std::string(iptablesTool(backend_, false)) + "-restore"};
    if (params_.ipv6) {
      tools.emplace_back(iptablesTool(backend_, true));
      tools.push_back(std::string(iptablesTool(backend_, true)) + "-restore");
    }
  }
  if (params_.mode == InterceptMode::Tproxy) {
    tools.emplace_back("ip");
  }
  std::string missing;
  std::string packages;
  for (const auto& t : tools) {
    if (!inPath(t)) {
      missing += (missing.empty() ? "" : ", ") + t;
      const std::string pkg = packageOf(t);
      if (packages.find(pkg) == std::string::npos) {
        packages += " " + pkg;
      }
    }
  }
  const std::string what = std::string(toString(backend_)) + " (" + backend_why_ + ")";
  if (!missing.empty()) {
    add("backend", Status::Fail, what + ": missing " + missing,
        "apt-get install" + packages + "  # or set intercept.backend in " + cfg_path_);
    return;
  }
  add("backend", Status::Ok, what);
}

void Doctor::checkKernel() {
  const char* mode = params_.mode == InterceptMode::Tproxy ? "TPROXY" : "REDIRECT";
  scratch_ = scratchInstall(params_, backend_);
  if (scratch_.loaded) {
    add("kernel", Status::Ok,
        std::string(mode) + " mode: sidecrypt's whole ruleset (" + toString(backend_) +
            ") loads in a scratch network namespace" +
            (params_.mode == InterceptMode::Tproxy ? " (TPROXY, socket match, marks, policy routes)"
                                                   : ""));
    return;
  }
  if (scratch_.available) {
    // The plan did not load: find the feature that is missing.
    std::string missing;
    std::string modules;
    for (const auto& f : featureTrials(backend_, params_.mode)) {
      const std::string script = "ip link set lo up 2>/dev/null; exec \"$@\"";
      std::vector<std::string> argv = {"unshare", "--net", "--", "sh", "-c", script, "sh"};
      argv.insert(argv.end(), f.argv.begin(), f.argv.end());
      if (runCommand(argv, f.input).exit_code != 0) {
        missing += (missing.empty() ? "" : ", ") + std::string(f.name);
        modules += std::string(" ") + f.module;
      }
    }
    if (!missing.empty()) {
      add("kernel", Status::Fail,
          std::string(mode) + " mode: the kernel lacks " + missing + " (" +
              lastLines(scratch_.error, 2) + ")",
          "modprobe" + modules +
              "  # a kernel built without them cannot intercept UDP gossip; on a container host "
              "load them on the node");
    } else {
      add("kernel", Status::Fail,
          std::string(mode) + " mode: sidecrypt's ruleset does not load in a scratch namespace: " +
              lastLines(scratch_.error, 3),
          "sidecrypt rules print --config " + cfg_path_ +
              "  # run the printed commands one by one to see which fails");
    }
    return;
  }
  // No scratch namespace: what is loaded, built in or configured.
  std::vector<std::string> absent;
  const std::string evidence = kernelEvidence(backend_, absent);
  std::string detail;
  if (rulesInstalled(params_, backend_, detail) && can_read_rules_) {
    add("kernel", Status::Ok,
        std::string(mode) + " mode: sidecrypt's rules are loaded here; " + evidence);
  } else if (!absent.empty()) {
    std::string mods;
    for (const auto& m : absent) {
      mods += " " + m;
    }
    add("kernel", Status::Fail, evidence,
        "use a kernel with" + mods + " (intercept.mode = \"redirect\" covers TCP only)");
  } else {
    add("kernel", Status::Warn,
        evidence + " (no scratch namespace for a trial load: " + scratch_.error + ")");
  }
}

void Doctor::checkRules() {
  if (!can_read_rules_) {
    add("rules.netfilter", Status::Skip, "not checked: needs CAP_NET_ADMIN (see capabilities)");
    return;
  }
  auto r = runCommand({"sh", "-c", dumpScript(params_, backend_)});
  real_ = parseDump(r.output);
  const std::string backend = toString(backend_);
  if (backend_ == RulesBackend::Nft) {
    const auto& have = real_["nft"];
    if (have.rc != 0) {
      add("rules.netfilter", Status::Fail, "nft table inet sidecrypt is missing", install_fix_);
      return;
    }
    if (!scratch_.loaded) {
      add("rules.netfilter", Status::Warn,
          "nft table inet sidecrypt is present; its contents were not compared (no scratch "
          "namespace)");
      rules_ok_ = true;
      return;
    }
    const auto diff =
        lineDiff(splitLines(scratch_.dump["nft"].text), splitLines(real_["nft"].text));
    if (!diff.empty()) {
      add("rules.netfilter", Status::Fail,
          "nft table inet sidecrypt is not what `sidecrypt rules install` makes:" + diff,
          install_fix_);
      return;
    }
    rules_ok_ = true;
    add("rules.netfilter", Status::Ok, "nft table inet sidecrypt present and intact");
    return;
  }
  std::string problems;
  bool any = false;
  for (const char* fam : {"4", "6"}) {
    if (fam[0] == '6' && !params_.ipv6) {
      continue;
    }
    const std::string key = std::string("ipt") + fam;
    const std::string tool = iptablesTool(backend_, fam[0] == '6');
    const auto have = ownIptablesLines(real_[key].text);
    if (have.empty()) {
      problems += "\n  " + tool + ": sidecrypt's chains are missing";
      continue;
    }
    any = true;
    if (scratch_.loaded) {
      const auto diff = lineDiff(ownIptablesLines(scratch_.dump[key].text), have);
      if (!diff.empty()) {
        problems += "\n  " + tool + ":" + diff;
      }
    }
    // Our jumps go first: a foreign rule that ends the chain before them would skip them.
    for (const char* hook : {"PREROUTING", "OUTPUT"}) {
      const std::string prefix = std::string("-A ") + hook + " ";
      for (const auto& line : splitLines(real_[key].text)) {
        if (line.rfind(prefix, 0) != 0) {
          continue;
        }
        if (line.find("SIDECRYPT") != std::string::npos) {
          break;
        }
        for (const char* verdict : {"-j ACCEPT", "-j DROP", "-j REJECT", "-j RETURN"}) {
          if (line.find(verdict) != std::string::npos) {
            problems += "\n  " + tool + ": a foreign rule ends " + hook +
                        " before sidecrypt's jump: " + line;
            break;
          }
        }
      }
    }
  }
  if (!problems.empty()) {
    add("rules.netfilter", Status::Fail,
        backend + " rules are missing or not what `sidecrypt rules install` makes:" + problems,
        install_fix_);
    return;
  }
  rules_ok_ = any;
  add("rules.netfilter", scratch_.loaded ? Status::Ok : Status::Warn,
      backend + ": sidecrypt's chains and jumps present" +
          (scratch_.loaded ? " and intact" : "; contents not compared (no scratch namespace)"));
}

void Doctor::checkStaleBackends() {
  if (!can_read_rules_) {
    return;
  }
  std::string stale;
  std::string fix;
  for (RulesBackend other :
       {RulesBackend::Nft, RulesBackend::IptablesNft, RulesBackend::IptablesLegacy}) {
    if (other == backend_) {
      continue;
    }
    bool present = false;
    if (other == RulesBackend::Nft) {
      present =
          inPath("nft") && runCommand({"nft", "list", "table", "inet", "sidecrypt"}).exit_code == 0;
    } else {
      for (bool v6 : {false, true}) {
        const std::string save = std::string(iptablesTool(other, v6)) + "-save";
        if (!inPath(save)) {
          continue;
        }
        for (const char* table : {"mangle", "nat"}) {
          auto r = runCommand({save, "-t", table});
          if (r.exit_code == 0 && r.output.find("SIDECRYPT") != std::string::npos) {
            present = true;
          }
        }
      }
    }
    if (present) {
      stale += (stale.empty() ? "" : ", ") + std::string(toString(other));
      // Either mode's leftovers; the policy routes are shared with the current install, which
      // the fix runs again at the end.
      for (InterceptMode mode : {InterceptMode::Tproxy, InterceptMode::Redirect}) {
        RuleParams p = params_;
        p.mode = mode;
        for (const auto& line : splitLines(describePlan(removePlan(p, other)))) {
          if (line.rfind("ip ", 0) != 0 && line.rfind("while ip ", 0) != 0 &&
              line.rfind("# ", 0) != 0 && fix.find(line + "\n") == std::string::npos) {
            fix += line + "\n";
          }
        }
      }
    }
  }
  if (!stale.empty()) {
    add("rules.stale", Status::Fail,
        "sidecrypt's rules are also installed with " + stale + ", besides " + toString(backend_) +
            " (chosen: " + backend_why_ +
            "): traffic would be intercepted twice; the fix removes the others and installs "
            "the chosen backend's again",
        trimmed(fix) + "\n" + install_fix_);
  }
}

void Doctor::checkPolicyRoutes() {
  if (params_.mode != InterceptMode::Tproxy) {
    add("rules.policy", Status::Info, "not used in REDIRECT mode");
    return;
  }
  if (!can_read_rules_) {
    // ip rule / ip route can be read by anyone, but the dump is made with the rest.
    auto r = runCommand({"sh", "-c", dumpScript(params_, backend_)});
    real_ = parseDump(r.output);
  }
  const std::string rule = "pref " + std::to_string(params_.priority) + " fwmark " +
                           hex(params_.divert_mark) + " lookup " + std::to_string(params_.table);
  const std::string table = std::to_string(params_.table);
  const std::string expect_rule = std::to_string(params_.priority) + ":\tfrom all fwmark " +
                                  hex(params_.divert_mark) + " lookup " + table;
  std::string problems;
  std::string fix_first;  // commands that must run before the (idempotent) install
  for (const char* fam : {"4", "6"}) {
    if (fam[0] == '6' && !params_.ipv6) {
      continue;
    }
    const std::string ip = std::string("ip -") + fam;
    const auto have = ownRuleLines(real_[std::string("rule") + fam].text, params_);
    if (std::find(have.begin(), have.end(), expect_rule) == have.end()) {
      problems += "\n  " + ip + " rule " + rule + " is missing";
    }
    size_t copies = 0;
    for (const auto& line : have) {
      if (line == expect_rule) {
        ++copies;
        continue;
      }
      // Our mark and table under another preference or selector: the install does not
      // touch it, so delete it as listed ("200:\tfrom all fwmark ..." -> pref 200 from all ...).
      problems += "\n  " + ip + " rule: unexpected '" + line + "'";
      const size_t colon = line.find(':');
      std::string args = line.substr(colon + 1);
      args.erase(0, args.find_first_not_of(" \t"));
      fix_first += ip + " rule del pref " + line.substr(0, colon) + " " + args + "\n";
    }
    if (copies > 1) {
      problems += "\n  " + ip + " rule: " + std::to_string(copies) + " copies of sidecrypt's rule";
    }
    const std::string route_key = std::string("route") + fam;
    const std::string routes = trimmed(real_[route_key].text);
    if (routes.find("local default dev lo") == std::string::npos) {
      problems += "\n  " + ip + " route: the local default route in table " + table + " is missing";
    } else if (scratch_.loaded && routes != trimmed(scratch_.dump[route_key].text)) {
      problems += "\n  " + ip + " route show table " + table +
                  " holds other routes too (does something else use table " + table +
                  "?):" + lineDiff(splitLines(scratch_.dump[route_key].text), splitLines(routes));
      fix_first += ip + " route flush table " + table + "  # if another program owns table " +
                   table + ", set intercept.route_table to a free one instead\n";
    }
  }
  if (!problems.empty()) {
    add("rules.policy", Status::Fail, "policy routing is not intact:" + problems,
        fix_first + install_fix_);
    rules_ok_ = false;
    return;
  }
  add("rules.policy", Status::Ok,
      "ip rule " + rule + " and the local route in table " + std::to_string(params_.table) +
          (params_.ipv6 ? " (IPv4 and IPv6)" : " (IPv4)"));
}

void Doctor::checkSysctls() {
  auto value = [](const std::string& key) {
    std::string path = "/proc/sys/" + key;
    std::replace(path.begin() + 10, path.end(), '.', '/');
    const std::string v = trimmed(readFile(path));
    return v.empty() ? std::string("?") : v;
  };
  const std::string rp_all = value("net.ipv4.conf.all.rp_filter");
  const std::string rp_lo = value("net.ipv4.conf.lo.rp_filter");
  std::string detail = "net.ipv4.conf.all.rp_filter=" + rp_all + ", lo.rp_filter=" + rp_lo +
                       " (any value works: looped-back packets keep their output route)";
  detail += "; net.ipv4.ip_forward=" + value("net.ipv4.ip_forward") +
            " (not needed: only this host's own traffic is intercepted)";
  detail += "; net.ipv4.conf.all.route_localnet=" + value("net.ipv4.conf.all.route_localnet") +
            " (not needed: no DNAT to 127.0.0.1)";
  add("sysctl", Status::Info, detail);
  checkEphemeralPorts();
  checkTproxySourcePorts();
  if (params_.ipv6) {
    if (!fs::exists("/proc/net/if_inet6")) {
      add("ipv6", Status::Fail,
          "intercept.ipv6 = true, but this kernel has no IPv6 (no /proc/net/if_inet6): the IPv6 "
          "rules and routes cannot be installed",
          "set intercept.ipv6 = false in " + cfg_path_);
    } else if (value("net.ipv6.conf.all.disable_ipv6") == "1") {
      add("ipv6", Status::Info,
          "net.ipv6.conf.all.disable_ipv6=1: the IPv6 rules are installed but carry nothing");
    }
  }
}

// sidecrypt's own listening ports must not be handed out as ephemeral ports: an outgoing
// connection holding one (even one lingering in FIN_WAIT2 after its process ended) makes the
// next start or restart fail with "Address already in use".
void Doctor::checkEphemeralPorts() {
  std::istringstream range(readFile("/proc/sys/net/ipv4/ip_local_port_range"));
  unsigned low = 0;
  unsigned high = 0;
  if (!(range >> low >> high)) {
    add("sysctl.ports", Status::Skip, "cannot read net.ipv4.ip_local_port_range");
    return;
  }
  // ip_local_reserved_ports: "15001,15006" or ranges "15000-15010", comma-separated.
  const std::string reserved_text = trimmed(readFile("/proc/sys/net/ipv4/ip_local_reserved_ports"));
  auto reserved = [&reserved_text](unsigned port) {
    std::istringstream in(reserved_text);
    std::string item;
    while (std::getline(in, item, ',')) {
      const size_t dash = item.find('-');
      unsigned a = 0;
      unsigned b = 0;
      const char* end = item.data() + item.size();
      const char* mid = dash == std::string::npos ? end : item.data() + dash;
      if (std::from_chars(item.data(), mid, a).ec != std::errc()) {
        continue;
      }
      b = a;
      if (mid != end && std::from_chars(mid + 1, end, b).ec != std::errc()) {
        continue;
      }
      if (port >= a && port <= b) {
        return true;
      }
    }
    return false;
  };
  std::vector<std::pair<std::string, uint16_t>> own;
  if (!cfg_.intercept.ports.empty()) {
    own.emplace_back("intercept.outbound_port", cfg_.intercept.outbound_port);
    own.emplace_back("intercept.inbound_port", cfg_.intercept.inbound_port);
  }
  const auto admin = SocketAddress::parse(cfg_.admin.listen);
  if (admin.valid()) {
    own.emplace_back("admin.listen", admin.port());
  }
  if (const auto metrics = SocketAddress::parse(cfg_.metrics.listen); metrics.valid()) {
    own.emplace_back("metrics.listen", metrics.port());
  }
  for (const auto& l : cfg_.listeners) {
    own.emplace_back("listener " + l.name, l.listen.port());
  }
  std::string exposed;
  std::vector<uint16_t> to_reserve;
  for (const auto& [what, port] : own) {
    if (port >= low && port <= high && !reserved(port)) {
      exposed += (exposed.empty() ? "" : ", ") + what + " " + std::to_string(port);
      to_reserve.push_back(port);
    }
  }
  const std::string where =
      "net.ipv4.ip_local_port_range=" + std::to_string(low) + "-" + std::to_string(high) +
      ", ip_local_reserved_ports=" + (reserved_text.empty() ? "(none)" : reserved_text);
  if (exposed.empty()) {
    add("sysctl.ports", Status::Ok,
        "sidecrypt's listening ports are outside the ephemeral range (" + where + ")");
    return;
  }
  std::string list = reserved_text;
  for (uint16_t port : to_reserve) {
    list += (list.empty() ? "" : ",") + std::to_string(port);
  }
  add("sysctl.ports", Status::Warn,
      "inside the ephemeral port range and not reserved: " + exposed + " (" + where +
          "); an outgoing connection that happens to use one of them makes sidecrypt's next "
          "start fail with \"Address already in use\"",
      "sysctl -w net.ipv4.ip_local_reserved_ports=" + list +
          "  # and the same line in /etc/sysctl.d/ to keep it");
}

// With TPROXY, connections to the agent leave from the peer's address with a port of
// intercept.tproxy_source_ports; a peer picking the same port for its own connection to the agent
// would hang (docs/deployment.md, "Source ports of spoofed connections"). Peers usually share this
// host's ephemeral range, so an overlap with it is reported.
void Doctor::checkTproxySourcePorts() {
  const auto& ic = cfg_.intercept;
  if (ic.mode != InterceptMode::Tproxy || ic.ports.empty()) {
    return;
  }
  std::istringstream range(readFile("/proc/sys/net/ipv4/ip_local_port_range"));
  unsigned low = 0;
  unsigned high = 0;
  if (!(range >> low >> high)) {
    add("sysctl.tproxy_ports", Status::Skip, "cannot read net.ipv4.ip_local_port_range");
    return;
  }
  const std::string ours =
      "intercept.tproxy_source_ports=" + std::to_string(ic.tproxy_source_port_min) + "-" +
      std::to_string(ic.tproxy_source_port_max);
  const std::string host =
      "net.ipv4.ip_local_port_range=" + std::to_string(low) + "-" + std::to_string(high);
  if (ic.tproxy_source_port_max < low || ic.tproxy_source_port_min > high) {
    add("sysctl.tproxy_ports", Status::Ok,
        ours + " is outside this host's ephemeral range (" + host + ")");
    return;
  }
  add("sysctl.tproxy_ports", Status::Warn,
      ours + " overlaps this host's ephemeral range (" + host +
          "); peers with the same range may open a connection to the agent with a source port "
          "sidecrypt holds on their address, and that connection hangs",
      "set intercept.tproxy_source_ports to a range outside every peer's ephemeral ports");
}

}  // namespace sidecrypt::proxy::cli::doctor
