// Memory for key bytes in transit is left out of core dumps, and the process turns core dumps
// off (issue 15, item 8).
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

#include "filters/common/secret_bytes.h"

using namespace sidecrypt::filters;

namespace {

// The VmFlags line of the mapping that holds `p`, from /proc/self/smaps.
std::string vmFlagsOf(const void* p) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  std::ifstream in("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(in, line)) {
    uintptr_t lo = 0;
    uintptr_t hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (line.find("VmFlags:") == 0) {
      if (inside) {
        return line;
      }
      continue;
    }
    if ((head >> std::hex >> lo >> dash >> hi) && dash == '-') {
      inside = addr >= lo && addr < hi;
    }
  }
  return "";
}

}  // namespace

TEST_CASE("SecureBuffer and makeSecure memory is excluded from core dumps", "[secure_memory]") {
  SecureBuffer buf(70000, 0);
  CHECK(vmFlagsOf(buf.data()).find(" dd") != std::string::npos);
  struct Thing {
    alignas(16) uint8_t bytes[100];
  };
  auto thing = makeSecure<Thing>();
  CHECK(reinterpret_cast<uintptr_t>(thing.get()) % 16 == 0);
  CHECK(vmFlagsOf(thing.get()).find(" dd") != std::string::npos);
  SecretBytes secret(32);
  CHECK(vmFlagsOf(secret.data()).find(" dd") != std::string::npos);
}

TEST_CASE("disableCoreDumps makes the process non-dumpable with RLIMIT_CORE 0", "[secure_memory]") {
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    const std::string err = disableCoreDumps();
    rlimit lim{};
    getrlimit(RLIMIT_CORE, &lim);
    const bool ok = err.empty() && prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0 && lim.rlim_cur == 0 &&
                    lim.rlim_max == 0;
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
