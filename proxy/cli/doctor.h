#pragma once

// `sidecrypt doctor` (proxy/cli/doctor_*.cc): the checks, what they share, and the runner.
// doctor_host.cc checks the host (capabilities, netfilter backend, kernel, rules, policy
// routes, sysctls, ephemeral ports); doctor_proxy.cc checks the running proxy (its
// capabilities, /ready, the instance lock, member ports, a connect through each port);
// doctor_tls.cc checks the certificates the configuration names (valid now, the leaf chaining
// to the configured CAs);
// doctor_cmd.cc runs them and prints. Rule inspection is proxy/intercept/rules_inspect.h.

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "proxy/cli/commands.h"
#include "proxy/config/config.h"
#include "proxy/intercept/rules.h"
#include "proxy/intercept/rules_inspect.h"
#include "proxy/net/address.h"

namespace sidecrypt::proxy::cli::doctor {

using namespace inspect;  // NOLINT(google-build-using-namespace): the doctor's own helpers

enum class Status : uint8_t { Ok, Fail, Warn, Info, Skip };
const char* statusName(Status s);

struct Check {
  std::string name;
  Status status = Status::Ok;
  std::string detail;
  std::string fix;  // the exact command(s) or setting that repairs a failed check
};

std::string lastLines(const std::string& text, size_t n);
std::string joinPorts(const std::vector<uint16_t>& ports);
bool inPath(const std::string& tool);
const char* packageOf(const std::string& tool);  // the Debian package of a tool
bool kernelBefore(int major, int minor);
// `sidecrypt run` processes in this network namespace.
std::vector<pid_t> runningProxies();
// A TCP connect with a deadline; RST on close so nothing lingers. Returns "" on success.
std::string probeConnect(const SocketAddress& to, int timeout_ms);
std::optional<uint64_t> tcpAccepted(const std::string& admin);
std::string addressWithPort(const std::string& ip, uint16_t port);

class Doctor {
 public:
  Doctor(const DoctorOptions& opts, const Config& cfg, std::string config_path)
      : opts_(opts),
        cfg_(cfg),
        cfg_path_(std::move(config_path)),
        params_(ruleParams(cfg)),
        install_fix_("sidecrypt rules install --config " + cfg_path_) {}

  std::vector<Check> run();

 private:
  void add(std::string name, Status s, std::string detail, std::string fix = "") {
    checks_.push_back({std::move(name), s, std::move(detail), std::move(fix)});
  }
  void checkCapabilities();
  void checkBackend();
  void checkKernel();
  void checkRules();
  void checkStaleBackends();
  void checkPolicyRoutes();
  void checkSysctls();
  void checkEphemeralPorts();
  void checkTproxySourcePorts();
  void checkProxyCapabilities();
  void checkReady();
  void checkInstance();
  void checkMemberPorts();
  void probePorts();
  void checkCertificates();  // doctor_tls.cc

  const DoctorOptions& opts_;
  const Config& cfg_;
  std::string cfg_path_;
  RuleParams params_;
  std::string install_fix_;
  RulesBackend backend_ = RulesBackend::Nft;
  std::string backend_why_;
  bool can_read_rules_ = false;
  bool rules_ok_ = false;
  bool ready_ok_ = false;
  Scratch scratch_;
  Dump real_;
  std::vector<Check> checks_;
};

}  // namespace sidecrypt::proxy::cli::doctor
