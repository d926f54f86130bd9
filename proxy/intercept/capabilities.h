#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace sidecrypt::proxy {

// Linux capability numbers sidecrypt cares about (linux/capability.h).
inline constexpr int kCapNetBindService = 10;
inline constexpr int kCapNetAdmin = 12;
inline constexpr int kCapNetRaw = 13;
inline constexpr int kCapSysAdmin = 21;

// The effective capability set (CapEff in /proc/<pid>/status) of a process, 0 for this one;
// nullopt when it cannot be read.
std::optional<uint64_t> effectiveCapabilities(pid_t pid = 0);
bool hasCapability(uint64_t set, int cap);
// Whether this process has `cap` in its effective set (false when unreadable).
bool haveCapability(int cap);
// Makes every permitted capability effective (capset(2)). A binary with file capabilities in
// the permitted set only (`setcap cap_net_raw+p`, as in the container image) starts with them
// permitted but not effective: unlike `+ep`, such a file still executes when the bounding set
// lacks the capability (it is then simply not granted). Returns false with the reason in `err`.
bool raisePermittedCapabilities(std::string& err);
// "CAP_NET_ADMIN", ... for the capabilities above; "cap_<n>" otherwise.
std::string capabilityName(int cap);

}  // namespace sidecrypt::proxy
