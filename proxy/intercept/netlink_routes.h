#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sidecrypt::proxy {

// Policy routing state read in-process over rtnetlink (a dump needs no capability). The
// readiness check of the unprivileged proxy uses this instead of running `ip`: under systemd's
// SystemCallFilter=~@privileged, iproute2's `ip` dies when it tries to drop capabilities
// (capset is filtered), and a sandboxed service should not fork helpers anyway.

struct PolicyRule {
  uint32_t priority = 0;
  uint32_t fwmark = 0;
  bool has_fwmark = false;
  uint32_t table = 0;
  uint8_t action = 0;  // FR_ACT_*
};

struct Route {
  uint32_t table = 0;
  uint8_t type = 0;  // RTN_*
  uint8_t dst_len = 0;
  bool has_dst = false;
  int oif = 0;
};

// family: AF_INET or AF_INET6. nullopt (and `error` set) when the dump fails.
std::optional<std::vector<PolicyRule>> dumpPolicyRules(int family, std::string& error);
std::optional<std::vector<Route>> dumpRoutes(int family, std::string& error);

}  // namespace sidecrypt::proxy
