#pragma once

#include <filesystem>
#include <string>

namespace sidecrypt::proxy::cli {

// Each returns the process exit code: 0 ok, 1 failure (reason printed), 2 usage/config error.
int runProxy(const std::filesystem::path& config);
int checkConfig(const std::filesystem::path& config);
int keygen();

enum class KeyringOp { List, Install, Use, Remove };
// `key` is base64, a fingerprint (use/remove), or "-" to read one line from stdin.
int keyringCommand(KeyringOp op, const std::filesystem::path& file, const std::string& key);

enum class RulesOp { Install, Remove, Print };
// Installs, removes or prints sidecrypt's own netfilter rules and policy routes.
int rulesCommand(RulesOp op, const std::filesystem::path& config);

}  // namespace sidecrypt::proxy::cli
