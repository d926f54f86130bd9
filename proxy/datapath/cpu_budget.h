#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace sidecrypt::proxy {

// What `[runtime] loops = "auto"` counts (docs/architecture.md, "Worker loops"): the CPUs in this
// process's affinity mask, capped by the CPU quota of its cgroup and every ancestor (a container
// started with --cpus 2 on a 64-core host gets 2 loops, not 64).

// cgroup v2 `cpu.max` ("max 100000" or "150000 100000"): the quota in CPUs rounded up, or 0 for
// none (unlimited, or text that is not two numbers).
uint32_t cpusOfCpuMax(std::string_view text);
// cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`: the same; a quota <= 0 is none.
uint32_t cpusOfCfsQuota(int64_t quota_us, int64_t period_us);
// The smallest quota on the path of this process's cgroup (from `self_cgroup`, the text of
// /proc/self/cgroup) under `root` (/sys/fs/cgroup), v2 or v1; 0 when none is set or readable.
uint32_t cgroupCpuLimit(const std::string& root, std::string_view self_cgroup);
// The affinity mask capped by the cgroup quota of this process: at least 1.
uint32_t availableCpus();

}  // namespace sidecrypt::proxy
