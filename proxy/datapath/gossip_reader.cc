#include "proxy/datapath/gossip_reader.h"

#include <cstring>

namespace sidecrypt::proxy {

namespace fg = filters::gossip;

class GossipReader::Visitor final : public fg::MessageVisitor {
 public:
  Visitor(GossipReader& r, GossipPool pool, const SocketAddress& sender, bool from_agent)
      : r_(r), pool_(pool), sender_(sender), from_agent_(from_agent) {}

  void onMessage(const fg::Message& m) override {
    if (!m.decoded) {
      return;
    }
    PeerCensus& census = r_.census_;
    switch (m.type) {
      case fg::MsgType::Alive: {
        const auto ip = fg::ipText(m.addr);
        census.onAlive(m.node, ip.view(), m.port, m.incarnation);
        if (from_agent_ && ip.view() == senderIp()) {
          census.setSelf(m.node, senderIp());
        }
        break;
      }
      case fg::MsgType::Suspect:
        census.onSuspect(m.node, m.incarnation);
        break;
      case fg::MsgType::Dead:
        census.onDead(m.node, m.from, m.incarnation);
        break;
      case fg::MsgType::Ping:
      case fg::MsgType::IndirectPing:
        if (!m.source_node.empty()) {
          if (from_agent_) {
            census.setSelf(m.source_node, senderIp());
          } else if (m.source_addr.size() == sender_.ipLen() &&
                     std::memcmp(m.source_addr.data(), sender_.ipBytes(), sender_.ipLen()) == 0) {
            census.setNodeName(senderIp(), m.source_node);
          }
        }
        break;
      case fg::MsgType::User:
        // A re-broadcast of a query already handled costs a lookup, not a decode (keyQueryFrom
        // copies the key into locked memory, which is several syscalls).
        if (r_.answerer_.enabled() && m.has_serf &&
            m.serf.type == static_cast<int>(fg::SerfType::Query) &&
            fg::keyOpForQuery(m.serf.name) && !r_.answerer_.known(pool_, m.serf.ltime, m.serf.id)) {
          if (auto q = fg::keyQueryFrom(m.serf)) {
            r_.answerer_.onQuery(pool_, *q, from_agent_);
          }
        }
        break;
      default:
        break;
    }
  }

  void onNodeState(const fg::NodeState& s) override {
    if (!s.decoded) {
      return;
    }
    PeerCensus& census = r_.census_;
    const auto ip = fg::ipText(s.addr);
    switch (s.state) {
      case 0:
        census.onAlive(s.name, ip.view(), s.port, s.incarnation);
        break;
      case 1:
        census.onAlive(s.name, ip.view(), s.port, s.incarnation);
        census.onSuspect(s.name, s.incarnation);
        break;
      default:
        // dead (2) or left (3): a push/pull does not say who declared it; "left" is a leave.
        census.onDead(s.name, s.state == 3 ? s.name : std::string_view("?"), s.incarnation);
        break;
    }
  }

 private:
  GossipReader& r_;
  GossipPool pool_;
  // The sender's address as text, formatted on first use (most packets never need it).
  std::string_view senderIp() {
    if (sender_text_.len == 0) {
      sender_text_ = fg::ipText({sender_.ipBytes(), sender_.ipLen()});
    }
    return sender_text_.view();
  }
  const SocketAddress& sender_;
  fg::IpText sender_text_;
  bool from_agent_;
};

void GossipReader::packet(GossipPool pool, const SocketAddress& sender, bool from_agent,
                          std::span<const uint8_t> plain) {
  Visitor v(*this, pool, sender, from_agent);
  walker_.walkPacket(plain, v);
}

void GossipReader::stream(GossipPool pool, const SocketAddress& sender, bool from_agent,
                          std::span<const uint8_t> msg) {
  Visitor v(*this, pool, sender, from_agent);
  walker_.walkStream(msg, v);
}

}  // namespace sidecrypt::proxy
