// `sidecrypt doctor`: checks everything interception depends on, on this host (or in this pod),
// and prints the exact fix for each failed check.
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

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

enum class Status : uint8_t { Ok, Fail, Warn, Info, Skip };

const char* statusName(Status s) {
  switch (s) {
    case Status::Ok:
      return "ok";
    case Status::Fail:
      return "fail";
    case Status::Warn:
      return "warn";
    case Status::Info:
      return "info";
    case Status::Skip:
      return "skip";
  }
  return "?";
}

struct Check {
  std::string name;
  Status status = Status::Ok;
  std::string detail;
  std::string fix;  // the exact command(s) or setting that repairs a failed check
};

std::string hex(uint32_t v) {
  std::ostringstream o;
  o << "0x" << std::hex << v;
  return o.str();
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\t')) {
    s.pop_back();
  }
  return s;
}

std::string stripped(const std::string& s) {
  const size_t start = s.find_first_not_of(" \t");
  return start == std::string::npos ? std::string() : trimmed(s.substr(start));
}

std::string lastLines(const std::string& text, size_t n) {
  auto t = trimmed(text);
  size_t pos = t.size();
  for (size_t i = 0; i < n && pos != std::string::npos && pos > 0; ++i) {
    pos = t.rfind('\n', pos - 1);
  }
  return pos == std::string::npos || pos == 0 ? t : t.substr(pos + 1);
}

std::vector<std::string> splitLines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    out.push_back(line);
  }
  return out;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream o;
  o << in.rdbuf();
  return o.str();
}

std::string joinPorts(const std::vector<uint16_t>& ports) {
  std::string out;
  for (auto p : ports) {
    out += (out.empty() ? "" : ",") + std::to_string(p);
  }
  return out.empty() ? "-" : out;
}

bool inPath(const std::string& tool) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/sbin:/usr/bin:/sbin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (!dir.empty() && ::access((dir + "/" + tool).c_str(), X_OK) == 0) {
      return true;
    }
  }
  return false;
}

const char* iptablesTool(RulesBackend b, bool v6) {
  if (b == RulesBackend::IptablesLegacy) {
    return v6 ? "ip6tables-legacy" : "iptables-legacy";
  }
  return v6 ? "ip6tables-nft" : "iptables-nft";
}

const char* packageOf(const std::string& tool) {
  if (tool == "nft") {
    return "nftables";
  }
  if (tool == "ip") {
    return "iproute2";
  }
  if (tool == "unshare") {
    return "util-linux";
  }
  return "iptables";
}

// --- dumps of sidecrypt's own state: the same shell snippet runs in this namespace and in a
// --- scratch namespace where a fresh install was made, so the two can be compared exactly.

struct Section {
  std::string text;
  int rc = 0;
};
using Dump = std::map<std::string, Section>;

std::string dumpScript(const RuleParams& p, RulesBackend b) {
  std::string s;
  auto section = [&s](const std::string& name, const std::string& cmd) {
    s += "echo '@@section " + name + "'; " + cmd + " 2>/dev/null; echo \"@@rc $?\"\n";
  };
  if (b == RulesBackend::Nft) {
    section("nft", "nft list table inet sidecrypt");
  } else {
    const char* table = p.mode == InterceptMode::Tproxy ? "mangle" : "nat";
    section("ipt4", std::string(iptablesTool(b, false)) + "-save -t " + table);
    if (p.ipv6) {
      section("ipt6", std::string(iptablesTool(b, true)) + "-save -t " + table);
    }
  }
  if (p.mode == InterceptMode::Tproxy) {
    for (const char* fam : {"4", "6"}) {
      if (fam[0] == '6' && !p.ipv6) {
        continue;
      }
      section(std::string("rule") + fam, std::string("ip -") + fam + " rule list");
      section(std::string("route") + fam,
              std::string("ip -") + fam + " route show table " + std::to_string(p.table));
    }
  }
  return s;
}

Dump parseDump(const std::string& out) {
  Dump d;
  std::string current;
  for (const auto& line : splitLines(out)) {
    if (line.rfind("@@section ", 0) == 0) {
      current = line.substr(10);
      d[current] = {};
    } else if (line.rfind("@@rc ", 0) == 0 && !current.empty()) {
      d[current].rc = std::atoi(line.c_str() + 5);
      current.clear();
    } else if (!current.empty()) {
      d[current].text += line + "\n";
    }
  }
  return d;
}

// sidecrypt's lines of an iptables-save dump: its chains (counters dropped), its rules and the
// jumps to them.
std::vector<std::string> ownIptablesLines(const std::string& text) {
  std::vector<std::string> out;
  for (const auto& line : splitLines(text)) {
    if (line.rfind(":SIDECRYPT", 0) == 0) {
      out.push_back(line.substr(0, line.find(' ')));
    } else if (line.rfind("-A ", 0) == 0 && line.find("SIDECRYPT") != std::string::npos) {
      out.push_back(line);
    }
  }
  return out;
}

