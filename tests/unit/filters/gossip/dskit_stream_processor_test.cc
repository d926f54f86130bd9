#include "filters/gossip/dskit_stream_processor.h"

#include <catch2/catch.hpp>

#include <memory>
#include <string>

#include "filters/gossip/dskit_frame.h"
#include "filters/stream_driver.h"
#include "gossip_test_util.h"

// Two sidecars on one dskit connection (docs/spec/dskit-transport.md §3, §4): the dialling agent's
// sidecar (Outbound) and the answering agent's (Inbound), each run by StreamDriver as a session
// runs it, with the bytes of tests/vectors/dskit/live.json.
using namespace sidecrypt::filters;
using namespace sidecrypt::filters::gossip;
using namespace sidecrypt::test::gossip;

namespace {

std::shared_ptr<const GossipPolicy> policy(bool in, bool out) {
  auto p = std::make_shared<GossipPolicy>();
  p->verify_incoming = in;
  p->verify_outgoing = out;
  return p;
}

struct Sidecar {
  Buffer agent_in, peer_in, to_agent, to_peer;
  bool agent_eof = false, peer_eof = false;
  std::unique_ptr<StreamDriver> driver;

  Sidecar(Origin origin, const keyring::KeySetConstSharedPtr& ring,
          const std::shared_ptr<const GossipPolicy>& pol) {
    auto stats = std::make_shared<GossipStreamStats>();
    auto packets = std::make_shared<GossipDatagramFilter>(ring, pol);
    driver = std::make_unique<StreamDriver>(std::make_unique<DskitStreamProcessor>(
        origin, std::make_unique<GossipStreamFilter>(origin, ring, pol, stats), ring, packets));
  }
  void run() { driver->run({to_agent, to_peer}, agent_in, agent_eof, peer_in, peer_eof); }
  const DskitStreamProcessor& proc() const {
    return static_cast<const DskitStreamProcessor&>(driver->filter());
  }
};

// Runs `bytes` from one side in chunks of `chunk` (then its FIN if `fin`).
void feed(Sidecar& s, bool from_agent, const Bytes& bytes, size_t chunk, bool fin) {
  Buffer& in = from_agent ? s.agent_in : s.peer_in;
  for (size_t at = 0; at < bytes.size(); at += chunk) {
    in.append(std::span<const uint8_t>(bytes).subspan(at, std::min(chunk, bytes.size() - at)));
    s.run();
  }
  if (fin) {
    (from_agent ? s.agent_eof : s.peer_eof) = true;
    s.run();
  }
}

Bytes take(Buffer& b) {
  Bytes out = contents(b);
  b.clear();
  return out;
}

}  // namespace

TEST_CASE("dskit_stream_processor: a packet is sealed by one sidecar and opened by the other",
          "[gossip][dskit][vectors]") {
  auto doc = loadVectors("dskit/live.json");
  auto ring = ringOf(Bytes(16, 9));
  int checked = 0;
  for (const auto& c : doc["connections"]) {
    if (c["kind"] != "packet") {
      continue;
    }
    const Bytes wire = hex(c["dialler_hex"]);
    for (size_t chunk : {wire.size(), size_t{1}, size_t{7}}) {
      Sidecar out(Origin::Outbound, ring, policy(true, true));
      CHECK(out.driver->wantsUpstream());
      feed(out, true, wire, chunk, false);
      CHECK(out.to_peer.empty());  // nothing before the agent's FIN ends the packet
      feed(out, true, {}, 1, true);
      REQUIRE_FALSE(out.driver->draining());
      CHECK(out.driver->endToPeer());
      const Bytes sealed = take(out.to_peer);
      auto p = parseDskit(sealed, true);
      REQUIRE(p.status == DskitStatus::Packet);
      CHECK(p.digest_ok);
      CHECK(p.payload.size() == wire.size() - 2 - wire[1] - kDskitDigestBytes + kV1Overhead);

      Sidecar in(Origin::Inbound, ring, policy(true, true));
      feed(in, false, sealed, chunk, false);
      CHECK_FALSE(in.driver->wantsUpstream());  // the agent is not dialled before the open
      CHECK(in.to_agent.empty());
      feed(in, false, {}, 1, true);
      REQUIRE(in.driver->wantsUpstream());
      CHECK(in.driver->endToAgent());
      CHECK(take(in.to_agent) == wire);
      CHECK(in.proc().packetResult().reason == PacketReason::Opened);
      // The agent (dskit's receiver) closes without a word; the FIN goes on to the peer.
      feed(in, true, {}, 1, true);
      CHECK(in.driver->endToPeer());
      CHECK_FALSE(in.driver->draining());
    }
    ++checked;
  }
  CHECK(checked >= 6);
}

