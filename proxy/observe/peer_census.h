#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "filters/common/direction.h"
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

// How many peers (by IP) and, separately, how many gossip members (by name) the census keeps by
// default (`census.max_peers`): three times a 20,000-node fleet's worth would still fit.
inline constexpr size_t kDefaultCensusCapacity = 65536;
// Node names longer than this are not kept as members (counted as dropped). Consul names are
// DNS labels (<= 63 bytes) and Serf names are host names (<= 253): a longer one is hostile.
inline constexpr size_t kMaxCensusNodeName = 256;
// Names remembered per gossip member, the current one included: a member is its address and
// port, and products such as Alertmanager pick a new random node name on every start.
inline constexpr size_t kMaxNamesPerMember = 4;
// Keys remembered per peer (the most recently used win): two during a rotation, four is slack.
inline constexpr size_t kMaxKeysPerPeer = 4;

// CAs remembered per peer, both directions together (the most recently used win): an old and a
// new CA each way during a rotation, and slack.
inline constexpr size_t kMaxCasPerPeer = 6;

// A CA certificate's SHA-256 fingerprint (of its DER encoding), and its text: 64 lower-case hex
// digits, as `openssl x509 -fingerprint -sha256` prints it without the colons.
using CaFingerprint = std::array<uint8_t, 32>;
std::string caFingerprintHex(const CaFingerprint& fp);

// Links of the census's least-recently-seen lists (an intrusive list: no allocation per touch,
// O(1) to move a record to the front, the eviction candidates are at the back).
template <class T>
struct LruLinks {
  T* newer = nullptr;
  T* older = nullptr;
};

template <class T>
class LruList {
 public:
  void pushNewest(T* x) {
    x->lru.older = newest_;
    x->lru.newer = nullptr;
    if (newest_ != nullptr) {
      newest_->lru.newer = x;
    }
    newest_ = x;
    if (oldest_ == nullptr) {
      oldest_ = x;
    }
  }
  void unlink(T* x) {
    (x->lru.newer != nullptr ? x->lru.newer->lru.older : newest_) = x->lru.older;
    (x->lru.older != nullptr ? x->lru.older->lru.newer : oldest_) = x->lru.newer;
    x->lru = {};
  }
  void touch(T* x) {
    if (newest_ != x) {
      unlink(x);
      pushNewest(x);
    }
  }
  T* oldest() const { return oldest_; }
  void clear() { newest_ = oldest_ = nullptr; }

 private:
  T* newest_ = nullptr;
  T* oldest_ = nullptr;
};

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
    std::string fingerprint;  // 8 hex digits: kept inline by std::string, no allocation
    uint64_t count = 0;
    WallClock::time_point last{};
  };
  // Which keys opened its traffic, by fingerprint (indexes shift when the ring changes); at most
  // kMaxKeysPerPeer, the least recently used one gives way.
  std::vector<KeyUse> keys_used;
  const KeyUse* keyUse(std::string_view fingerprint) const;
  // Which CA (trust anchor) verified the TLS certificate chain it presented in an RPC handshake,
  // per direction: Inbound = it dialled in as the TLS client (its client certificate), Outbound =
  // our agent dialled it and it was the server. At most kMaxCasPerPeer; the least recently used
  // gives way. No allocation beyond the first use of a CA.
  struct CaUse {
    CaFingerprint fingerprint{};
    filters::Direction direction = filters::Direction::Inbound;
    uint64_t count = 0;
    WallClock::time_point last{};
  };
  std::vector<CaUse> cas_used;
  const CaUse* caUse(filters::Direction direction, const CaFingerprint& fingerprint) const;
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
  WallClock::time_point last_refused{};  // plaintext packets refused under verify_incoming
  LruLinks<PeerRecord> lru;

  uint64_t plaintextVolume() const { return packets_plaintext + streams_plaintext + rpc_plaintext; }
  uint64_t encryptedVolume() const { return packets_encrypted + streams_encrypted + rpc_tls; }
  // The last time it sent plaintext of any kind (accepted, would be refused, or refused).
  WallClock::time_point lastPlaintextAny() const {
    return std::max({last_plaintext, last_shadow_refused, last_refused});
  }
};

