#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace sidecrypt::proxy::cli {

// The `sidecrypt status` table from the admin endpoint's /status, /peers and /members documents.
// Wire text in them (node names, addresses) is shown with control characters and invalid UTF-8
// as \xNN, so a peer's name cannot drive the operator's terminal.
std::string renderStatusTable(const nlohmann::json& status, const nlohmann::json& peers,
                              const nlohmann::json& members);

}  // namespace sidecrypt::proxy::cli
