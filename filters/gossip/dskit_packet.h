#pragma once

#include <cstdint>
#include <vector>

#include "filters/gossip/dskit_frame.h"
#include "filters/gossip/gossip_datagram_filter.h"

namespace sidecrypt::filters::gossip {

// One dskit packet connection through the gossip datagram filter (docs/spec/dskit-transport.md §3,
// docs/spec/gossip-wire.md §3, §4.1): the payload is what memberlist would have sent as a
// datagram, so it is sealed and opened exactly like one; the frame around it is kept (type byte,
// the sender's advertised address) and the MD5 trailer is recomputed over the new payload. A
// payload passed on unchanged keeps its original trailer, right or wrong, as dskit would see it.
struct DskitPacketResult {
  PacketResult packet;         // the datagram filter's verdict for the payload
  std::vector<uint8_t> frame;  // Forward: the connection's bytes to send on; Drop: empty
};

// Agent -> peer: seals the payload with the primary key (or passes it, as the policy says).
DskitPacketResult sealDskitPacket(GossipDatagramFilter& filter, const DskitParse& parsed);
// Peer -> agent: opens the payload (or accepts plaintext, as the policy says), drops crash shapes.
DskitPacketResult openDskitPacket(GossipDatagramFilter& filter, const DskitParse& parsed);

}  // namespace sidecrypt::filters::gossip
