#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "proxy/intercept/instance_lock.h"

namespace sidecrypt::proxy::cli {

// Each returns the process exit code: 0 ok, 1 failure (reason printed), 2 usage/config error.
int runProxy(const std::filesystem::path& config);
// The network namespace's instance lock for `role` ("run", "rules install", ...), waiting a few
// seconds while a `rules` command (or a holder that does not say who it is) holds it; else who
// holds it. A null lock: none can be made here (the reason was printed); go on without.
std::variant<std::unique_ptr<InstanceLock>, LockHolder> takeInstanceLock(
    const std::string& role, const std::filesystem::path& config, const std::string& fingerprint);
int checkConfig(const std::filesystem::path& config);
int keygen();

enum class KeyringOp { List, Install, Use, Remove };
// `key` is base64, a fingerprint (use/remove), or "-" to read one line from stdin.
int keyringCommand(KeyringOp op, const std::filesystem::path& file, const std::string& key);

enum class RulesOp { Install, Remove, Print };
// Installs, removes or prints sidecrypt's own netfilter rules and policy routes.
int rulesCommand(RulesOp op, const std::filesystem::path& config);

// Talk to a running sidecrypt through its admin endpoint (`admin` = host:port).
// `all_peers`: list every peer (paged from /peers) instead of the summary and top senders.
int statusCommand(const std::string& admin, bool as_json, bool all_peers);
int reloadCommand(const std::string& admin);
enum class CheckKind { EnforceIncoming, RemoveKey, RemoveCa };
// remove-ca's argument: a PEM file with one CA certificate, or a SHA-256 fingerprint (a prefix of
// 8+ hex digits; colons and upper case allowed). The fingerprint as lower-case hex, or nullopt.
std::optional<std::string> caFingerprintArg(const std::string& arg, std::string& error);
// Exit 0 when the next rollout step is safe, 1 when not (reasons printed), 2 on errors.
// `within`: the window as a duration ("10m", "90s"); "" = the node's census.window.
int checkCommand(const std::string& admin, CheckKind kind, const std::string& key,
                 const std::string& within, bool as_json);
// The same question for the whole fleet, answered from Prometheus's recording rules
// (monitoring/prometheus/sidecrypt-rules.yml): `url` http://host:port[/prefix], `job` the
// scrape job of the sidecrypts, `max_age_s` how old the newest sample of a node may be.
struct FleetGateOptions {
  std::string url;
  std::string job = "sidecrypt";
  std::string within;  // "" = each node's own census.window
  uint32_t max_age_s = 60;
  int timeout_ms = 10'000;
};
int fleetCheckCommand(const FleetGateOptions& opts, CheckKind kind, const std::string& key,
                      bool as_json);

// Offline decoder of captured gossip (`sidecrypt decode`): exit 0 when everything encrypted
// opened, 1 when something encrypted did not, 2 on unusable input or options.
struct DecodeOptions {
  std::string keyring;            // Consul/Serf keyring file
  std::vector<std::string> keys;  // or base64 keys, ring order (first = primary)
  std::string capture;            // pcap/pcapng file
  std::string hex;                // or one UDP payload in hex
  bool hex_is_stream = false;     // --hex is one TCP direction instead
  bool json = false;              // one JSON object per line
  std::string label;              // HEAD gossip label (AAD) for input without a label header
  std::string filter;             // BPF filter applied to the capture
};
int decodeCommand(const DecodeOptions& opts);

// `sidecrypt doctor`: kernel features, netfilter backend, sidecrypt's rules and policy routes
// (present and intact), sysctls, capabilities, the running proxy's /ready and a TCP connect
// through each intercepted port. Every failed check prints its exact fix. Exit 0 when nothing
// failed, 1 otherwise.
struct DoctorOptions {
  std::string config = "/etc/sidecrypt/proxy.toml";
  std::string admin;                     // host:port; default: admin.listen of the config
  std::vector<std::string> probe_addrs;  // connect targets; default 192.0.2.1 (TEST-NET-1)
  std::vector<std::string> only;         // check names or prefixes ("admin.ready", "rules")
  bool no_probe = false;
  bool json = false;
  int probe_timeout_ms = 2000;
};
int doctorCommand(const DoctorOptions& opts);

}  // namespace sidecrypt::proxy::cli
