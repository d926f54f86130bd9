#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "filters/common/direction.h"
#include "filters/gossip/gossip_codec.h"
#include "filters/gossip/message_inspector.h"
#include "filters/gossip/stream_framer.h"

namespace sidecrypt::filters::gossip {

// Who dialled a TCP connection (docs/architecture.md §2): Inbound = a peer dialled our agent (the
// agent responds), Outbound = our agent dialled a peer (the agent initiates).
using Origin = Direction;

// What a gossip filter does with keys, mirroring memberlist's decision logic
// (docs/spec/gossip-wire.md §4) with Consul's names. Encryption is "enabled" when the KeySet is
// non-empty (config.go EncryptionEnabled); the two verify flags only matter then.
struct GossipPolicy {
  // encrypt_verify_incoming: refuse what does not open (packets dropped, plaintext streams
  // refused with an errMsg). Off: try to open, else accept as plaintext and report a shadow
  // verdict (what "on" would have refused) so operators can see who still sends plaintext.
  bool verify_incoming = true;
  // encrypt_verify_outgoing: seal everything toward peers. Off: send plaintext (still opening
  // what arrives): rollout stage 1 (docs/spec/gossip-wire.md §4.4).
  bool verify_outgoing = true;
  // Version sealed: 1 as every real peer (docs/spec/gossip-wire.md §3.3); 0 only to mimic
  // memberlist ProtocolVersion 1.
  EncryptionVersion seal_version = EncryptionVersion::V1;
  // HEAD label (docs/spec/gossip-wire.md §3.6), <= 255 bytes; empty = none, byte-identical to
  // 0.2.2.
  std::string label;
  // HEAD SkipInboundLabelCheck: accept unlabelled input as if it carried `label`.
  bool skip_inbound_label_check = false;
  // Drop the plaintext shapes that panic 0.2.2 agents (docs/spec/gossip-wire.md §9) before they
  // reach the agent.
  bool drop_crash_shapes = true;
  // Streams: HEAD caps plus a maximum message size.
  FramerLimits stream_limits;
  // Packets: the largest decompressed payload inspected; larger ones are dropped.
  size_t max_decompressed_packet = PacketInspector::kDefaultMaxDecompressed;
};

// ---- counters --------------------------------------------------------------------------------
// One X-macro list per filter, instantiated per direction (agent->peer and peer->agent). Plain
// uint64_t: every filter runs on the single loop thread. The lists double as metric names.

inline constexpr size_t kCountedKeyIndexes = 8;  // opened_key_0..7, then opened_key_other

#define SIDECRYPT_GOSSIP_OPENED_STATS(COUNTER) \
  COUNTER(opened_key_0)                        \
  COUNTER(opened_key_1)                        \
  COUNTER(opened_key_2)                        \
  COUNTER(opened_key_3)                        \
  COUNTER(opened_key_4)                        \
  COUNTER(opened_key_5)                        \
  COUNTER(opened_key_6)                        \
  COUNTER(opened_key_7)                        \
  COUNTER(opened_key_other)

// Datagrams. sealed: sealed toward a peer; opened_key_N: opened with ring index N;
// open_failed: did not open (any reason); plaintext_forwarded: passed unsealed (outgoing off, or
// accepted incoming plaintext); plaintext_refused: dropped because verify_incoming is on;
// malformed: undecodable (bad label header, corrupt compression...); oversize: no room to
// seal/open or over a size cap; shadow_refused: accepted only because verify_incoming is off;
// crash_shape_dropped: would panic a 0.2.2 agent (docs/spec/gossip-wire.md §9); label_mismatch:
// wrong/missing label.
#define SIDECRYPT_GOSSIP_DATAGRAM_STATS(COUNTER) \
  COUNTER(sealed)                                \
  SIDECRYPT_GOSSIP_OPENED_STATS(COUNTER)         \
  COUNTER(open_failed)                           \
  COUNTER(plaintext_forwarded)                   \
  COUNTER(plaintext_refused)                     \
  COUNTER(malformed)                             \
  COUNTER(oversize)                              \
  COUNTER(shadow_refused)                        \
  COUNTER(crash_shape_dropped)                   \
  COUNTER(label_mismatch)

// Streams (counted per message/connection). passthrough_sealed: an already-encrypted frame from
// the agent passed as is; error_replies: errMsg replies sidecrypt wrote; truncated: the stream
// ended inside a message; unexpected_bytes: bytes after the one message of a direction
// (docs/spec/gossip-wire.md §5.1).
#define SIDECRYPT_GOSSIP_STREAM_STATS(COUNTER) \
  SIDECRYPT_GOSSIP_DATAGRAM_STATS(COUNTER)     \
  COUNTER(passthrough_sealed)                  \
  COUNTER(error_replies)                       \
  COUNTER(truncated)                           \
  COUNTER(unexpected_bytes)

#define SIDECRYPT_GOSSIP_DECLARE_COUNTER(name) uint64_t name = 0;

struct GossipDatagramCounters {
  SIDECRYPT_GOSSIP_DATAGRAM_STATS(SIDECRYPT_GOSSIP_DECLARE_COUNTER)
};
struct GossipStreamCounters {
  SIDECRYPT_GOSSIP_STREAM_STATS(SIDECRYPT_GOSSIP_DECLARE_COUNTER)
};

template <class Counters>
struct DirectionStats {
  Counters agent_to_peer;
  Counters peer_to_agent;
};
using GossipDatagramStats = DirectionStats<GossipDatagramCounters>;
using GossipStreamStats = DirectionStats<GossipStreamCounters>;

// Calls f(name, value) for every counter, in list order.
#define SIDECRYPT_GOSSIP_VISIT_COUNTER(name) f(#name, c.name);
template <class F>
void forEachCounter(const GossipDatagramCounters& c, F&& f) {
  SIDECRYPT_GOSSIP_DATAGRAM_STATS(SIDECRYPT_GOSSIP_VISIT_COUNTER)
}
template <class F>
void forEachCounter(const GossipStreamCounters& c, F&& f) {
  SIDECRYPT_GOSSIP_STREAM_STATS(SIDECRYPT_GOSSIP_VISIT_COUNTER)
}
#undef SIDECRYPT_GOSSIP_VISIT_COUNTER

// The opened_key_N counter for ring index `index` (opened_key_other past 7).
template <class Counters>
uint64_t& openedCounter(Counters& c, size_t index) {
  std::array<uint64_t*, kCountedKeyIndexes + 1> slots = {
      &c.opened_key_0, &c.opened_key_1, &c.opened_key_2, &c.opened_key_3,    &c.opened_key_4,
      &c.opened_key_5, &c.opened_key_6, &c.opened_key_7, &c.opened_key_other};
  return *slots[index < kCountedKeyIndexes ? index : kCountedKeyIndexes];
}

}  // namespace sidecrypt::filters::gossip
