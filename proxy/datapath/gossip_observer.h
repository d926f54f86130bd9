#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "filters/gossip/datagram.h"
#include "filters/gossip/key_query.h"
#include "filters/gossip/message_walker.h"
#include "filters/keyring/key_set.h"
#include "proxy/config/config.h"
#include "proxy/net/address.h"
#include "proxy/observe/peer_census.h"

namespace sidecrypt::proxy {

struct KeyQueryStats {
  uint64_t queries = 0;            // distinct key-manager queries seen (both directions)
  uint64_t applied = 0;            // install/use/remove that changed sidecrypt's keyring
  uint64_t unchanged = 0;          // install of a present key, remove of an absent one, list
  uint64_t refused = 0;            // Consul's rules said no (remove primary, use unknown, ...)
  uint64_t persist_failed = 0;     // the keyring file could not be written: answered false
  uint64_t answers_rewritten = 0;  // the agent's own answer replaced by sidecrypt's
  uint64_t answers_unmatched = 0;  // a query response from the agent for no query we handled
  uint64_t answer_too_large = 0;   // could not encode an answer (left as the agent wrote it)
  uint64_t self_answers_held = 0;  // the agent's answers to its own queries, held for the query
  uint64_t self_answers_expired =
      0;  // held, but never answered for: delivered as the agent wrote it
  uint64_t answers_held_for_commit = 0;  // the agent's answer waited for the keyring write
};

// Reads the plaintext of the agent's UDP gossip on both sides of the seal/open filter
// (docs/spec/gossip-wire.md §7, docs/spec/consul-rpc-tls.md §4.3):
//  - membership: alive/suspect/dead messages and node names into the census, the agent's own
//    name from what it sends;
//  - key rotation: a Serf key-manager query (inbound, or originated by the agent) is applied to
//    sidecrypt's keyring once per (LTime, ID) with Consul's rules, persisted before it counts,
//    and the agent's own answer — "encryption not enabled", since the agent has no keys — is
//    rewritten on its way out into the answer an encrypting agent gives (same From, LTime, ID,
//    relay header), which the filter then seals with the current primary.
// The query itself still reaches the agent, which relays it as Serf does. Loop thread only; no
// allocation per packet except when a query or a membership change is recorded.
class GossipObserver {
 public:
  // Persists `next` as the pool's keyring file and installs it (data path, admin view), off the
  // loop; calls `done` on the loop with an error text when it could not, in which case nothing
  // changed. Until then the agent's answer to that query is held (bounded), then rewritten.
  using CommitDone = std::function<void(std::optional<std::string> error)>;
  using KeyringCommit =
      std::function<void(GossipPool, filters::keyring::KeySetConstSharedPtr, CommitDone)>;
  using KeysOf = std::function<filters::keyring::KeySetConstSharedPtr(GossipPool)>;

  GossipObserver(PeerCensus& census, KeysOf keys);
  void setKeyringCommit(KeyringCommit commit) { commit_ = std::move(commit); }

  // A packet from a peer, after it was opened (or accepted as plaintext) and will be delivered.
  void inbound(GossipPool pool, const SocketAddress& peer, std::span<const uint8_t> plain);
  // One complete plaintext stream message (push/pull, reliable user message) in either direction.
  void stream(GossipPool pool, const SocketAddress& sender, bool from_agent,
              std::span<const uint8_t> msg);
  // A packet from the agent before it is sealed; may rewrite it in place. Returns false when it
  // holds the packet back: the agent's answer to its own query, which Serf sends before the
  // query itself goes out, waits (bounded) for that query, then goes through SelfSend.
  bool outbound(GossipPool pool, const SocketAddress& agent, const SocketAddress& dst,
                filters::gossip::Datagram& packet);
  using SelfSend = std::function<void(const SocketAddress& agent, const SocketAddress& dst,
                                      std::span<const uint8_t> bytes)>;
  void setSelfSend(SelfSend send) { self_send_ = std::move(send); }
  // How a held answer bound for a peer leaves: sealed with the pool's current primary key, from
  // the agent's own address, like any packet of the agent's.
  using SealedSend = std::function<void(GossipPool, const SocketAddress& agent,
                                        const SocketAddress& dst, std::span<const uint8_t> bytes)>;
  void setSealedSend(SealedSend send) { sealed_send_ = std::move(send); }

  const KeyQueryStats& stats() const { return stats_; }

 private:
  struct Pending {
    GossipPool pool = GossipPool::Lan;
    uint64_t ltime = 0;
    uint32_t id = 0;
    filters::gossip::KeyOp op = filters::gossip::KeyOp::List;
    bool ok = false;
    std::string message;
    filters::keyring::KeySetConstSharedPtr keys;  // list-keys: the ring it reported
    std::chrono::steady_clock::time_point expires{};
    bool used = false;
    bool committing = false;  // the keyring write is running; the answer is not known yet
  };
  class Visitor;
  void walk(GossipPool pool, const SocketAddress& sender, bool from_agent,
            std::span<const uint8_t> plain);
  void onKeyQuery(GossipPool pool, const filters::gossip::KeyQuery& q, bool from_agent);
  void applyKeyQuery(GossipPool pool, const filters::gossip::KeyQuery& q, bool from_agent);
  Pending* find(GossipPool pool, uint64_t ltime, uint32_t id);
  void onCommitted(GossipPool pool, uint64_t ltime, uint32_t id, const std::string& what,
                   const std::optional<std::string>& error);
  bool hold(GossipPool pool, const filters::gossip::AgentResponse& r, const SocketAddress& agent,
            const SocketAddress& dst, const filters::gossip::Datagram& packet,
            std::chrono::steady_clock::duration for_how_long);
  bool anyPending() const;

  struct Held {
    bool used = false;
    bool to_self = false;  // the agent's answer to its own query (delivered plaintext, locally)
    GossipPool pool = GossipPool::Lan;
    filters::gossip::AgentResponse response;
    SocketAddress agent;
    SocketAddress dst;
    std::array<uint8_t, 1500> bytes{};  // the agent's own answer as it wrote it
    size_t length = 0;
    std::chrono::steady_clock::time_point expires{};
  };
  void sendHeld(const Held& h, std::span<const uint8_t> bytes);
  void releaseHeld(GossipPool pool, uint64_t ltime, uint32_t id);
  void expireHeld();
  PeerCensus& census_;
  std::array<Held, 8> held_{};
  SelfSend self_send_;
  SealedSend sealed_send_;
  KeysOf keys_;
  KeyringCommit commit_;
  filters::gossip::MessageWalker walker_;
  std::array<Pending, 64> pending_{};  // ring buffer of recent key queries
  size_t next_ = 0;
  filters::SecureBuffer scratch_;  // the rewritten answer (base64 keys): guarded, wiped after use
  KeyQueryStats stats_;
};

}  // namespace sidecrypt::proxy
