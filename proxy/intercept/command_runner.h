#pragma once

#include <string>
#include <vector>

namespace sidecrypt::proxy {

struct CommandResult {
  int exit_code = -1;  // -1: could not start
  std::string output;  // stdout and stderr, interleaved
};

// Runs argv[0] (looked up in PATH) with optional stdin text; waits for it (bounded by the
// command itself: every command sidecrypt runs is a one-shot netfilter/iproute2 call).
CommandResult runCommand(const std::vector<std::string>& argv, const std::string& input = {});

}  // namespace sidecrypt::proxy
