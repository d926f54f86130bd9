#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "proxy/observe/peer_census.h"
#include "proxy/observe/rollout_check.h"
#include "proxy/runtime_state.h"

namespace sidecrypt::proxy {

// The CAs of the running TLS setup (ca_file / ca_path, from its certificate inventory) as the
// remove-ca check and the per-CA series see them. Rebuilt per request or scrape: a few entries.
struct ConfiguredCa {
  CaFingerprint fingerprint{};
  std::string hex;      // 64 lower-case hex digits
  std::string subject;  // RFC 2253
  // The certificates sidecrypt presents (cert_file leafs) whose chain ends at this CA.
  std::vector<std::string> local_dependents;
};
std::vector<ConfiguredCa> configuredCas(const RuntimeState& state);

// remove-ca's subject for `given` (a whole fingerprint, or a prefix of a configured CA's).
CaCheckSubject caCheckSubject(const std::vector<ConfiguredCa>& cas, std::string_view given);

}  // namespace sidecrypt::proxy
