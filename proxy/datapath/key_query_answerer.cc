#include "proxy/datapath/key_query_answerer.h"

#include <sodium.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <variant>

#include "filters/common/safe_text.h"

namespace sidecrypt::proxy {

namespace fg = filters::gossip;
using filters::gossip::KeyOp;

KeyQueryAnswerer::KeyQueryAnswerer(KeysOf keys) : keys_(std::move(keys)) {
  scratch_.resize(fg::kQueryResponseSizeLimit + 512);
}

bool KeyQueryAnswerer::anyPending() const {
  const auto now = std::chrono::steady_clock::now();
  return std::any_of(pending_.begin(), pending_.end(),
                     [now](const Pending& p) { return p.used && p.expires > now; });
}

KeyQueryAnswerer::Pending* KeyQueryAnswerer::find(GossipPool pool, uint64_t ltime, uint32_t id) {
  for (auto& p : pending_) {
    if (p.used && p.pool == pool && p.ltime == ltime && p.id == id) {
      return &p;
    }
  }
  return nullptr;
}

void KeyQueryAnswerer::sendHeld(const Held& h, std::span<const uint8_t> bytes) {
  if (h.to_self) {
    if (self_send_) {
      self_send_(h.agent, h.dst, bytes);
    }
  } else if (sealed_send_) {
    sealed_send_(h.pool, h.agent, h.dst, bytes);
  }
}

void KeyQueryAnswerer::expireHeld() {
  const auto now = std::chrono::steady_clock::now();
  for (auto& h : held_) {
    if (h.used && h.expires <= now) {
      h.used = false;
      ++stats_.self_answers_expired;
      sendHeld(h, {h.bytes.data(), h.length});
      sodium_memzero(h.bytes.data(), h.length);
    }
  }
}

void KeyQueryAnswerer::releaseHeld(GossipPool pool, uint64_t ltime, uint32_t id) {
  Pending* p = find(pool, ltime, id);
  if (p == nullptr || p->committing) {
    return;  // not known yet: released by onCommitted (or by expiry)
  }
  for (auto& h : held_) {
    if (!h.used || h.pool != pool || h.response.ltime != ltime || h.response.id != id) {
      continue;
    }
    h.used = false;
    const fg::KeyResult result{p->ok, p->message, p->keys.get()};
    const size_t n = fg::encodeKeyResponsePacket(h.response, p->op, result, scratch_);
    if (n != 0) {
      ++stats_.answers_rewritten;
      sendHeld(h, {scratch_.data(), n});
    } else {
      ++stats_.answer_too_large;
      sendHeld(h, {h.bytes.data(), h.length});
    }
    sodium_memzero(scratch_.data(), scratch_.size());
    sodium_memzero(h.bytes.data(), h.length);
  }
}

bool KeyQueryAnswerer::hold(GossipPool pool, const fg::AgentResponse& r, const SocketAddress& agent,
                            const SocketAddress& dst, const fg::Datagram& packet,
                            std::chrono::steady_clock::duration for_how_long) {
  for (auto& h : held_) {
    if (!h.used && packet.length <= h.bytes.size()) {
      h.used = true;
      h.to_self = dst.sameIp(agent);
      h.pool = pool;
      h.response = r;
      h.agent = agent;
      h.dst = dst;
      std::copy_n(packet.data().begin(), packet.length, h.bytes.begin());
      h.length = packet.length;
      h.expires = std::chrono::steady_clock::now() + for_how_long;
      return true;
    }
  }
  return false;
}

bool KeyQueryAnswerer::answer(GossipPool pool, const SocketAddress& agent, const SocketAddress& dst,
                              fg::Datagram& packet, fg::MessageWalker& walker) {
  if (!enabled_) {
    return true;
  }
  const bool to_self = dst.sameIp(agent);
  if (!to_self && !anyPending()) {
    return true;
  }
  const auto r = fg::agentQueryResponse(walker, packet.data());
  if (!r) {
    return true;
  }
  Pending* p = find(pool, r->ltime, r->id);
  if (p == nullptr && to_self && r->key_response) {
    // Serf answers its own query before gossiping it: hold a key-manager answer until the
    // query passes (acks and answers to user queries go straight through).
    if (hold(pool, *r, agent, dst, packet, std::chrono::seconds(3))) {
      ++stats_.self_answers_held;
      return false;
    }
  }
  if (p != nullptr && p->committing) {
    // The keyring write runs off the loop: hold the answer until it is known. Should the write
    // outlast the hold, the agent's own answer (a failure) goes out, sealed as usual.
    if (hold(pool, *r, agent, dst, packet, std::chrono::seconds(5))) {
      ++stats_.answers_held_for_commit;
      return false;
    }
  }
  if (p == nullptr) {
    ++stats_.answers_unmatched;
    return true;
  }
  const fg::KeyResult result{p->ok, p->message, p->keys.get()};
  const size_t n = fg::encodeKeyResponsePacket(*r, p->op, result, scratch_);
  if (n == 0 || n > packet.length + packet.tailroom()) {
    ++stats_.answer_too_large;
    sodium_memzero(scratch_.data(), scratch_.size());
    return true;
  }
  std::copy_n(scratch_.begin(), n,
              packet.slot.begin() + static_cast<std::ptrdiff_t>(packet.offset));
  packet.length = n;
  sodium_memzero(scratch_.data(), n);
  ++stats_.answers_rewritten;
  spdlog::debug("key query {} ({}:{}): answered for {} with result={}", fg::keyOpName(p->op),
                r->ltime, r->id, filters::escapeForLog(r->from()), p->ok);
  return true;
}

void KeyQueryAnswerer::onQuery(GossipPool pool, const fg::KeyQuery& q, bool from_agent) {
  if (!enabled_) {
    return;
  }
  if (find(pool, q.ltime, q.id) != nullptr) {
    return;  // a re-broadcast of a query already handled
  }
  apply(pool, q, from_agent);
  releaseHeld(pool, q.ltime, q.id);
}

void KeyQueryAnswerer::apply(GossipPool pool, const fg::KeyQuery& q, bool from_agent) {
  ++stats_.queries;
  Pending& p = pending_[next_];
  next_ = (next_ + 1) % pending_.size();
  p = Pending{};
  p.used = true;
  p.pool = pool;
  p.ltime = q.ltime;
  p.id = q.id;
  p.op = q.op;
  // Serf answers before receipt + Timeout; keep the answer a little longer than that for late
  // relay copies, and at least 10 s.
  const auto timeout = std::chrono::nanoseconds(std::max<int64_t>(q.timeout_ns, 0));
  p.expires = std::chrono::steady_clock::now() +
              std::max<std::chrono::steady_clock::duration>(
                  std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout * 2),
                  std::chrono::seconds(10));
  const auto keys = keys_(pool);
  const char* pool_name = pool == GossipPool::Lan ? "lan" : "wan";
  const char* who = from_agent ? "the agent" : "a peer";
  if (!q.payload_ok) {
    p.ok = false;  // serf: "Failed to decode key request", answered with an empty message
    ++stats_.refused;
    spdlog::warn("key query {} from {} ({} pool): the key request does not decode",
                 fg::keyOpName(q.op), who, pool_name);
    return;
  }
  if (!keys || keys->empty()) {
    p.ok = false;
    p.message = q.op == KeyOp::List ? "Keyring is empty (encryption not enabled)"
                                    : "No keyring to modify (encryption not enabled)";
    ++stats_.refused;
    return;
  }
  if (q.op == KeyOp::List) {
    p.ok = true;
    p.keys = keys;
    ++stats_.unchanged;
    spdlog::info("key query list-keys from {} ({} pool): answering with {} key(s)", who, pool_name,
                 keys->size());
    return;
  }
  const std::string fp =
      q.key.size() == 0 ? "(none)" : filters::keyring::fingerprintOf(q.key.span());
  filters::keyring::KeySet::Result next;
  switch (q.op) {
    case KeyOp::Install:
      next = keys->install(q.key);
      break;
    case KeyOp::Use:
      next = keys->use(q.key);
      break;
    default:
      next = keys->remove(q.key);
      break;
  }
  if (auto* err = std::get_if<std::string>(&next)) {
    p.ok = false;
    p.message = *err;
    ++stats_.refused;
    spdlog::warn("key query {} {} from {} ({} pool) refused: {}", fg::keyOpName(q.op), fp, who,
                 pool_name, *err);
    return;
  }
  auto ring = std::get<filters::keyring::KeySetConstSharedPtr>(std::move(next));
  bool same = ring->size() == keys->size();
  for (size_t i = 0; same && i < ring->size(); ++i) {
    same = ring->fingerprint(i) == keys->fingerprint(i);
  }
  if (same) {
    p.ok = true;
    ++stats_.unchanged;
    spdlog::info("key query {} {} from {} ({} pool): keyring already in that state",
                 fg::keyOpName(q.op), fp, who, pool_name);
    return;
  }
  if (!commit_) {
    p.ok = false;
    p.message = "sidecrypt cannot persist keyring changes here";
    ++stats_.persist_failed;
    return;
  }
  p.committing = true;
  const std::string what =
      std::string(fg::keyOpName(q.op)) + " " + fp + " from " + who + " (" + pool_name + " pool)";
  commit_(pool, ring,
          [this, pool, ltime = q.ltime, id = q.id, what](const std::optional<std::string>& e) {
            onCommitted(pool, ltime, id, what, e);
          });
}

void KeyQueryAnswerer::onCommitted(GossipPool pool, uint64_t ltime, uint32_t id,
                                   const std::string& what,
                                   const std::optional<std::string>& error) {
  if (error) {
    // Never report success for a change that could not be persisted (the ring is unchanged).
    ++stats_.persist_failed;
    spdlog::error("key query {}: keyring not changed: {}", what, *error);
  } else {
    ++stats_.applied;
    spdlog::info("key query {}: applied and persisted", what);
  }
  Pending* p = find(pool, ltime, id);
  if (p == nullptr) {
    return;  // evicted meanwhile (64 newer queries): late answers go out as the agent wrote them
  }
  p->committing = false;
  p->ok = !error;
  if (error) {
    p->message = "Failed to write keyring file: " + *error;
  }
  releaseHeld(pool, ltime, id);
}

}  // namespace sidecrypt::proxy
