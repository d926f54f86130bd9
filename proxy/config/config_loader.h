#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "proxy/config/config.h"

namespace sidecrypt::proxy {

struct ConfigError {
  SourceRef where;
  std::string message;
  // "proxy.toml:12:3: gossip.encrypt: key must be 16, 24 or 32 bytes of base64, got 31"
  std::string format() const;
};

using ConfigResult = std::variant<Config, std::vector<ConfigError>>;

// Parses and validates a whole proxy.toml. Every problem is collected, not just the first.
// Touches no file other than `path` itself (keyrings and certificates are checked later).
ConfigResult loadConfig(const std::filesystem::path& path);
// Same, from text; `display_name` is used in messages (tests, fuzzing).
ConfigResult loadConfigText(std::string_view text, const std::string& display_name);

// Every key proxy.toml accepts, as "section.key" (sections of tables, such as [[listener]] or
// [[intercept.port]], as one key): the loader's schema, for tables kept beside it.
std::vector<std::string> configKeys();

// Go-style durations as Consul users write them: "5s", "500ms", "1m30s", "1h".
std::optional<uint32_t> parseDurationMs(std::string_view s);

}  // namespace sidecrypt::proxy
