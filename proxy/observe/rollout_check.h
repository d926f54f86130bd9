#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proxy/observe/peer_census.h"

namespace sidecrypt::proxy {

// The rollout checks, answered from the census on the loop thread (the admin endpoint's
// /check/..., the sidecrypt_check_ok gauge, `sidecrypt check`). Each is O(peers + members).

struct CheckReason {
  std::string cls;   // plaintext, refused, silent, uncovered, no_traffic, no_members,
                     // census_full, census_young, primary, key_in_use, unknown_ca,
                     // local_certificate, ca_in_use
  std::string peer;  // address, "" when the reason is not about one peer
  std::string node;  // wire text: a peer chooses its node name
  std::string why;
};

struct CheckAnswer {
  std::string subject;
  bool ok = false;
  uint32_t within_s = 0;
  std::vector<CheckReason> reasons;
  // Counts over the window, for the summary line and the JSON (`summary`).
  size_t peers_heard = 0;      // peers seen at all within the window
  size_t plaintext_peers = 0;  // sent plaintext (accepted, or what enforcing would refuse)
  size_t refused_peers = 0;    // plaintext refused within the window (a node that enforces)
  size_t live_members = 0;     // alive or suspect members, not this agent
  size_t silent_members = 0;   // live members that sent nothing within the window
  size_t key_peers = 0;        // remove-key: peers that used the key within the window
  size_t ca_peers = 0;         // remove-ca: peers whose chain ended at the CA within the window
};

struct CheckContext {
  WallClock::time_point now{};
  std::chrono::seconds window{600};
  WallClock::time_point started{};  // the census began when the process did
  // Members on gossip ports the rules do not capture (from the data path).
  std::vector<const MemberRecord*> uncovered;
};

// Is it safe to turn gossip encrypt_verify_incoming / RPC verify_incoming on? Yes only when, in
// the window: no peer sent plaintext, some peer was heard, every live member was heard, no
// member is on an uncovered port, the census lost nothing and is at least as old as the window.
CheckAnswer checkEnforceIncoming(const PeerCensus& census, const CheckContext& ctx);

// Is it safe to remove the key with fingerprint `fp`? `primaries`: the pools whose primary it
// is ("lan", "wan").
CheckAnswer checkRemoveKey(const PeerCensus& census, const CheckContext& ctx, std::string_view fp,
                           const std::vector<std::string>& primaries);

// What remove-ca needs to know about the CA besides the census (from the TLS setup's inventory).
struct CaCheckSubject {
  CaFingerprint fingerprint{};
  std::string shown;        // as the answer names it ("" = the fingerprint in hex)
  bool configured = false;  // some loaded CA (ca_file / ca_path) has this fingerprint
  std::string subject;      // its subject, when configured
  // The certificates sidecrypt itself presents that chain to this CA and to no other configured
  // one, e.g. "cert_file /etc/consul/agent.pem (CN=server.dc1.consul)".
  std::vector<std::string> local_dependents;
};

// Is it safe to drop the CA from ca_file / ca_path? Yes only when, in the window, no peer
// presented a chain ending at it (either direction), every certificate sidecrypt presents chains
// to another configured CA, the CA is configured here at all (a typo is not a yes), and the
// census saw the whole window.
CheckAnswer checkRemoveCa(const PeerCensus& census, const CheckContext& ctx,
                          const CaCheckSubject& ca);

// Window counts for /metrics (no names; bounded whatever the fleet size).
struct CensusCounts {
  size_t plaintext_peers = 0;
  size_t refused_peers = 0;
  size_t silent_members = 0;
  // Peers whose traffic opened with each fingerprint within the window, for `fingerprints`.
  std::vector<std::pair<std::string, size_t>> key_peers;
};

// For the per-CA series: per CA (as given) and direction, the peers whose chain ended at it
// within the window and the last time any peer's did (ever, as far as the census remembers).
struct CaUseCounts {
  CaFingerprint fingerprint{};
  size_t peers[2] = {0, 0};  // by filters::Direction (Inbound, Outbound)
  WallClock::time_point last[2] = {};
};
std::vector<CaUseCounts> caUseCounts(const PeerCensus& census, WallClock::time_point now,
                                     std::chrono::seconds window,
                                     const std::vector<CaFingerprint>& cas);
CensusCounts censusCounts(const PeerCensus& census, WallClock::time_point now,
                          std::chrono::seconds window,
                          const std::vector<std::string>& fingerprints);

// "12s ago", "5m ago", "3h ago", "never".
std::string agoText(WallClock::time_point t, WallClock::time_point now);

}  // namespace sidecrypt::proxy
