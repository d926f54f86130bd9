#include "filters/gossip/dskit_frame.h"

#include <catch2/catch.hpp>

#include <string>

#include "filters/gossip/dskit_packet.h"
#include "filters/gossip/gossip_codec.h"
#include "filters/gossip/stream_framer.h"
#include "gossip_test_util.h"

// The vectors were written by dskit's own tcp_transport.go (tests/vectors/dskit,
// docs/spec/dskit-transport.md §1).
using namespace sidecrypt::filters::gossip;
using namespace sidecrypt::test::gossip;

namespace {

std::string text(std::span<const uint8_t> b) {
  return {b.begin(), b.end()};
}

// Every prefix of a packet connection before its FIN is NeedMore (or an early, final error), and
// the whole connection gives the same answer fed at once.
void checkPrefixes(const Bytes& wire) {
  for (size_t n = 0; n < std::min<size_t>(wire.size(), 300); ++n) {
    auto r = parseDskit(std::span<const uint8_t>(wire).first(n), false);
    INFO("prefix " << n);
    CHECK(r.status == DskitStatus::NeedMore);
  }
}

std::shared_ptr<const GossipPolicy> policy(bool in, bool out) {
  auto p = std::make_shared<GossipPolicy>();
  p->verify_incoming = in;
  p->verify_outgoing = out;
  return p;
}

}  // namespace

TEST_CASE("dskit_frame: parses the frames dskit's WriteTo wrote, as its receiver did",
          "[gossip][dskit][vectors]") {
  auto doc = loadVectors("dskit/frames.json");
  int checked = 0;
  for (const auto& v : doc["frames"]) {
    DYNAMIC_SECTION(v["name"].get<std::string>()) {
      const Bytes wire = hex(v["wire_hex"]);
      checkPrefixes(wire);
      const auto r = parseDskit(wire, true);
      REQUIRE(r.status == DskitStatus::Packet);
      CHECK(r.digest_ok);
      CHECK(text(r.address) == v["advertised_addr"].get<std::string>());
      CHECK(text(r.address) == v["delivered"]["from"].get<std::string>());
      CHECK(r.payload.size() == v["delivered"]["buf_len"].get<size_t>());
      uint8_t sum[kDskitDigestBytes];
      dskitDigest(r.payload, sum);
      CHECK(toHexString(sum) == v["delivered"]["buf_md5"].get<std::string>());
      CHECK(toHexString(r.digest) == toHexString(sum));
      if (v.contains("payload_hex")) {
        CHECK(toHexString(r.payload) == v["payload_hex"].get<std::string>());
      }
      CHECK(v["responder_hex"].get<std::string>().empty());  // dskit never answers a packet
      // Writing it again gives dskit's bytes.
      Bytes again;
      REQUIRE(appendDskitPacket(r.address, r.payload, again));
      CHECK(again == wire);
    }
    ++checked;
  }
  CHECK(checked == 3);
}

TEST_CASE("dskit_frame: hand-made connections get the decision dskit's receiver made",
          "[gossip][dskit][vectors]") {
  auto doc = loadVectors("dskit/negatives.json");
  int checked = 0;
  for (const auto& v : doc["negatives"]) {
    const std::string name = v["name"];
    DYNAMIC_SECTION(name) {
      const Bytes wire = hex(v["wire_hex"]);
      const auto r = parseDskit(wire, true);
      const bool delivered = !v["delivered"].is_null();
      // dskit delivers exactly what parses as a packet; sidecrypt agrees on every case.
      CHECK((r.status == DskitStatus::Packet) == delivered);
      if (delivered) {
        CHECK(text(r.address) == v["delivered"]["from"].get<std::string>());
        CHECK(toHexString(r.payload) == v["delivered"]["buf_hex"].get<std::string>());
        CHECK(r.digest_ok == (name != "packet-bad-digest"));
      } else {
        CHECK(r.status == DskitStatus::Error);
      }
      if (name == "tls-client-hello-byte" || name == "type-zero" || name == "type-three") {
        CHECK(r.error == DskitError::UnknownType);
      }
      if (name == "packet-short-payload") {
        CHECK(r.error == DskitError::ShortPayload);
      }
      if (name == "packet-no-addr-length" || name == "packet-short-addr") {
        CHECK(r.error == DskitError::Truncated);
      }
    }
    ++checked;
  }
  CHECK(checked == 10);
}

TEST_CASE("dskit_frame: live connections are packets around memberlist datagrams, or streams",
          "[gossip][dskit][vectors]") {
  auto doc = loadVectors("dskit/live.json");
  int packets = 0;
  int streams = 0;
  for (const auto& c : doc["connections"]) {
    const Bytes dialler = hex(c["dialler_hex"]);
    const Bytes responder = hex(c["responder_hex"]);
    const auto r = parseDskit(dialler, true);
    if (c["kind"] == "packet") {
      ++packets;
      REQUIRE(r.status == DskitStatus::Packet);
      CHECK(r.digest_ok);
      CHECK(responder.empty());
      CHECK(text(r.address).rfind("127.0.0.1:", 0) == 0);
      // The payload is a memberlist packet: hasCrc, ping or ack here (docs/spec/gossip-wire.md
      // §1).
      REQUIRE_FALSE(r.payload.empty());
      CHECK((r.payload[0] == 12 || r.payload[0] == 0 || r.payload[0] == 2));
      continue;
    }
    ++streams;
    REQUIRE(r.status == DskitStatus::Stream);
    CHECK(r.header_length == 1);
    // After the type byte: one memberlist stream message each way (docs/spec/gossip-wire.md §6).
    StreamFramer request(FramerGrammar{.allow_label = true});
    auto q = request.feed(std::span<const uint8_t>(dialler).subspan(1));
    REQUIRE(q.status == FramerStatus::Frame);
    CHECK(q.length == dialler.size() - 1);
    StreamFramer reply;
    auto a = reply.feed(responder);
    REQUIRE(a.status == FramerStatus::Frame);
    CHECK(a.length == responder.size());
  }
  CHECK(packets >= 6);
  CHECK(streams >= 2);
}

