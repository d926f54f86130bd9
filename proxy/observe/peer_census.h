#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "filters/gossip/gossip_datagram_filter.h"

namespace sidecrypt::proxy {

using WallClock = std::chrono::system_clock;

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
  void setNodeName(const std::string& ip, const std::string& node);

  const std::unordered_map<std::string, PeerRecord>& peers() const { return peers_; }
  uint64_t evictions() const { return evictions_; }
  size_t capacity() const { return max_peers_; }

  // Called when a peer is first seen sending plaintext (for the state-change log).
  void setFirstPlaintextHook(std::function<void(const PeerRecord&)> hook) {
    first_plaintext_ = std::move(hook);
  }

 private:
  PeerRecord& touch(const std::string& ip);
  void plaintextSeen(PeerRecord& p);

  size_t max_peers_;
  uint64_t evictions_ = 0;
  std::unordered_map<std::string, PeerRecord> peers_;
  std::function<void(const PeerRecord&)> first_plaintext_;
};

}  // namespace sidecrypt::proxy
