#pragma once

#include <cstdint>

namespace sidecrypt::filters {

// The one definition of a direction (docs/architecture.md §2): who started the traffic.
// Inbound = a peer (it dialled our agent, or sent the datagram our agent receives); Outbound = our
// agent (it dialled a peer, or sent the datagram). Never "up/downstream". The names the code uses
// for it by context are aliases of this type: a stream's `Origin` (who dialled), a configured
// listener's `ListenerDirection`, a UDP relay's `Flow`. Counters that follow the bytes rather
// than the connection are spelled agent_to_peer / peer_to_agent (flowName below); an Outbound
// datagram flows agent_to_peer.
enum class Direction : uint8_t { Inbound, Outbound };

// "agent_to_peer" for Outbound, "peer_to_agent" for Inbound: the label /status and /metrics give
// the gossip counters.
constexpr const char* flowName(Direction d) {
  return d == Direction::Outbound ? "agent_to_peer" : "peer_to_agent";
}

}  // namespace sidecrypt::filters
