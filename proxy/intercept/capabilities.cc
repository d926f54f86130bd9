#include "proxy/intercept/capabilities.h"

#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

namespace sidecrypt::proxy {

std::optional<uint64_t> effectiveCapabilities(pid_t pid) {
  const std::string path =
      pid == 0 ? std::string("/proc/self/status") : "/proc/" + std::to_string(pid) + "/status";
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("CapEff:", 0) == 0) {
      try {
        return std::stoull(line.substr(7), nullptr, 16);
      } catch (const std::exception&) {
        return std::nullopt;
      }
    }
  }
  return std::nullopt;
}

bool hasCapability(uint64_t set, int cap) {
  return cap >= 0 && cap < 64 && (set & (uint64_t{1} << cap)) != 0;
}

bool haveCapability(int cap) {
  const auto set = effectiveCapabilities();
  return set && hasCapability(*set, cap);
}

bool raisePermittedCapabilities(std::string& err) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capget, &header, data) != 0) {
    err = std::string("capget: ") + std::strerror(errno);
    return false;
  }
  bool changed = false;
  for (auto& d : data) {
    changed = changed || d.effective != d.permitted;
    d.effective = d.permitted;
  }
  if (changed && ::syscall(SYS_capset, &header, data) != 0) {
    err = std::string("capset: ") + std::strerror(errno);
    return false;
  }
  return true;
}

std::string capabilityName(int cap) {
  switch (cap) {
    case kCapNetBindService:
      return "CAP_NET_BIND_SERVICE";
    case kCapNetAdmin:
      return "CAP_NET_ADMIN";
    case kCapNetRaw:
      return "CAP_NET_RAW";
    case kCapSysAdmin:
      return "CAP_SYS_ADMIN";
    default:
      return "cap_" + std::to_string(cap);
  }
}

}  // namespace sidecrypt::proxy
