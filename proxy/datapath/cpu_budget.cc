#include "proxy/datapath/cpu_budget.h"

#include <uv.h>

#include <algorithm>
#include <charconv>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <vector>

namespace sidecrypt::proxy {
namespace {

std::optional<int64_t> number(std::string_view s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) {
    s.remove_suffix(1);
  }
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) {
    return std::nullopt;
  }
  return v;
}

std::optional<std::string> slurp(const std::string& path) {
  std::ifstream f(path);
  if (!f) {
    return std::nullopt;
  }
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return text;
}

// The directories from `dir` up to `mount` (both included), deepest first.
std::vector<std::string> upwards(const std::string& mount, std::string_view path) {
  std::vector<std::string> out;
  std::string p(path);
  while (!p.empty() && p.back() == '/') {
    p.pop_back();
  }
  for (;;) {
    out.push_back(mount + p);
    const size_t slash = p.rfind('/');
    if (p.empty() || slash == std::string::npos) {
      break;
    }
    p.resize(slash);
  }
  return out;
}

void keepSmallest(uint32_t& best, uint32_t cpus) {
  if (cpus != 0 && (best == 0 || cpus < best)) {
    best = cpus;
  }
}

}  // namespace

uint32_t cpusOfCfsQuota(int64_t quota_us, int64_t period_us) {
  if (quota_us <= 0 || period_us <= 0) {
    return 0;
  }
  const int64_t cpus = (quota_us + period_us - 1) / period_us;
  return static_cast<uint32_t>(std::clamp<int64_t>(cpus, 1, 1 << 20));
}

uint32_t cpusOfCpuMax(std::string_view text) {
  const size_t space = text.find(' ');
  if (space == std::string_view::npos) {
    return 0;
  }
  const auto quota = number(text.substr(0, space));
  const auto period = number(text.substr(space + 1));
  if (!quota || !period) {
    return 0;  // "max" or garbage: no quota
  }
  return cpusOfCfsQuota(*quota, *period);
}

uint32_t cgroupCpuLimit(const std::string& root, std::string_view self_cgroup) {
  uint32_t best = 0;
  std::istringstream lines{std::string(self_cgroup)};
  std::string line;
  while (std::getline(lines, line)) {
    // "hierarchy-id:controllers:path"; v2 is "0::path".
    const size_t a = line.find(':');
    const size_t b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) {
      continue;
    }
    const std::string controllers = line.substr(a + 1, b - a - 1);
    const std::string path = line.substr(b + 1);
    if (line.compare(0, a, "0") == 0 && controllers.empty()) {
      for (const auto& dir : upwards(root, path)) {
        if (auto t = slurp(dir + "/cpu.max")) {
          keepSmallest(best, cpusOfCpuMax(*t));
        }
      }
      continue;
    }
    std::istringstream names(controllers);
    std::string name;
    bool cpu = false;
    while (std::getline(names, name, ',')) {
      cpu = cpu || name == "cpu";
    }
    if (!cpu) {
      continue;
    }
    for (const std::string& mount :
         {root + "/" + controllers, root + "/cpu", root + "/cpu,cpuacct"}) {
      for (const auto& dir : upwards(mount, path)) {
        const auto quota = slurp(dir + "/cpu.cfs_quota_us");
        const auto period = slurp(dir + "/cpu.cfs_period_us");
        if (quota && period) {
          const auto q = number(*quota);
          const auto p = number(*period);
          if (q && p) {
            keepSmallest(best, cpusOfCfsQuota(*q, *p));
          }
        }
      }
    }
  }
  return best;
}

uint32_t availableCpus() {
  // uv_available_parallelism: the CPUs in the affinity mask (sched_getaffinity).
  uint32_t n = std::max<uint32_t>(1, uv_available_parallelism());
  if (auto self = slurp("/proc/self/cgroup")) {
    keepSmallest(n, cgroupCpuLimit("/sys/fs/cgroup", *self));
  }
  return n;
}

}  // namespace sidecrypt::proxy
