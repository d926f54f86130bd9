#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "filters/gossip/gossip_datagram_filter.h"

namespace sidecrypt::proxy {

using WallClock = std::chrono::system_clock;

// Lets the census maps be searched with a string_view (no allocation per packet).
struct TextHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using TextMap = std::unordered_map<std::string, V, TextHash, std::equal_to<>>;

// What one remote peer (by IP address) has been seen doing: which of its gossip and RPC traffic
// was encrypted, with which key, what it would lose under verify_incoming, and its TLS identity.
struct PeerRecord {
  std::string address;
  std::string node;  // node name, once gossip names it
  uint64_t packets_encrypted = 0;
  uint64_t packets_plaintext = 0;    // accepted only because verify_incoming is off
  uint64_t packets_refused = 0;      // plaintext dropped under verify_incoming
  uint64_t packets_open_failed = 0;  // sealed with a key we do not hold, tampered, malformed
  struct KeyUse {
    uint64_t count = 0;
    WallClock::time_point last{};
  };
  // Which keys opened its traffic, by fingerprint (indexes shift when the ring changes).
  std::map<std::string, KeyUse> keys_used;
  uint64_t streams_encrypted = 0;
  uint64_t streams_plaintext = 0;
  uint64_t streams_failed = 0;
  uint64_t rpc_tls = 0;
  uint64_t rpc_plaintext = 0;
  uint64_t rpc_refused = 0;
  uint64_t shadow_refused = 0;             // what verify_incoming = true would have refused
  std::vector<std::string> tls_dns_names;  // SANs of its last TLS certificate
  WallClock::time_point first_seen{};
  WallClock::time_point last_seen{};
  WallClock::time_point last_plaintext{};  // epoch when never
  WallClock::time_point last_shadow_refused{};
};

// A gossip member as the gossip itself describes it (alive / suspect / dead messages seen in
// either direction), so checks can tell a silent live member from a safe one.
struct MemberRecord {
  std::string name;
  std::string address;  // IP as text
  uint16_t port = 0;
  std::string state;  // "alive", "suspect", "dead", "left"
  uint32_t incarnation = 0;
  WallClock::time_point updated{};
};

// The per-peer census (rollout issue): bounded to `max_peers`; when full, the peer silent the
// longest is evicted (counted). Loop thread only.
class PeerCensus {
 public:
  explicit PeerCensus(size_t max_peers = 4096) : max_peers_(max_peers) {}

  // `key_fingerprint`: fingerprint of the key that opened it ("" when nothing opened).
  void onPacket(const std::string& ip, const filters::gossip::PacketResult& r,
                const std::string& key_fingerprint);
  void onStream(const std::string& ip, bool encrypted, const std::string& key_fingerprint,
                bool shadow_refused, bool failed);
  void onRpc(const std::string& ip, bool tls, bool refused,
             const std::vector<std::string>* dns_names);
  void setNodeName(std::string_view ip, std::string_view node);
  // Membership messages, with memberlist's incarnation rules (a state applies when it is news).
  // `from`: for dead, the node that declared it (itself = a graceful leave).
  void onAlive(std::string_view node, std::string_view ip, uint16_t port, uint32_t incarnation);
  void onSuspect(std::string_view node, uint32_t incarnation);
  void onDead(std::string_view node, std::string_view from, uint32_t incarnation);
  // The agent's own node name and address (learned from what it sends).
  void setSelf(std::string_view node, std::string_view ip);
  // agent.node_name from the config: the name stays, only the address is learned.
  void fixSelfName(std::string_view node) {
    self_node_ = std::string(node);
    self_fixed_ = true;
  }
  const std::string& selfNode() const { return self_node_; }
  const std::string& selfAddress() const { return self_address_; }
  const TextMap<MemberRecord>& members() const { return members_; }

  // For the "key no longer in use" log: among `ring` (fingerprints), the keys that some peer
  // used within `window` before the previous sweep but no peer used within `window` now.
  // Returns them with the time of their last use.
  std::vector<std::pair<std::string, WallClock::time_point>> keysFallenOutOfUse(
      const std::vector<std::string>& ring, WallClock::time_point now, std::chrono::seconds window);
  uint64_t memberEvictions() const { return member_evictions_; }

  const TextMap<PeerRecord>& peers() const { return peers_; }
  uint64_t evictions() const { return evictions_; }
  size_t capacity() const { return max_peers_; }

  // Called after an alive message (or push/pull state) changed a member's record.
  void setAliveHook(std::function<void(const MemberRecord&)> hook) {
    alive_hook_ = std::move(hook);
  }

  // Called when a peer is first seen sending plaintext (for the state-change log).
  void setFirstPlaintextHook(std::function<void(const PeerRecord&)> hook) {
    first_plaintext_ = std::move(hook);
  }

 private:
  PeerRecord& touch(const std::string& ip);
  void plaintextSeen(PeerRecord& p);

  size_t max_peers_;
  uint64_t evictions_ = 0;
  TextMap<PeerRecord> peers_;
  MemberRecord* member(std::string_view node);
  TextMap<MemberRecord> members_;  // by node name, bounded by max_peers_
  uint64_t member_evictions_ = 0;
  std::unordered_set<std::string> keys_in_use_;
  std::string self_node_;
  bool self_fixed_ = false;
  std::string self_address_;
  std::function<void(const PeerRecord&)> first_plaintext_;
  std::function<void(const MemberRecord&)> alive_hook_;
};

}  // namespace sidecrypt::proxy
