#include "proxy/datapath/datapath.h"

// The Datapath's UDP gossip path (docs/architecture.md §3): one capture socket per direction and
// family (UdpRelay), each packet's gossip port resolved once to its pool's filter and pool, and the
// gossip observer and the census fed from there.

#include <sys/socket.h>

#include <span>
#include <string_view>

#include "proxy/net/sockets.h"

namespace sidecrypt::proxy {

namespace fg = filters::gossip;

DatagramRoute Datapath::datagramRouteFor(uint16_t agent_port) {
  // Outbound, the relay falls back to the destination port: a member port maps to its pool.
  const PortSpec* p = destPortFor(agent_port);
  if (p == nullptr || p->protocol != PortProtocol::Gossip || p->transport == Transport::Tcp) {
    return {};
  }
  return {pool(p->pool).datagrams.get(), p->pool};
}

bool Datapath::openRelay(Flow flow, int family, std::string& err) {
  const auto& ic = config_.intercept;
  const uint16_t port = flow == Flow::Outbound ? ic.outbound_port : ic.inbound_port;
  const SocketAddress addr = SocketAddress::loopback(family, port);
  int fd = openUdpCapture(addr, true, err);
  if (fd < 0) {
    err = "UDP capture socket " + addr.toString() + ": " + err;
    return false;
  }
  auto relay = std::make_unique<UdpRelay>(
      loop_, flow, fd, family == AF_INET ? sender4_ : sender6_,
      [this](uint16_t agent_port) { return datagramRouteFor(agent_port); });
  if (!relay->start(err)) {
    return false;
  }
  if (flow == Flow::Outbound) {
    relay->setSelfSourcePort(port);
  }
  // The relay resolved each packet's pool once (datagramRouteFor); the taps and the observer
  // take it from there.
  relay->setTaps([this](const SocketAddress& agent, const SocketAddress& dst, GossipPool which,
                        fg::Datagram& d) { return observer_.outbound(which, agent, dst, d); },
                 [this](const SocketAddress& peer, GossipPool which,
                        std::span<const uint8_t> plain) { observer_.inbound(which, peer, plain); });
  if (flow == Flow::Inbound) {
    // What peers send is what the census is about (our own agent's packets are sealed by us).
    relay->setObserver([this](const SocketAddress& peer, uint16_t, GossipPool which, Flow,
                              const fg::PacketResult& r) {
      std::string_view fp;
      if (r.key_index >= 0) {
        const auto& keys = pool(which).keys;
        if (keys && static_cast<size_t>(r.key_index) < keys->size()) {
          fp = keys->at(static_cast<size_t>(r.key_index)).fingerprint();
        }
      }
      const auto ip = fg::ipText({peer.ipBytes(), peer.ipLen()});
      census_.onPacket(ip.view(), r, fp);
    });
  }
  relays_.push_back(std::move(relay));
  return true;
}

}  // namespace sidecrypt::proxy