// The policy rule lines that are sidecrypt's: its fwmark looked up in its table.
std::vector<std::string> ownRuleLines(const std::string& text, const RuleParams& p) {
  const std::string needle = "fwmark " + hex(p.divert_mark) + " lookup " + std::to_string(p.table);
  std::vector<std::string> out;
  for (const auto& line : splitLines(text)) {
    if (line.find(needle) != std::string::npos) {
      out.push_back(trimmed(line));
    }
  }
  return out;
}

// Lines of `want` missing from `have` and lines of `have` not in `want` (as multisets).
std::string lineDiff(const std::vector<std::string>& want, const std::vector<std::string>& have) {
  std::multiset<std::string> extra(have.begin(), have.end());
  std::vector<std::string> missing;
  for (const auto& w : want) {
    auto it = extra.find(w);
    if (it == extra.end()) {
      missing.push_back(w);
    } else {
      extra.erase(it);
    }
  }
  std::string out;
  size_t shown = 0;
  for (const auto& m : missing) {
    if (shown++ < 6) {
      out += "\n  missing:    " + stripped(m);
    }
  }
  for (const auto& e : extra) {
    if (shown++ < 12) {
      out += "\n  unexpected: " + stripped(e);
    }
  }
  if (out.empty() && want != have) {
    out = "\n  the same lines in another order";
  }
  return out;
}

struct Scratch {
  bool available = false;  // a scratch network namespace could be made (CAP_SYS_ADMIN)
  bool loaded = false;     // sidecrypt's install plan loaded there
  std::string error;
  Dump dump;
};

Scratch scratchInstall(const RuleParams& p, RulesBackend b) {
  Scratch s;
  auto probe = runCommand({"unshare", "--net", "--", "true"});
  if (probe.exit_code != 0) {
    s.error = trimmed(probe.output);
    return s;
  }
  s.available = true;
  // A new network namespace has only `lo`, down; the IPv6 local route needs it up.
  const std::string script = "set -e\nip link set lo up\n" + describePlan(installPlan(p, b)) +
                             "set +e\necho '@@installed'\n" + dumpScript(p, b);
  auto r = runCommand({"unshare", "--net", "--", "sh", "-c", script});
  const size_t mark = r.output.find("@@installed\n");
  if (r.exit_code != 0 || mark == std::string::npos) {
    s.error = trimmed(r.output);
    return s;
  }
  s.loaded = true;
  s.dump = parseDump(r.output.substr(mark));
  return s;
}

// One small ruleset per kernel feature, loaded in a scratch namespace: which one is missing.
struct Feature {
  const char* name;
  const char* module;
  std::vector<std::string> argv;
  std::string input;
};

std::vector<Feature> featureTrials(RulesBackend b, InterceptMode mode) {
  const std::string chain =
      "table inet sidecrypt_trial {\n chain c {\n  type filter hook "
      "prerouting priority mangle; policy accept;\n";
  if (b == RulesBackend::Nft) {
    if (mode == InterceptMode::Redirect) {
      return {{"nft redirect",
               "nft_redir",
               {"nft", "-f", "-"},
               "table ip sidecrypt_trial {\n chain c {\n  type nat hook output priority -100;\n"
               "  tcp dport 1 redirect to :2\n }\n}\n"}};
    }
    return {
        {"nft tproxy",
         "nft_tproxy",
         {"nft", "-f", "-"},
         chain + "  meta l4proto tcp tproxy ip to 127.0.0.1:1 accept\n }\n}\n"},
        {"nft socket match",
         "nft_socket",
         {"nft", "-f", "-"},
         chain + "  meta l4proto tcp socket transparent 1 accept\n }\n}\n"},
        {"nft fib",
         "nft_fib_inet",
         {"nft", "-f", "-"},
         chain + "  fib daddr type local accept\n }\n}\n"},
    };
  }
  const std::string restore = std::string(iptablesTool(b, false)) + "-restore";
  if (mode == InterceptMode::Redirect) {
    return {{"iptables REDIRECT",
             "xt_REDIRECT",
             {restore},
             "*nat\n-A OUTPUT -p tcp --dport 1 -j REDIRECT --to-ports 2\nCOMMIT\n"}};
  }
  return {
      {"iptables TPROXY target",
       "xt_TPROXY",
       {restore},
       "*mangle\n-A PREROUTING -p tcp -j TPROXY --on-ip 127.0.0.1 --on-port 1 --tproxy-mark "
       "0x1\nCOMMIT\n"},
      {"iptables socket match",
       "xt_socket",
       {restore},
       "*mangle\n-A PREROUTING -p tcp -m socket --transparent -j ACCEPT\nCOMMIT\n"},
  };
}

