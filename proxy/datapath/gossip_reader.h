#pragma once

#include <cstdint>
#include <span>

#include "filters/gossip/message_walker.h"
#include "proxy/config/config.h"
#include "proxy/datapath/key_query_answerer.h"
#include "proxy/net/address.h"
#include "proxy/observe/peer_census.h"

namespace sidecrypt::proxy {

// The half of GossipObserver that reads (docs/spec/gossip-wire.md §7): walks the plaintext of the
// agent's gossip on both sides of the seal/open filter, UDP packets and whole stream messages,
// once each, and records membership (alive/suspect/dead messages, node names, push/pull node
// states) in the census, the agent's own name from what it sends. A Serf key-manager query not
// handled yet goes to the KeyQueryAnswerer. Loop thread only; no allocation per packet except
// when a query or a membership change is recorded.
class GossipReader {
 public:
  GossipReader(PeerCensus& census, KeyQueryAnswerer& answerer)
      : census_(census), answerer_(answerer) {}

  // One packet's plaintext: `sender` is the peer (from_agent false) or our agent.
  void packet(GossipPool pool, const SocketAddress& sender, bool from_agent,
              std::span<const uint8_t> plain);
  // One complete plaintext stream message (push/pull, reliable user message).
  void stream(GossipPool pool, const SocketAddress& sender, bool from_agent,
              std::span<const uint8_t> msg);
  // The walker's buffers, for the answerer to find the agent's answer in the same packet.
  filters::gossip::MessageWalker& walker() { return walker_; }

 private:
  class Visitor;
  PeerCensus& census_;
  KeyQueryAnswerer& answerer_;
  filters::gossip::MessageWalker walker_;
};

}  // namespace sidecrypt::proxy
