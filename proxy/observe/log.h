#pragma once

#include <string>

#include "proxy/config/config.h"

namespace sidecrypt::proxy {

// Configures the process-wide spdlog logger: stderr, text or one JSON object per line.
// Returns false (and logs at warn) if the level name is unknown. Keys never reach a log call:
// code logs fingerprints (AeadKey::fingerprint), and tests scan every output for key text.
bool setupLogging(const LogConfig& cfg);
// Sets the level and format of the logger setupLogging made (a reload's [log]).
bool applyLogConfig(const LogConfig& cfg);

// Short ids for log prefixes: "[C42]" for connections, "[P7]" for peers.
std::string connectionTag(unsigned long long id);

}  // namespace sidecrypt::proxy
