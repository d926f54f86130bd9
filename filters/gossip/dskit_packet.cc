#include "filters/gossip/dskit_packet.h"

#include <algorithm>

namespace sidecrypt::filters::gossip {

namespace {

// A slot with the room the datagram filter needs around the payload.
struct Slot {
  std::vector<uint8_t> bytes;
  Datagram view;
  Slot(std::span<const uint8_t> payload, bool copy)
      : bytes(GossipDatagramFilter::kSealHeadroom + payload.size() +
              GossipDatagramFilter::kSealTailroom) {
    if (copy) {
      std::copy(payload.begin(), payload.end(),
                bytes.begin() + static_cast<ptrdiff_t>(GossipDatagramFilter::kSealHeadroom));
    }
    view = Datagram::inSlot(bytes, GossipDatagramFilter::kSealHeadroom, copy ? payload.size() : 0);
  }
};

bool unchanged(PacketReason r) {
  return r == PacketReason::PlaintextPassed || r == PacketReason::PlaintextAccepted;
}

void frame(const DskitParse& parsed, const Datagram& out, DskitPacketResult& r) {
  if (r.packet.verdict != Verdict::Forward) {
    return;
  }
  if (unchanged(r.packet.reason)) {
    r.frame.reserve(2 + parsed.address.size() + parsed.payload.size() + kDskitDigestBytes);
    r.frame.push_back(kDskitPacket);
    r.frame.push_back(static_cast<uint8_t>(parsed.address.size()));
    r.frame.insert(r.frame.end(), parsed.address.begin(), parsed.address.end());
    r.frame.insert(r.frame.end(), parsed.payload.begin(), parsed.payload.end());
    r.frame.insert(r.frame.end(), parsed.digest.begin(), parsed.digest.end());
    return;
  }
  // The address came from a parsed frame, so it fits its length byte.
  appendDskitPacket(parsed.address, out.data(), r.frame);
}

}  // namespace

DskitPacketResult sealDskitPacket(GossipDatagramFilter& filter, const DskitParse& parsed) {
  DskitPacketResult r;
  Slot slot(parsed.payload, true);
  r.packet = filter.onAgentPacket(slot.view);
  frame(parsed, slot.view, r);
  return r;
}

DskitPacketResult openDskitPacket(GossipDatagramFilter& filter, const DskitParse& parsed) {
  DskitPacketResult r;
  Slot packet(parsed.payload, true);
  Slot spare(parsed.payload, false);
  r.packet = filter.onPeerPacket(packet.view, spare.view);
  frame(parsed, packet.view, r);
  return r;
}

}  // namespace sidecrypt::filters::gossip
