// `sidecrypt doctor`, the checks of The running proxy: its capabilities, /ready, the instance lock,
// member ports, and a TCP connect through each intercepted port.
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

void Doctor::checkProxyCapabilities() {
  std::vector<int> need;
  std::vector<std::string> why;
  if (params_.mode == InterceptMode::Tproxy) {
    need.push_back(kCapNetRaw);
    why.emplace_back("CAP_NET_RAW: transparent sockets, raw UDP sender");
  }
  if (cfg_.intercept.install_rules ||
      (params_.mode == InterceptMode::Tproxy && kernelBefore(5, 17))) {
    need.push_back(kCapNetAdmin);
    why.emplace_back(cfg_.intercept.install_rules ? "CAP_NET_ADMIN: intercept.install_rules"
                                                  : "CAP_NET_ADMIN: SO_MARK before kernel 5.17");
  }
  const auto admin = SocketAddress::parse(cfg_.admin.listen);
  const auto metrics = SocketAddress::parse(cfg_.metrics.listen);
  bool low = (admin.valid() && admin.port() < 1024) || (metrics.valid() && metrics.port() < 1024);
  for (uint16_t port : {params_.outbound_port, params_.inbound_port}) {
    low = low || port < 1024;
  }
  if (low) {
    need.push_back(kCapNetBindService);
    why.emplace_back("CAP_NET_BIND_SERVICE: a listener below port 1024");
  }
  std::string needs;
  for (const auto& w : why) {
    needs += (needs.empty() ? "" : "; ") + w;
  }
  if (needs.empty()) {
    needs = "no capability (REDIRECT mode)";
  }
  const auto pids = runningProxies();
  if (pids.empty()) {
    add("capabilities.proxy", Status::Info,
        std::string("no `sidecrypt run` ") +
            (can_read_rules_ ? "in this network namespace" : "visible to this user") +
            "; it needs " + needs);
    return;
  }
  std::string problems;
  std::string missing_caps;
  for (pid_t pid : pids) {
    const auto set = effectiveCapabilities(pid);
    if (!set) {
      continue;
    }
    for (int cap : need) {
      if (!hasCapability(*set, cap)) {
        problems += " pid " + std::to_string(pid) + " lacks " + capabilityName(cap) + ";";
        if (missing_caps.find(capabilityName(cap)) == std::string::npos) {
          missing_caps += " " + capabilityName(cap);
        }
      }
    }
  }
  if (!problems.empty()) {
    add("capabilities.proxy", Status::Fail, "sidecrypt run:" + problems + " it needs " + needs,
        "grant" + missing_caps +
            ": systemd AmbientCapabilities= and CapabilityBoundingSet=; Kubernetes "
            "securityContext.capabilities.add");
    return;
  }
  std::string list;
  for (pid_t pid : pids) {
    list += (list.empty() ? "" : ",") + std::to_string(pid);
  }
  add("capabilities.proxy", Status::Ok, "sidecrypt run (pid " + list + ") has " + needs);
}

void Doctor::checkReady() {
  const std::string admin = opts_.admin.empty() ? cfg_.admin.listen : opts_.admin;
  auto r = adminRequest(admin, "GET", "/ready", 5000);
  const std::string body = trimmed(r.body);
  if (r.status == 200) {
    ready_ok_ = true;
    add("admin.ready", Status::Ok, "http://" + admin + "/ready: " + body);
    return;
  }
  if (r.status == 0) {
    add("admin.ready", Status::Fail, "sidecrypt is not running here: " + body,
        "systemctl start sidecrypt  # or: sidecrypt run --config " + cfg_path_);
    return;
  }
  std::string fix = "journalctl -u sidecrypt  # sidecrypt's log says why";
  if (body.find("netfilter rules") != std::string::npos ||
      body.find("policy") != std::string::npos) {
    fix = install_fix_;
  }
  add("admin.ready", Status::Fail,
      "http://" + admin + "/ready answered " + std::to_string(r.status) + ": " + body, fix);
}

// One sidecrypt per network namespace (the instance lock): who holds it, with which rules.
void Doctor::checkInstance() {
  const auto h = InstanceLock::holder();
  if (!h) {
    add("instance", Status::Info, "no sidecrypt holds the instance lock of this network namespace");
    return;
  }
  const std::string mine = rulesFingerprint(params_);
  if (!h->fingerprint.empty() && h->fingerprint != mine) {
    add("instance", Status::Fail,
        h->describe() + " runs in this network namespace with other rules (" + h->fingerprint +
            ") than " + cfg_path_ + " (" + mine + ")",
        "sidecrypt doctor --config " +
            (h->config.empty() ? std::string("THAT_CONFIG") : h->config) +
            "  # check the instance that runs, or stop it before using this config");
    return;
  }
  add("instance", Status::Ok, h->describe() + " holds the instance lock");
}

