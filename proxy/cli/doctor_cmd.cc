// `sidecrypt doctor`: checks everything interception depends on, on this host (or in this pod),
// and prints the exact fix for each failed check.
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

namespace sidecrypt::proxy::cli {

namespace doctor {

using nlohmann::json;

std::vector<Check> Doctor::run() {
  std::string ports;
  for (const auto& p : cfg_.intercept.ports) {
    ports += (ports.empty() ? "" : " ") + std::to_string(p.port) + "/" + toString(p.transport);
  }
  add("config", Status::Ok,
      cfg_path_ + ": mode " +
          (params_.mode == InterceptMode::Tproxy ? std::string("tproxy") : "redirect") +
          ", ports " + ports + " (TCP out " + joinPorts(params_.tcp_out) + ", TCP in " +
          joinPorts(params_.tcp_in) + ", UDP " + joinPorts(params_.udp) + ")");
  // --only: run the selected checks and what they depend on; report only the selected ones.
  struct Step {
    const char* name;
    void (Doctor::*fn)();
    std::vector<const char*> needs;
  };
  const std::vector<Step> steps = {
      {"capabilities", &Doctor::checkCapabilities, {}},
      {"backend", &Doctor::checkBackend, {"capabilities"}},
      {"kernel", &Doctor::checkKernel, {"capabilities", "backend"}},
      {"rules.netfilter", &Doctor::checkRules, {"capabilities", "backend", "kernel"}},
      {"rules.stale", &Doctor::checkStaleBackends, {"capabilities", "backend"}},
      {"rules.policy", &Doctor::checkPolicyRoutes, {"capabilities", "backend", "kernel"}},
      {"sysctl", &Doctor::checkSysctls, {}},
      {"capabilities.proxy", &Doctor::checkProxyCapabilities, {"capabilities"}},
      {"admin.ready", &Doctor::checkReady, {}},
      {"instance", &Doctor::checkInstance, {}},
      {"members.ports", &Doctor::checkMemberPorts, {}},
      {"tls", &Doctor::checkCertificates, {}},
      {"probe",
       &Doctor::probePorts,
       {"capabilities", "backend", "kernel", "rules.netfilter", "rules.policy", "admin.ready"}},
  };
  auto selected = [this](const std::string& name) {
    if (opts_.only.empty()) {
      return true;
    }
    return std::any_of(opts_.only.begin(), opts_.only.end(), [&](const std::string& o) {
      return name == o || name.rfind(o + ".", 0) == 0 || o.rfind(name + ".", 0) == 0;
    });
  };
  std::set<std::string> needed;
  for (const auto& st : steps) {
    if (selected(st.name)) {
      needed.insert(st.name);
      needed.insert(st.needs.begin(), st.needs.end());
    }
  }
  for (const auto& st : steps) {
    if (needed.count(st.name) != 0) {
      (this->*st.fn)();
    }
  }
  std::vector<Check> out;
  for (auto& c : checks_) {
    if (c.name == "config" || selected(c.name)) {
      out.push_back(std::move(c));
    }
  }
  return out;
}

void printText(const std::string& config, const std::vector<Check>& checks) {
  std::cout << "sidecrypt doctor: " << config << "\n";
  size_t failed = 0;
  for (const auto& c : checks) {
    const char* tag = c.status == Status::Ok     ? "  ok  "
                      : c.status == Status::Fail ? " FAIL "
                      : c.status == Status::Warn ? " warn "
                      : c.status == Status::Skip ? " skip "
                                                 : " info ";
    std::cout << "[" << tag << "] " << c.name << ": " << c.detail << "\n";
    if (c.status == Status::Fail) {
      ++failed;
    }
    if (!c.fix.empty() && (c.status == Status::Fail || c.status == Status::Warn)) {
      std::string indented;
      for (const auto& line : splitLines(c.fix)) {
        indented += (indented.empty() ? "" : "\n            ") + line;
      }
      std::cout << "         fix: " << indented << "\n";
    }
  }
  if (failed == 0) {
    std::cout << "doctor: all " << checks.size() << " checks passed\n";
  } else {
    std::cout << "doctor: " << failed << " of " << checks.size() << " checks failed\n";
  }
}

}  // namespace doctor

using namespace doctor;  // NOLINT(google-build-using-namespace)
namespace fs = std::filesystem;
using nlohmann::json;

int doctorCommand(const DoctorOptions& opts) {
  std::error_code ec;
  const fs::path abs = fs::absolute(opts.config, ec);
  const std::string config = ec ? opts.config : abs.lexically_normal().string();
  std::vector<Check> checks;
  auto loaded = loadConfig(opts.config);
  if (auto* errs = std::get_if<std::vector<ConfigError>>(&loaded)) {
    std::string detail;
    for (const auto& e : *errs) {
      detail += (detail.empty() ? "" : "\n  ") + e.format();
    }
    checks.push_back({"config", Status::Fail, detail,
                      "sidecrypt check-config " + config + "  # after correcting the lines above"});
  } else {
    Doctor doctor(opts, std::get<Config>(loaded), config);
    checks = doctor.run();
  }
  const bool ok = std::none_of(checks.begin(), checks.end(),
                               [](const Check& c) { return c.status == Status::Fail; });
  if (opts.json) {
    json list = json::array();
    for (const auto& c : checks) {
      json j = {{"name", c.name}, {"status", statusName(c.status)}, {"detail", c.detail}};
      if (!c.fix.empty() && (c.status == Status::Fail || c.status == Status::Warn)) {
        j["fix"] = c.fix;
      }
      list.push_back(std::move(j));
    }
    std::cout << json{{"config", config}, {"ok", ok}, {"checks", list}}.dump(2) << "\n";
  } else {
    printText(config, checks);
  }
  return ok ? 0 : 1;
}

}  // namespace sidecrypt::proxy::cli