// Evidence about kernel features without a scratch namespace: what is loaded, built in or
// configured.
std::string kernelEvidence(RulesBackend b, std::vector<std::string>& absent) {
  utsname u{};
  ::uname(&u);
  const std::string release = u.release;
  const std::string modules = readFile("/proc/modules");
  const std::string builtin = readFile("/lib/modules/" + release + "/modules.builtin");
  const std::string dep = readFile("/lib/modules/" + release + "/modules.dep");
  std::string config = readFile("/boot/config-" + release);
  if (config.empty()) {
    config = runCommand({"zcat", "/proc/config.gz"}).output;
  }
  const std::string targets =
      readFile("/proc/net/ip_tables_targets") + readFile("/proc/net/ip6_tables_targets");
  const std::string matches =
      readFile("/proc/net/ip_tables_matches") + readFile("/proc/net/ip6_tables_matches");
  struct Item {
    const char* module;
    const char* config;
    const char* proc_name;
    const std::string* proc;
  };
  std::vector<Item> items;
  if (b == RulesBackend::Nft) {
    items = {{"nft_tproxy", "CONFIG_NFT_TPROXY", nullptr, nullptr},
             {"nft_socket", "CONFIG_NFT_SOCKET", nullptr, nullptr}};
  } else {
    items = {{"xt_TPROXY", "CONFIG_NETFILTER_XT_TARGET_TPROXY", "TPROXY", &targets},
             {"xt_socket", "CONFIG_NETFILTER_XT_MATCH_SOCKET", "socket", &matches}};
  }
  std::string out;
  for (const auto& it : items) {
    std::string how;
    const std::string mod = it.module;
    if (it.proc != nullptr && it.proc->find(it.proc_name) != std::string::npos) {
      how = "registered (/proc/net)";
    } else if (modules.find(mod + " ") != std::string::npos) {
      how = "loaded (/proc/modules)";
    } else if (builtin.find("/" + mod + ".ko") != std::string::npos) {
      how = "built in (modules.builtin)";
    } else if (dep.find("/" + mod + ".ko") != std::string::npos) {
      how = "available as a module (modules.dep)";
    } else if (config.find(std::string(it.config) + "=y") != std::string::npos) {
      how = "built in (kernel config)";
    } else if (config.find(std::string(it.config) + "=m") != std::string::npos) {
      how = "a module (kernel config)";
    } else if (config.find(std::string("# ") + it.config + " is not set") != std::string::npos) {
      how = "NOT built (kernel config)";
      absent.push_back(mod);
    } else {
      how = "unknown";
    }
    out += (out.empty() ? "" : "; ") + mod + ": " + how;
  }
  return out;
}

bool kernelBefore(int major, int minor) {
  utsname u{};
  ::uname(&u);
  int ma = 0;
  int mi = 0;
  if (std::sscanf(u.release, "%d.%d", &ma, &mi) != 2) {
    return false;
  }
  return ma < major || (ma == major && mi < minor);
}

// `sidecrypt run` processes in this network namespace.
std::vector<pid_t> runningProxies() {
  std::vector<pid_t> out;
  std::error_code ec;
  const auto self_ns = fs::read_symlink("/proc/self/ns/net", ec);
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) {
      continue;
    }
    const pid_t pid = std::atoi(name.c_str());
    if (pid == ::getpid()) {
      continue;
    }
    const std::string cmdline = readFile("/proc/" + name + "/cmdline");
    std::vector<std::string> args;
    for (size_t pos = 0; pos < cmdline.size();) {
      const size_t end = cmdline.find('\0', pos);
      args.push_back(cmdline.substr(pos, end == std::string::npos ? end : end - pos));
      pos = end == std::string::npos ? cmdline.size() : end + 1;
    }
    if (args.size() < 2 || fs::path(args[0]).filename() != "sidecrypt" || args[1] != "run") {
      continue;
    }
    std::error_code ns_ec;
    if (fs::read_symlink("/proc/" + name + "/ns/net", ns_ec) != self_ns || ns_ec) {
      continue;
    }
    out.push_back(pid);
  }
  return out;
}

// A TCP connect with a deadline; RST on close so nothing lingers. Returns "" on success.
std::string probeConnect(const SocketAddress& to, int timeout_ms) {
  const int fd = ::socket(to.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    return std::string("socket: ") + std::strerror(errno);
  }
  std::string result;
  if (::connect(fd, to.sa(), to.len()) != 0 && errno != EINPROGRESS) {
    result = std::strerror(errno);
  } else {
    pollfd pfd{fd, POLLOUT, 0};
    const int n = ::poll(&pfd, 1, timeout_ms);
    int err = 0;
    socklen_t len = sizeof err;
    if (n == 0) {
      result = "no answer within " + std::to_string(timeout_ms) + " ms";
    } else if (n < 0) {
      result = std::string("poll: ") + std::strerror(errno);
    } else if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      result = std::strerror(err != 0 ? err : errno);
    }
  }
  linger lg{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  ::close(fd);
  return result;
}

std::optional<uint64_t> tcpAccepted(const std::string& admin) {
  auto r = adminRequest(admin, "GET", "/status", 3000);
  if (r.status != 200) {
    return std::nullopt;
  }
  try {
    auto j = json::parse(r.body);
    return j.at("tcp").at("accepted").get<uint64_t>();
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

std::string addressWithPort(const std::string& ip, uint16_t port) {
  if (ip.find(':') != std::string::npos) {
    return "[" + ip + "]:" + std::to_string(port);
  }
  return ip + ":" + std::to_string(port);
}

// --- the checks -------------------------------------------------------------------------------

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
  void checkProxyCapabilities();
  void checkReady();
  void checkInstance();
  void checkMemberPorts();
  void probePorts();

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

}  // namespace

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
