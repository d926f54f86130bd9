#pragma once

#include <span>

#include "filters/gossip/datagram.h"
#include "proxy/config/config.h"
#include "proxy/datapath/gossip_reader.h"
#include "proxy/datapath/key_query_answerer.h"
#include "proxy/net/address.h"
#include "proxy/observe/peer_census.h"

namespace sidecrypt::proxy {

// What the data path sees of the agent's gossip plaintext, on both sides of the seal/open filter
// (docs/spec/gossip-wire.md §7, docs/spec/consul-rpc-tls.md §4.3), in two parts:
//  - GossipReader (gossip_reader.h) reads it: membership into the census, the agent's own name;
//  - KeyQueryAnswerer (key_query_answerer.h) acts on it: a Serf key-manager query is applied to
//    sidecrypt's keyring and persisted, and the agent's own answer is rewritten on its way out.
// This class wires the two together in the order a packet needs. The query itself still reaches
// the agent, which relays it as Serf does. Loop thread only.
class GossipObserver {
 public:
  using CommitDone = KeyQueryAnswerer::CommitDone;
  using KeyringCommit = KeyQueryAnswerer::KeyringCommit;
  using KeysOf = KeyQueryAnswerer::KeysOf;
  using SelfSend = KeyQueryAnswerer::SelfSend;
  using SealedSend = KeyQueryAnswerer::SealedSend;

  GossipObserver(PeerCensus& census, KeysOf keys)
      : answerer_(std::move(keys)), reader_(census, answerer_) {}
  void setKeyringCommit(KeyringCommit commit) { answerer_.setKeyringCommit(std::move(commit)); }
  // Serf key-manager queries are answered only for products that run Serf (profileSpeaksSerf).
  void setSerfKeyQueries(bool on) { answerer_.setEnabled(on); }

  // A packet from a peer, after it was opened (or accepted as plaintext) and will be delivered.
  void inbound(GossipPool pool, const SocketAddress& peer, std::span<const uint8_t> plain) {
    reader_.packet(pool, peer, false, plain);
  }
  // One complete plaintext stream message (push/pull, reliable user message) in either direction.
  void stream(GossipPool pool, const SocketAddress& sender, bool from_agent,
              std::span<const uint8_t> msg) {
    reader_.stream(pool, sender, from_agent, msg);
  }
  // A packet from the agent before it is sealed; may rewrite it in place. Returns false when it
  // holds the packet back: the agent's answer to its own query, which Serf sends before the
  // query itself goes out, waits (bounded) for that query, then goes through SelfSend.
  bool outbound(GossipPool pool, const SocketAddress& agent, const SocketAddress& dst,
                filters::gossip::Datagram& packet) {
    answerer_.expireHeld();  // answers held past their time go out first, as written
    reader_.packet(pool, agent, true, packet.data());
    return answerer_.answer(pool, agent, dst, packet, reader_.walker());
  }
  // How the agent's held answer to its own query is delivered (plaintext, locally).
  void setSelfSend(SelfSend send) { answerer_.setSelfSend(std::move(send)); }
  // How a held answer bound for a peer leaves: sealed with the pool's current primary key, from
  // the agent's own address, like any packet of the agent's.
  void setSealedSend(SealedSend send) { answerer_.setSealedSend(std::move(send)); }

  const KeyQueryStats& stats() const { return answerer_.stats(); }

 private:
  KeyQueryAnswerer answerer_;
  GossipReader reader_;
};

}  // namespace sidecrypt::proxy
