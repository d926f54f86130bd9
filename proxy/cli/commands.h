#pragma once

#include <cstdint>
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

// Talk to a running sidecrypt through its admin endpoint (`admin` = host:port).
int statusCommand(const std::string& admin, bool as_json);
int reloadCommand(const std::string& admin);
enum class CheckKind { EnforceIncoming, RemoveKey };
// Exit 0 when the next rollout step is safe, 1 when not (reasons printed), 2 on errors.
int checkCommand(const std::string& admin, CheckKind kind, const std::string& key,
                 uint32_t within_s, bool as_json);

}  // namespace sidecrypt::proxy::cli
