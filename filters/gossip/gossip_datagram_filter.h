#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "filters/gossip/datagram.h"
#include "filters/gossip/gossip_codec.h"
#include "filters/gossip/gossip_policy.h"
#include "filters/gossip/message_inspector.h"
#include "filters/keyring/key_set.h"

namespace sidecrypt::filters::gossip {

enum class Verdict : uint8_t { Forward, Drop };

enum class PacketReason : uint8_t {
  Sealed,             // agent -> peer: sealed with the primary key
  PlaintextPassed,    // agent -> peer: sent unsealed (verify_outgoing off, or no keys)
  Opened,             // peer -> agent: opened with key_index
  PlaintextAccepted,  // peer -> agent: did not open (or no keys) and accepted as plaintext
  OpenFailed,         // dropped: did not open and verify_incoming is on (see open_error)
  BadPadding,         // dropped: authenticated v0 payload with invalid PKCS#7 (0.2.2 panics)
  LabelMismatch,  // dropped: label header missing, malformed or different (docs/spec/gossip-wire.md
                  // §3.6)
  CrashShape,     // dropped: plaintext that panics a 0.2.2 agent (docs/spec/gossip-wire.md §9)
  Malformed,      // dropped: the agent would reject it anyway
  Oversize,       // dropped: no room in the slot, or over a size cap
  Internal,       // dropped: the AEAD failed to seal (should not happen)
};
const char* describe(PacketReason r);

struct PacketResult {
  Verdict verdict = Verdict::Drop;
  PacketReason reason = PacketReason::Internal;
  OpenError open_error = OpenError::None;  // why the open failed, when one was tried
  int key_index = -1;                      // ring index that opened it
  // verify_incoming is off and this packet was accepted only because of that: with
  // verify_incoming = true it would have been dropped. Always false when verify_incoming is on.
  bool shadow_refused = false;
  const char* detail = "";  // inspector reason for CrashShape/Malformed/Oversize
};

// The gossip UDP filter (docs/spec/gossip-wire.md §3, §4.1). One instance serves a whole listener
// and is stateless per packet; it never allocates after construction.
class GossipDatagramFilter {
 public:
  // Room a slot needs around the payload to seal in place (v0 adds up to 16 padding bytes).
  static constexpr size_t kSealHeadroom = kSealHeaderBytes + 2 + kMaxLabelBytes;
  static constexpr size_t kSealTailroom = keyring::kTagBytes + 16;

  GossipDatagramFilter(keyring::KeySetConstSharedPtr keys,
                       std::shared_ptr<const GossipPolicy> policy,
                       NonceSource& nonces = systemNonceSource());

  // Control plane (same loop thread): a new keyring snapshot applies to the next packet.
  void setKeys(keyring::KeySetConstSharedPtr keys) { keys_ = std::move(keys); }
  // Likewise a new policy (a reload's rollout stage or label). Never mutate a policy in place:
  // established streams share the one they started with.
  void setPolicy(std::shared_ptr<const GossipPolicy> policy) { policy_ = std::move(policy); }

  // Agent -> peer: seals in place (header into headroom, tag into tailroom) with the primary key,
  // or passes plaintext when verify_outgoing is off or there are no keys; adds the label header.
  PacketResult onAgentPacket(Datagram& packet);

  // Peer -> agent: checks the label, opens out of place into `spare` trying every key
  // primary-first, applies verify_incoming, and drops crash shapes. On a successful open the two
  // views are swapped, so `packet` always holds what to forward and `spare` the free slot.
  // `spare` needs at least packet.length bytes after its offset.
  PacketResult onPeerPacket(Datagram& packet, Datagram& spare);

  const GossipDatagramStats& stats() const { return stats_; }

 private:
  PacketResult acceptPlaintext(Datagram& packet, bool shadow);
  bool inspectOrDrop(std::span<const uint8_t> plain, PacketResult& r);
  bool checkLabel(Datagram& packet, PacketResult& r);

  keyring::KeySetConstSharedPtr keys_;
  std::shared_ptr<const GossipPolicy> policy_;
  NonceSource& nonces_;
  PacketInspector inspector_;
  GossipDatagramStats stats_;
};

}  // namespace sidecrypt::filters::gossip
