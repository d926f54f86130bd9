// What runtime.loops = "auto" counts: the affinity mask capped by the cgroup CPU quota
// (proxy/datapath/cpu_budget.h), on made-up cgroup trees in a temporary directory.
#include "proxy/datapath/cpu_budget.h"

#include <unistd.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using namespace sidecrypt::proxy;

namespace {
void put(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}
}  // namespace

TEST_CASE("cpu budget: quotas in CPUs, rounded up", "[cpu_budget]") {
  CHECK(cpusOfCpuMax("max 100000\n") == 0);
  CHECK(cpusOfCpuMax("100000 100000\n") == 1);
  CHECK(cpusOfCpuMax("150000 100000\n") == 2);
  CHECK(cpusOfCpuMax("50000 100000") == 1);
  CHECK(cpusOfCpuMax("1600000 100000\n") == 16);
  for (const char* bad : {"", "max", "100000", "x 100000", "100000 0", "-5 100000", "1 2 3"}) {
    CAPTURE(bad);
    CHECK(cpusOfCpuMax(bad) == 0);
  }
  CHECK(cpusOfCfsQuota(-1, 100000) == 0);
  CHECK(cpusOfCfsQuota(250000, 100000) == 3);
}

TEST_CASE("cpu budget: the smallest quota on the cgroup's path, v2 and v1", "[cpu_budget]") {
  const fs::path root =
      fs::temp_directory_path() / ("sidecrypt-cpu-budget-" + std::to_string(::getpid()));
  fs::remove_all(root);
  SECTION("v2: a parent's quota caps the child's") {
    put(root / "cpu.max", "max 100000\n");
    put(root / "kubepods/cpu.max", "300000 100000\n");
    put(root / "kubepods/pod1/cpu.max", "max 100000\n");
    CHECK(cgroupCpuLimit(root.string(), "0::/kubepods/pod1\n") == 3);
    CHECK(cgroupCpuLimit(root.string(), "0::/\n") == 0);
    CHECK(cgroupCpuLimit(root.string(), "0::/elsewhere\n") == 0);
  }
  SECTION("v1: cpu.cfs_quota_us under the cpu controller's mount") {
    put(root / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "200000\n");
    put(root / "cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n");
    put(root / "cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
    put(root / "cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    CHECK(cgroupCpuLimit(root.string(), "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n") == 2);
    CHECK(cgroupCpuLimit(root.string(), "3:cpu,cpuacct:/\n") == 0);
    CHECK(cgroupCpuLimit(root.string(), "4:memory:/docker/abc\n") == 0);  // no cpu controller
  }
  SECTION("nothing readable: no quota") {
    CHECK(cgroupCpuLimit((root / "absent").string(), "0::/a/b\n1:cpu:/a\n") == 0);
    CHECK(cgroupCpuLimit(root.string(), "garbage\n\n::\n") == 0);
  }
  fs::remove_all(root);
  CHECK(availableCpus() >= 1);
}
