#include "proxy/intercept/rules_inspect.h"

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

#include "proxy/config/config_loader.h"
#include "proxy/intercept/capabilities.h"
#include "proxy/intercept/command_runner.h"
#include "proxy/intercept/instance_lock.h"
#include "proxy/intercept/rules.h"
#include "proxy/net/address.h"

namespace sidecrypt::proxy::inspect {

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

const char* iptablesTool(RulesBackend b, bool v6) {
  if (b == RulesBackend::IptablesLegacy) {
    return v6 ? "ip6tables-legacy" : "iptables-legacy";
  }
  return v6 ? "ip6tables-nft" : "iptables-nft";
}

// --- dumps of sidecrypt's own state: the same shell snippet runs in this namespace and in a
// --- scratch namespace where a fresh install was made, so the two can be compared exactly.

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

}  // namespace sidecrypt::proxy::inspect
