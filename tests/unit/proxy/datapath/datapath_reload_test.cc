// Datapath::apply (a reload): packets and new gossip streams take the new rollout stage at once;
// a gossip stream that was established before the reload keeps the stage it started with
// (docs/architecture.md, "Reload"; docs/rollout.md). No sockets: the data path is built, never
// started.
#include <uv.h>
#include <catch2/catch.hpp>

#include <memory>

#include "filters/common/buffer.h"
#include "filters/gossip/gossip_stream_filter.h"
#include "filters/keyring/aead_key.h"
#include "proxy/datapath/datapath.h"
#include "tests/common/gossip_messages.h"

using namespace sidecrypt;
using namespace sidecrypt::proxy;
namespace fg = sidecrypt::filters::gossip;
using Bytes = std::vector<uint8_t>;

namespace {

filters::keyring::KeySetConstSharedPtr ringOf(const Bytes& key) {
  std::vector<std::unique_ptr<filters::keyring::AeadKey>> v;
  v.push_back(filters::keyring::AeadKey::create(filters::SecretBytes::copyOf(key)));
  return std::make_shared<const filters::keyring::KeySet>(std::move(v));
}

std::shared_ptr<RuntimeState> stage(bool verify_incoming, bool verify_outgoing,
                                    const filters::keyring::KeySetConstSharedPtr& ring) {
  auto s = std::make_shared<RuntimeState>();
  s->config.agent.profile = Profile::Serf;
  s->config.intercept.ports.push_back(
      {7946, PortProtocol::Gossip, Transport::Both, GossipPool::Lan, "serf"});
  s->config.gossip.encrypt_verify_incoming = verify_incoming;
  s->config.gossip.encrypt_verify_outgoing = verify_outgoing;
  s->lan_keys = ring;
  return s;
}

struct Loop {
  uv_loop_t loop{};
  Loop() { REQUIRE(uv_loop_init(&loop) == 0); }
  ~Loop() {
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);  // nothing left behind
  }
};

// The agent's side of one outbound stream: what reaches the peer for `msg`.
Bytes agentSends(fg::GossipStreamFilter& f, const Bytes& msg) {
  filters::Buffer in;
  filters::Buffer to_agent;
  filters::Buffer to_peer;
  fg::StreamIo io{to_agent, to_peer};
  in.append(msg);
  f.onAgentData(in, false, io);
  const auto out = to_peer.readable();
  return {out.begin(), out.end()};
}

}  // namespace

TEST_CASE("datapath: a reload leaves established gossip streams at the stage they started with",
          "[datapath][reload]") {
  Loop l;
  const auto ring = ringOf(Bytes(32, 7));
  Datapath dp(&l.loop, *stage(true, true, ring));
  // What a stream established before the reload holds (processorFor hands it the pool's policy).
  const auto held = dp.pool(GossipPool::Lan).policy;
  fg::GossipStreamFilter established(fg::Origin::Outbound, ring, held,
                                     std::make_shared<fg::GossipStreamStats>());

  dp.apply(*stage(false, false, ring));  // back to rollout stage 1: plaintext both ways

  CHECK(held->verify_outgoing);
  CHECK(held->verify_incoming);
  CHECK_FALSE(dp.pool(GossipPool::Lan).policy->verify_outgoing);
  CHECK_FALSE(dp.pool(GossipPool::Lan).policy->verify_incoming);
  // The established stream still seals the agent's message; one begun now sends it in clear.
  const Bytes msg = test::streamUserMessage(Bytes(40, 'x'));
  CHECK(agentSends(established, msg) != msg);
  fg::GossipStreamFilter fresh(fg::Origin::Outbound, ring, dp.pool(GossipPool::Lan).policy,
                               std::make_shared<fg::GossipStreamStats>());
  CHECK(agentSends(fresh, msg) == msg);
}

TEST_CASE("datapath: a reload's stage applies to the next gossip packet", "[datapath][reload]") {
  Loop l;
  const auto ring = ringOf(Bytes(32, 7));
  Datapath dp(&l.loop, *stage(true, true, ring));
  // A memberlist ping from the agent, in clear.
  const Bytes ping = {0x00, 0x82, 0xa4, 'N',  'o', 'd', 'e', 0xa6, 'n', 'o', 'd',
                      'e',  '-',  'b',  0xa5, 'S', 'e', 'q', 'N',  'o', 0x09};
  auto send = [&dp, &ping] {
    Bytes slot(fg::GossipDatagramFilter::kSealHeadroom + ping.size() +
               fg::GossipDatagramFilter::kSealTailroom);
    auto d = fg::Datagram::inSlot(slot, fg::GossipDatagramFilter::kSealHeadroom, ping.size());
    std::copy(ping.begin(), ping.end(), d.data().begin());
    return dp.pool(GossipPool::Lan).datagrams->onAgentPacket(d).reason;
  };
  CHECK(send() == fg::PacketReason::Sealed);
  dp.apply(*stage(true, false, ring));
  CHECK(send() == fg::PacketReason::PlaintextPassed);
  dp.apply(*stage(true, true, ring));
  CHECK(send() == fg::PacketReason::Sealed);
}