// A gossip member as the gossip itself describes it (alive / suspect / dead messages seen in
// either direction), so checks can tell a silent live member from a safe one.
//
// A member is identified by its address and port: a new name announced alive at the address and
// port of a known member is that member renamed (a restart with a new random name), not a second
// member; its earlier names are kept (bounded, with when each was first and last seen), and a
// late message about an earlier name is old news.
struct MemberRecord {
  std::string name;
  std::string address;  // IP as text
  uint16_t port = 0;
  std::string state;  // "alive", "suspect", "dead", "left"
  uint32_t incarnation = 0;
  WallClock::time_point updated{};
  WallClock::time_point named{};  // when the current name was first seen at this address
  struct NameUse {
    std::string name;
    WallClock::time_point first{};
    WallClock::time_point last{};
  };
  // Earlier names at this address and port, oldest first; at most kMaxNamesPerMember - 1 (no
  // allocation for a member that never changed its name).
  std::vector<NameUse> earlier_names;
  LruLinks<MemberRecord> lru;

  bool live() const { return state == "alive" || state == "suspect"; }
  bool hadName(std::string_view n) const {
    return std::any_of(earlier_names.begin(), earlier_names.end(),
                       [n](const NameUse& u) { return u.name == n; });
  }
};

// "ip:port", "[ip6]:port": how a member's identity is spelled in the census and /members.
std::string memberEndpoint(std::string_view ip, uint16_t port);

// The per-peer census (rollout issue) and the gossip member list, each bounded to `capacity`
// records. When a table is full, the record heard from least recently gives way, except a member
// the gossip says is alive (neither the peer record of a live member nor the member itself is
// evicted): then the new record is not kept (dropped). Either loss is remembered (lossSince), so
// a check over a window that saw one answers "no" instead of a "yes" the census cannot back.
// Eviction looks at a bounded number of candidates: a flood of new sources costs O(1) each.
// Loop thread only.
class PeerCensus {
 public:
  using NowFn = WallClock::time_point (*)();
  explicit PeerCensus(size_t capacity = kDefaultCensusCapacity, NowFn now = &WallClock::now)
      : capacity_(capacity), now_(now) {}
  // Copying would leave the copy's lists pointing into this census; moving keeps the map's nodes.
  PeerCensus(const PeerCensus&) = delete;
  PeerCensus& operator=(const PeerCensus&) = delete;
  PeerCensus(PeerCensus&&) = default;
  PeerCensus& operator=(PeerCensus&&) = delete;

  // `ip` as fg::ipText renders it; `key_fingerprint`: the key that opened it ("" when none).
  void onPacket(std::string_view ip, const filters::gossip::PacketResult& r,
                std::string_view key_fingerprint);
  void onStream(std::string_view ip, bool encrypted, std::string_view key_fingerprint,
                bool shadow_refused, bool failed);
  void onRpc(std::string_view ip, bool tls, bool refused,
             const std::vector<std::string>* dns_names);
  // An RPC TLS handshake whose verification ended at the CA `anchor` (see PeerRecord::CaUse).
  void onPeerChain(std::string_view ip, filters::Direction direction, const CaFingerprint& anchor);
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
  // Whether `m` is this agent itself (by name, or by address while the name is unknown).
  bool isSelf(const MemberRecord& m) const {
    return m.name == self_node_ || (self_node_.empty() && m.address == self_address_);
  }
  const TextMap<MemberRecord>& members() const { return members_; }
  // The member the gossip placed at `ip` most recently (nullptr when none).
  const MemberRecord* memberAt(std::string_view ip) const;
  uint64_t memberRenames() const { return member_renames_; }  // new names at a known endpoint
  const TextMap<PeerRecord>& peers() const { return peers_; }
  const PeerRecord* peer(std::string_view ip) const {
    auto it = peers_.find(ip);
    return it == peers_.end() ? nullptr : &it->second;
  }