// Members that advertise a gossip port the rules do not capture (the running proxy's view).
void Doctor::checkMemberPorts() {
  const std::string admin = opts_.admin.empty() ? cfg_.admin.listen : opts_.admin;
  auto r = adminRequest(admin, "GET", "/status", 5000);
  const auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (r.status != 200 || j.is_discarded() || !j.contains("member_ports")) {
    add("members.ports", Status::Skip, "no member list (sidecrypt is not running here)");
    return;
  }
  std::string list;
  std::set<uint16_t> ports;
  for (const auto& m : j["member_ports"]["uncovered_members"]) {
    const auto port = m.value("port", 0);
    ports.insert(static_cast<uint16_t>(port));
    list += " " + m.value("name", std::string("?")) + "@" +
            addressWithPort(m.value("address", std::string("?")), static_cast<uint16_t>(port));
  }
  if (!ports.empty()) {
    std::string add_ports;
    for (uint16_t p : ports) {
      add_ports += (add_ports.empty() ? "" : ", ") + std::to_string(p);
    }
    add("members.ports", Status::Fail,
        "members on gossip ports the rules do not capture (the agent's streams to them leave in "
        "PLAINTEXT):" +
            list,
        "add " + add_ports + " to intercept.member_ports in " + cfg_path_ + "; then " +
            install_fix_ + " and restart sidecrypt");
    return;
  }
  add("members.ports", Status::Ok,
      "every member seen advertises a captured gossip port (" + joinPorts(params_.member) + ")");
}

void Doctor::probePorts() {
  if (opts_.no_probe) {
    add("probe", Status::Skip, "--no-probe");
    return;
  }
  if (params_.tcp_out.empty()) {
    add("probe", Status::Info, "no intercepted TCP port");
    return;
  }
  std::string why_not;
  if (!can_read_rules_) {
    why_not = "the rules could not be checked";
  } else if (!rules_ok_) {
    why_not = "the rules are not intact";
  } else if (!ready_ok_) {
    why_not = "sidecrypt is not ready";
  }
  const std::string admin = opts_.admin.empty() ? cfg_.admin.listen : opts_.admin;
  const auto addrs =
      opts_.probe_addrs.empty() ? std::vector<std::string>{"192.0.2.1"} : opts_.probe_addrs;
  for (const auto& ip : addrs) {
    for (uint16_t port : params_.tcp_out) {
      const std::string target = addressWithPort(ip, port);
      const std::string name = "probe.tcp." + target;
      if (!why_not.empty()) {
        add(name, Status::Skip, "not run: " + why_not);
        continue;
      }
      const auto to = SocketAddress::parse(target);
      if (!to.valid()) {
        add(name, Status::Fail, "not an IP address: " + ip, "--probe-addr IP");
        continue;
      }
      const auto before = tcpAccepted(admin);
      const std::string err = probeConnect(to, opts_.probe_timeout_ms);
      if (!err.empty()) {
        const bool no_route = err.find("unreachable") != std::string::npos ||
                              err.find("No route") != std::string::npos;
        add(name, Status::Fail,
            "connect to " + target + ": " + err +
                (no_route ? " (this host has no route to it)"
                          : " (diverted, but sidecrypt's listener did not accept it)"),
            no_route
                ? "sidecrypt doctor --config " + cfg_path_ +
                      " --probe-addr ADDRESS  # an address this host routes, e.g. a Consul server"
                : "journalctl -u sidecrypt  # why it does not accept; then: systemctl restart "
                  "sidecrypt");
        continue;
      }
      // The connection must have been taken by sidecrypt: its accepted-connection count moves.
      bool counted = false;
      for (int i = 0; i < 20 && before; ++i) {
        const auto after = tcpAccepted(admin);
        if (after && *after > *before) {
          counted = true;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      if (!counted) {
        add(name, Status::Fail,
            "connect to " + target +
                " succeeded, but sidecrypt did not accept it: something "
                "else answered",
            install_fix_);
        continue;
      }
      add(name, Status::Ok, "a connection to " + target + " was taken over by sidecrypt");
    }
  }
}

}  // namespace sidecrypt::proxy::cli::doctor
