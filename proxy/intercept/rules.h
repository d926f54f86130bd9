#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "proxy/config/config.h"

namespace sidecrypt::proxy {

// Everything the netfilter rules depend on, derived from the config (docs/spec/interception.md §1).
struct RuleParams {
  InterceptMode mode = InterceptMode::Tproxy;
  std::vector<uint16_t> tcp_out;  // agent ports whose outgoing TCP is captured
  std::vector<uint16_t> tcp_in;   // agent ports whose incoming TCP is captured
  std::vector<uint16_t> udp;      // agent gossip ports (UDP, both directions)
  // The fleet's gossip port plan (intercept.member_ports, wan_member_ports, own gossip ports):
  // the agent's TCP and UDP to any address on these ports is captured, from any source port.
  std::vector<uint16_t> member;
  uint16_t outbound_port = 15001;
  uint16_t inbound_port = 15006;
  uint32_t divert_mark = 0x539;
  uint32_t proxy_mark = 0x53a;
  uint32_t table = 133;
  uint32_t priority = 100;
  bool ipv6 = true;
};
RuleParams ruleParams(const Config& cfg);

// One command of a plan. Optional steps may fail (removing what is not there); Repeat steps run
// until they fail (deleting every duplicate of an `ip rule`); KeepOne runs argv (a delete) while
// the output of `list` holds `needle` more than once (an `ip rule` added next to an old copy
// loses the old copy without a moment with none).
struct RuleStep {
  enum class Kind : uint8_t { Must, Optional, Repeat, KeepOne };
  RuleStep(std::vector<std::string> args, std::string in = {}, Kind k = Kind::Must,
           std::vector<std::string> list_args = {}, std::string what = {})
      : argv(std::move(args)),
        input(std::move(in)),
        kind(k),
        list(std::move(list_args)),
        needle(std::move(what)) {}
  std::vector<std::string> argv;
  std::string input;  // stdin (iptables-restore / nft -f text)
  Kind kind = Kind::Must;
  std::vector<std::string> list;  // KeepOne
  std::string needle;             // KeepOne
};

struct RulePlan {
  RulesBackend backend = RulesBackend::Nft;
  std::vector<RuleStep> steps;
};

// Which backend to use (docs/spec/interception.md §E.3): the requested one, or for Auto: native nft
// when it works and no iptables-legacy rules exist; else the iptables backend that holds rules.
// `why` says how the choice was made.
RulesBackend chooseBackend(RulesBackend requested, std::string& why);

// Idempotent install (twice gives the same state) and clean removal that leaves foreign rules
// alone (docs/spec/interception.md §E.5, §E.6). Policy routing only in TPROXY mode.
RulePlan installPlan(const RuleParams& p, RulesBackend backend);
RulePlan removePlan(const RuleParams& p, RulesBackend backend);

// What the install plan for `p` puts in place, as a short hex digest. The rules carry it as a
// comment, so /ready and doctor can tell this config's rules from another's.
std::string rulesFingerprint(const RuleParams& p);

// The rule text itself, exposed for tests and `rules print`.
std::string nftRuleset(const RuleParams& p);
std::string iptablesRuleset(const RuleParams& p, bool ipv6);

// Shell-like rendering of a plan (`sidecrypt rules print`).
std::string describePlan(const RulePlan& plan);
// Runs a plan; returns the first failure (command and its output), or nullopt.
std::optional<std::string> runPlan(const RulePlan& plan);
// True when sidecrypt's own rules and policy routes are installed in this namespace and carry
// this config's fingerprint (rules of another config are reported as such). Without
// CAP_NET_ADMIN the netfilter rules cannot be read: then only the policy routes are checked
// (TPROXY) and `detail` says so.
bool rulesInstalled(const RuleParams& p, RulesBackend backend, std::string& detail);
// True when the policy routes (ip rule fwmark -> table, local route in the table) exist for
// every family in use; needs no privilege.
bool policyRoutesInstalled(const RuleParams& p, std::string& detail);

}  // namespace sidecrypt::proxy