  // For the "key no longer in use" log: among `ring` (fingerprints), the keys that some peer
  // used within `window` before the previous sweep but no peer used within `window` now.
  // Returns them with the time of their last use.
  std::vector<std::pair<std::string, WallClock::time_point>> keysFallenOutOfUse(
      const std::vector<std::string>& ring, WallClock::time_point now, std::chrono::seconds window);

  // A new capacity (reload): a smaller one evicts the least recently heard records at once.
  void setCapacity(size_t capacity);
  size_t capacity() const { return capacity_; }
  uint64_t evictions() const { return evictions_; }               // peers that gave way
  uint64_t memberEvictions() const { return member_evictions_; }  // dead/left members that did
  uint64_t dropped() const { return dropped_; }                   // records not kept: full
  // The latest moment the census lost information about (an evicted record's last traffic, a
  // record not kept): a window reaching back to it cannot be answered from the census.
  WallClock::time_point lossSince() const { return loss_; }
  WallClock::time_point now() const { return now_(); }

  // Called after an alive message (or push/pull state) changed a member's record.
  void setAliveHook(std::function<void(const MemberRecord&)> hook) {
    alive_hook_ = std::move(hook);
  }

  // Called when a peer is first seen sending plaintext (for the state-change log).
  void setFirstPlaintextHook(std::function<void(const PeerRecord&)> hook) {
    first_plaintext_ = std::move(hook);
  }

 private:
  static constexpr int kEvictionCandidates = 16;

  PeerRecord* touch(std::string_view ip);
  bool makeRoomForPeer();
  bool makeRoomForMember();
  void plaintextSeen(PeerRecord& p);
  void keyUsed(PeerRecord& p, std::string_view fingerprint);
  bool liveMemberAt(const PeerRecord& p) const;
  void forgetAddress(const MemberRecord& m);
  void rename(MemberRecord& m, std::string_view node);
  MemberRecord* member(std::string_view node);
  void lost(WallClock::time_point t) { loss_ = std::max(loss_, t); }

  size_t capacity_;
  NowFn now_;
  uint64_t evictions_ = 0;
  uint64_t member_evictions_ = 0;
  uint64_t member_renames_ = 0;
  uint64_t dropped_ = 0;
  WallClock::time_point loss_{};
  TextMap<PeerRecord> peers_;
  LruList<PeerRecord> peer_lru_;
  TextMap<MemberRecord> members_;   // by node name
  TextMap<std::string> member_at_;  // member address -> its name (the latest to claim it)
  // A member's address and port in binary (IPv4 as v4-mapped IPv6), 64 bytes a member in all.
  struct Endpoint {
    std::array<uint8_t, 16> ip{};
    uint16_t port = 0;
    bool operator==(const Endpoint&) const = default;
  };
  struct EndpointHash {
    size_t operator()(const Endpoint& e) const;
  };
  static std::optional<Endpoint> endpointOf(std::string_view ip, uint16_t port);
  // Endpoint -> the member there (records never move: the map's nodes stay put on rehash and
  // on rename; forgetAddress drops the entry before a record is erased).
  std::unordered_map<Endpoint, MemberRecord*, EndpointHash> member_on_;
  LruList<MemberRecord> member_lru_;  // live members (alive, suspect), least recently updated last
  LruList<MemberRecord> gone_lru_;    // dead and left members: the first to give way
  std::unordered_set<std::string> keys_in_use_;
  std::string self_node_;
  bool self_fixed_ = false;
  std::string self_address_;
  std::function<void(const PeerRecord&)> first_plaintext_;
  std::function<void(const MemberRecord&)> alive_hook_;
};

}  // namespace sidecrypt::proxy
