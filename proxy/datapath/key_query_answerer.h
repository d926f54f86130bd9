#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>

#include "filters/common/secret_bytes.h"
#include "filters/gossip/datagram.h"
#include "filters/gossip/key_query.h"
#include "filters/gossip/message_walker.h"
#include "filters/keyring/key_set.h"
#include "proxy/config/config.h"
#include "proxy/net/address.h"

namespace sidecrypt::proxy {

// Every key-query counter in one list (docs/architecture.md §4): COUNTER(field, name). `name` is
// the one spelling /status JSON (`key_queries`), /metrics (`sidecrypt_key_queries_total{outcome}`)
// and the stats log line all use.
#define SIDECRYPT_KEY_QUERY_COUNTERS(COUNTER)                          \
  /* Distinct key-manager queries seen (both directions). */           \
  COUNTER(queries, seen)                                               \
  /* install/use/remove that changed sidecrypt's keyring. */           \
  COUNTER(applied, applied)                                            \
  /* install of a present key, remove of an absent one, list. */       \
  COUNTER(unchanged, unchanged)                                        \
  /* Consul's rules said no (remove primary, use unknown, ...). */     \
  COUNTER(refused, refused)                                            \
  /* The keyring file could not be written: answered false. */         \
  COUNTER(persist_failed, persist_failed)                              \
  /* The agent's own answer replaced by sidecrypt's. */                \
  COUNTER(answers_rewritten, answer_rewritten)                         \
  /* A query response from the agent for no query we handled. */       \
  COUNTER(answers_unmatched, answer_unmatched)                         \
  /* Could not encode an answer (left as the agent wrote it). */       \
  COUNTER(answer_too_large, answer_too_large)                          \
  /* The agent's answers to its own queries, held for the query. */    \
  COUNTER(self_answers_held, self_answer_held)                         \
  /* Held, but never answered for: delivered as the agent wrote it. */ \
  COUNTER(self_answers_expired, self_answer_expired)                   \
  /* The agent's answer waited for the keyring write. */               \
  COUNTER(answers_held_for_commit, answer_held_for_commit)

struct KeyQueryStats {
#define SIDECRYPT_KEY_QUERY_DECLARE(field, name) uint64_t field = 0;
  SIDECRYPT_KEY_QUERY_COUNTERS(SIDECRYPT_KEY_QUERY_DECLARE)
#undef SIDECRYPT_KEY_QUERY_DECLARE

  // Calls fn(name, value) for every counter, in list order.
  template <typename Fn>
  void forEach(Fn&& fn) const {
#define SIDECRYPT_KEY_QUERY_VISIT(field, name) fn(#name, field);
    SIDECRYPT_KEY_QUERY_COUNTERS(SIDECRYPT_KEY_QUERY_VISIT)
#undef SIDECRYPT_KEY_QUERY_VISIT
  }
};

// Key rotation by Serf key-manager queries (docs/spec/consul-rpc-tls.md §4.3), the half of
// GossipObserver that acts: a query (inbound, or originated by the agent; GossipReader finds it)
// is applied to sidecrypt's keyring once per (LTime, ID) with Consul's rules and persisted before
// it counts, and the agent's own answer ("encryption not enabled", since the agent has no keys)
// is rewritten on its way out into the answer an encrypting agent gives (same From, LTime, ID,
// relay header), which the filter then seals with the current primary. Answers that cannot be
// rewritten yet (the agent's answer to its own query, sent before the query; a keyring write
// still running) are held, bounded, and sent later. Loop thread only.
class KeyQueryAnswerer {
 public:
  // Persists `next` as the pool's keyring file and installs it (data path, admin view), off the
  // loop; calls `done` on the loop with an error text when it could not, in which case nothing
  // changed. Until then the agent's answer to that query is held (bounded), then rewritten.
  using CommitDone = std::function<void(std::optional<std::string> error)>;
  using KeyringCommit =
      std::function<void(GossipPool, filters::keyring::KeySetConstSharedPtr, CommitDone)>;
  using KeysOf = std::function<filters::keyring::KeySetConstSharedPtr(GossipPool)>;
  using SelfSend = std::function<void(const SocketAddress& agent, const SocketAddress& dst,
                                      std::span<const uint8_t> bytes)>;
  using SealedSend = std::function<void(GossipPool, const SocketAddress& agent,
                                        const SocketAddress& dst, std::span<const uint8_t> bytes)>;

  explicit KeyQueryAnswerer(KeysOf keys);
  void setKeyringCommit(KeyringCommit commit) { commit_ = std::move(commit); }
  void setSelfSend(SelfSend send) { self_send_ = std::move(send); }
  void setSealedSend(SealedSend send) { sealed_send_ = std::move(send); }
  // Off for products without Serf (agent.profile alertmanager, grafana-alerting): their user
  // messages are the product's own, never read as key queries, and nothing is rewritten.
  void setEnabled(bool on) { enabled_ = on; }
  bool enabled() const { return enabled_; }

  // Whether the query (LTime, ID) of `pool` was handled already (a re-broadcast costs a lookup).
  bool known(GossipPool pool, uint64_t ltime, uint32_t id) {
    return find(pool, ltime, id) != nullptr;
  }
  // A key-manager query seen in the gossip: applied once, then any answer held for it released.
  void onQuery(GossipPool pool, const filters::gossip::KeyQuery& q, bool from_agent);
  // Sends the held answers whose time ran out, as the agent wrote them.
  void expireHeld();
  // A packet from the agent before it is sealed, after GossipReader walked it: rewrites the
  // agent's answer to a handled query in place. Returns false when it holds the packet back.
  // `walker` is the reader's (its buffers are reused to find the answer).
  bool answer(GossipPool pool, const SocketAddress& agent, const SocketAddress& dst,
              filters::gossip::Datagram& packet, filters::gossip::MessageWalker& walker);

  const KeyQueryStats& stats() const { return stats_; }

 private:
  bool enabled_ = true;
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

  void apply(GossipPool pool, const filters::gossip::KeyQuery& q, bool from_agent);
  Pending* find(GossipPool pool, uint64_t ltime, uint32_t id);
  void onCommitted(GossipPool pool, uint64_t ltime, uint32_t id, const std::string& what,
                   const std::optional<std::string>& error);
  bool hold(GossipPool pool, const filters::gossip::AgentResponse& r, const SocketAddress& agent,
            const SocketAddress& dst, const filters::gossip::Datagram& packet,
            std::chrono::steady_clock::duration for_how_long);
  bool anyPending() const;
  void sendHeld(const Held& h, std::span<const uint8_t> bytes);
  void releaseHeld(GossipPool pool, uint64_t ltime, uint32_t id);

  std::array<Held, 8> held_{};
  SelfSend self_send_;
  SealedSend sealed_send_;
  KeysOf keys_;
  KeyringCommit commit_;
  std::array<Pending, 64> pending_{};  // ring buffer of recent key queries
  size_t next_ = 0;
  filters::SecureBuffer scratch_;  // the rewritten answer (base64 keys): guarded, wiped after use
  KeyQueryStats stats_;
};

}  // namespace sidecrypt::proxy
