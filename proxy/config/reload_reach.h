#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/config/config.h"

namespace sidecrypt::proxy {

// What a reload does with each key of proxy.toml. One table (reload_reach.cc) says it for every
// key the loader accepts; docs/configuration.md ("What a reload applies") is rendered from it,
// and a unit test fails when the two differ or a key is missing.
enum class ReloadReach : uint8_t {
  Live,      // applied at once: the next packet, connection, request or log line uses it
  Reopened,  // the reload re-reads its files or re-binds its listeners; a failure fails it
  Restart,   // read at start only: a reload that changes it fails, naming the key
};

struct ReloadReachEntry {
  std::string_view key;  // "section.key" as configKeys() spells it
  ReloadReach reach;
  std::string_view how;  // one line for the docs: what uses it, or why a restart is needed
  // Restart keys: the running value as text; a reload whose value differs is refused. Never a
  // secret (gossip.encrypt is Reopened).
  std::string (*value)(const Config&) = nullptr;
};

const char* toString(ReloadReach r);
std::span<const ReloadReachEntry> reloadReach();

// The changes from `running` to `next` that a reload cannot apply, one complete error line per
// key ("proxy.toml:31:1: admin.listen: ..."), in file order. Empty: the reload may go on.
std::vector<std::string> reloadRefusals(const Config& running, const Config& next);

// The Markdown table of docs/configuration.md, "What a reload applies".
std::string reloadReachMarkdown();

}  // namespace sidecrypt::proxy
