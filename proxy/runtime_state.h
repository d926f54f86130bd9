#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "filters/keyring/key_set.h"
#include "filters/rpc_tls/rpc_tls_setup.h"
#include "proxy/config/config.h"

namespace sidecrypt::proxy {

using filters::rpc_tls::RpcTlsSetup;
using filters::rpc_tls::RpcTlsSetupConstPtr;

// Everything a reload replaces at once: the validated config and the keyrings it points at.
// Built completely on the side; installed only if every part succeeded.
struct RuntimeState {
  Config config;
  filters::keyring::KeySetConstSharedPtr lan_keys;
  filters::keyring::KeySetConstSharedPtr wan_keys;  // servers with a WAN gossip port
  RpcTlsSetupConstPtr rpc;                          // TLS contexts and policies for port 8300
  std::vector<std::string> notices;                 // warnings to log once installed
};
using RuntimeStatePtr = std::shared_ptr<const RuntimeState>;

// Loads proxy.toml and resolves its keyrings (creating a missing keyring file from
// gossip.encrypt only when `create_keyrings`). Errors are complete, formatted lines.
std::variant<RuntimeStatePtr, std::vector<std::string>> buildRuntimeState(
    const std::filesystem::path& config_path, bool create_keyrings);

bool usesGossip(const Config& cfg, GossipPool pool);
bool usesRpc(const Config& cfg);

// Loads certificates, keys and CAs for the RPC port; errors name the file.
std::variant<RpcTlsSetupConstPtr, std::vector<std::string>> buildRpcTlsSetup(const Config& cfg);

}  // namespace sidecrypt::proxy
