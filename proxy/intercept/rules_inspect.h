#pragma once

// Reading back sidecrypt's own netfilter rules and policy routes, and what the kernel offers, so
// they can be compared with what `rules install` would load (`sidecrypt doctor`). The same shell
// snippet dumps this network namespace and a scratch one where a fresh install was made.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "proxy/config/config.h"
#include "proxy/intercept/rules.h"

namespace sidecrypt::proxy::inspect {

// Small text helpers shared with the doctor.
std::string hex(uint32_t v);
std::string trimmed(std::string s);          // trailing blanks and newlines off
std::string stripped(const std::string& s);  // leading and trailing blanks off
std::vector<std::string> splitLines(const std::string& text);
std::string readFile(const std::string& path);      // "" when unreadable
const char* iptablesTool(RulesBackend b, bool v6);  // iptables-nft, ip6tables-legacy, ...

struct Section {
  std::string text;
  int rc = 0;
};
using Dump = std::map<std::string, Section>;

// A shell script printing each dump as "@@name rc" sections, and its parser.
std::string dumpScript(const RuleParams& p, RulesBackend b);
Dump parseDump(const std::string& out);
// sidecrypt's lines of an iptables-save dump: its chains (counters dropped), its rules and the
// jumps to them.
std::vector<std::string> ownIptablesLines(const std::string& text);
// The policy rule lines that are sidecrypt's: its fwmark looked up in its table.
std::vector<std::string> ownRuleLines(const std::string& text, const RuleParams& p);
// Lines of `want` missing from `have` and lines of `have` not in `want` (as multisets).
std::string lineDiff(const std::vector<std::string>& want, const std::vector<std::string>& have);

struct Scratch {
  bool available = false;  // a scratch network namespace could be made (CAP_SYS_ADMIN)
  bool loaded = false;     // sidecrypt's install plan loaded there
  std::string error;
  Dump dump;
};
// Loads the install plan in a scratch network namespace (unshare --net) and dumps it.
Scratch scratchInstall(const RuleParams& p, RulesBackend b);

// One small ruleset per kernel feature, loaded in a scratch namespace: which one is missing.
struct Feature {
  const char* name;
  const char* module;
  std::vector<std::string> argv;
  std::string input;
};
std::vector<Feature> featureTrials(RulesBackend b, InterceptMode mode);
// Evidence about kernel features without a scratch namespace: what is loaded, built in or
// configured. Appends the missing ones to `absent`.
std::string kernelEvidence(RulesBackend b, std::vector<std::string>& absent);

}  // namespace sidecrypt::proxy::inspect