TEST_CASE("dskit_frame: hard bounds", "[gossip][dskit]") {
  DskitLimits small{.max_packet_bytes = 64};
  Bytes big(65, 0);
  big[0] = kDskitPacket;
  big[1] = 0;
  // Refused as soon as the bytes pass the limit, before the FIN.
  CHECK(parseDskit(big, false, small).error == DskitError::TooLarge);
  big.resize(64);
  CHECK(parseDskit(big, false, small).status == DskitStatus::NeedMore);
  CHECK(parseDskit(big, true, small).status == DskitStatus::Packet);
  CHECK(parseDskit({}, true).error == DskitError::Truncated);
  CHECK(parseDskit({}, false).status == DskitStatus::NeedMore);
  Bytes stream{kDskitStream};
  CHECK(parseDskit(stream, false).status == DskitStatus::Stream);
  Bytes addr(256, 'a');
  Bytes out;
  CHECK_FALSE(appendDskitPacket(addr, {}, out));
  CHECK(out.empty());
}

TEST_CASE("dskit_packet: a sealed payload keeps dskit's frame and opens back to the same bytes",
          "[gossip][dskit][vectors]") {
  auto doc = loadVectors("dskit/live.json");
  auto ring = ringOf(Bytes(32, 7));
  GossipDatagramFilter sender(ring, policy(true, true));
  GossipDatagramFilter receiver(ring, policy(true, true));
  int checked = 0;
  for (const auto& c : doc["connections"]) {
    if (c["kind"] != "packet") {
      continue;
    }
    const Bytes wire = hex(c["dialler_hex"]);
    const auto plain = parseDskit(wire, true);
    REQUIRE(plain.status == DskitStatus::Packet);
    auto sealed = sealDskitPacket(sender, plain);
    REQUIRE(sealed.packet.verdict == Verdict::Forward);
    CHECK(sealed.packet.reason == PacketReason::Sealed);
    // Still a dskit packet, with the sender's address and a right digest: a dskit receiver
    // would take it (docs/spec/dskit-transport.md §3).
    const auto onWire = parseDskit(sealed.frame, true);
    REQUIRE(onWire.status == DskitStatus::Packet);
    CHECK(onWire.digest_ok);
    CHECK(text(onWire.address) == text(plain.address));
    CHECK(onWire.payload.size() == plain.payload.size() + kV1Overhead);
    // Opened at the peer: byte for byte what the sending agent wrote.
    auto opened = openDskitPacket(receiver, onWire);
    REQUIRE(opened.packet.verdict == Verdict::Forward);
    CHECK(opened.packet.reason == PacketReason::Opened);
    CHECK(opened.packet.key_index == 0);
    CHECK(opened.frame == wire);
    // Under verify_incoming, the plaintext original is refused.
    auto refused = openDskitPacket(receiver, plain);
    CHECK(refused.packet.verdict == Verdict::Drop);
    CHECK(refused.frame.empty());
    ++checked;
  }
  CHECK(checked >= 6);
}

TEST_CASE("dskit_packet: plaintext passes with its own trailer; crash shapes are dropped",
          "[gossip][dskit][vectors]") {
  auto doc = loadVectors("dskit/negatives.json");
  auto ring = ringOf(Bytes(16, 3));
  GossipDatagramFilter stage1(ring, policy(false, false));
  for (const auto& v : doc["negatives"]) {
    const std::string name = v["name"];
    const Bytes wire = hex(v["wire_hex"]);
    const auto p = parseDskit(wire, true);
    if (p.status != DskitStatus::Packet) {
      continue;
    }
    DYNAMIC_SECTION(name) {
      auto in = openDskitPacket(stage1, p);
      auto out = sealDskitPacket(stage1, p);
      if (name == "packet-only-digest") {
        // An empty packet panics memberlist 0.2.2 (docs/spec/gossip-wire.md §9).
        CHECK(in.packet.verdict == Verdict::Drop);
        CHECK(in.packet.reason == PacketReason::CrashShape);
      } else {
        REQUIRE(in.packet.verdict == Verdict::Forward);
        CHECK(in.packet.reason == PacketReason::PlaintextAccepted);
        CHECK(in.frame == wire);  // the wrong digest of packet-bad-digest included
        REQUIRE(out.packet.verdict == Verdict::Forward);
        CHECK(out.packet.reason == PacketReason::PlaintextPassed);
        CHECK(out.frame == wire);
      }
    }
  }
}