TEST_CASE("dskit_stream_processor: a push/pull stream is sealed both ways after its type byte",
          "[gossip][dskit][vectors]") {
  auto doc = loadVectors("dskit/live.json");
  auto ring = ringOf(Bytes(32, 5));
  int checked = 0;
  for (const auto& c : doc["connections"]) {
    if (c["kind"] != "stream") {
      continue;
    }
    const Bytes request = hex(c["dialler_hex"]);
    const Bytes reply = hex(c["responder_hex"]);
    Sidecar out(Origin::Outbound, ring, policy(true, true));
    Sidecar in(Origin::Inbound, ring, policy(true, true));
    feed(out, true, request, 5, false);
    const Bytes sealed_request = take(out.to_peer);
    REQUIRE(sealed_request.size() > 2);
    CHECK(sealed_request[0] == kDskitStream);
    CHECK(sealed_request[1] == kEncryptMsg);  // memberlist's encrypted frame after the [2]

    feed(in, false, sealed_request, 3, false);
    REQUIRE(in.driver->wantsUpstream());
    CHECK(take(in.to_agent) == request);  // the answering agent gets the dialler's bytes

    feed(in, true, reply, 11, false);
    const Bytes sealed_reply = take(in.to_peer);
    REQUIRE_FALSE(sealed_reply.empty());
    CHECK(sealed_reply[0] == kEncryptMsg);  // no prefix on the reply
    feed(out, false, sealed_reply, 2, false);
    CHECK(take(out.to_agent) == reply);
    CHECK_FALSE(out.driver->draining());
    CHECK_FALSE(in.driver->draining());
    ++checked;
  }
  CHECK(checked >= 2);
}

TEST_CASE("dskit_stream_processor: refusals", "[gossip][dskit][vectors]") {
  auto ring = ringOf(Bytes(16, 9));
  auto negatives = loadVectors("dskit/negatives.json");
  for (const auto& v : negatives["negatives"]) {
    const std::string name = v["name"];
    DYNAMIC_SECTION(name) {
      Sidecar in(Origin::Inbound, ring, policy(true, true));
      feed(in, false, hex(v["wire_hex"]), 4, true);
      // Under verify_incoming nothing of these reaches the agent: not dskit, cut short, or a
      // plaintext packet.
      CHECK(in.driver->draining());
      CHECK(in.driver->reason() != CloseReason::Done);
      CHECK(in.to_agent.empty());
      CHECK_FALSE(in.driver->wantsUpstream());
    }
  }
  SECTION("stage 1 lets a plaintext packet through unchanged") {
    Sidecar in(Origin::Inbound, ring, policy(false, false));
    auto good = negatives["negatives"][8];
    REQUIRE(good["name"] == "packet-good-digest");
    const Bytes wire = hex(good["wire_hex"]);
    feed(in, false, wire, 3, true);
    CHECK(take(in.to_agent) == wire);
  }
  SECTION("a bare connect-and-close is a normal end") {
    Sidecar in(Origin::Inbound, ring, policy(true, true));
    feed(in, false, {}, 1, true);
    CHECK(in.driver->draining());
    CHECK(in.driver->reason() == CloseReason::Done);
  }
  SECTION("the receiver of a packet does not speak") {
    Sidecar out(Origin::Outbound, ring, policy(true, true));
    feed(out, true, Bytes{kDskitPacket, 0}, 2, false);
    feed(out, false, Bytes{1, 2, 3}, 3, false);
    CHECK(out.driver->draining());
    CHECK(out.driver->reason() == CloseReason::Refused);
  }
  SECTION("a packet over the limit is refused before its end") {
    auto stats = std::make_shared<GossipStreamStats>();
    auto pol = policy(true, true);
    StreamDriver d(std::make_unique<DskitStreamProcessor>(
        Origin::Outbound, std::make_unique<GossipStreamFilter>(Origin::Outbound, ring, pol, stats),
        ring, std::make_shared<GossipDatagramFilter>(ring, pol), DskitLimits{100}));
    Buffer agent_in, peer_in, to_agent, to_peer;
    Bytes big(101, 0);
    big[0] = kDskitPacket;
    agent_in.append(big);
    d.run({to_agent, to_peer}, agent_in, false, peer_in, false);
    CHECK(d.draining());
    CHECK(d.reason() == CloseReason::Refused);
    CHECK(to_peer.empty());
  }
}
