#include "filters/gossip/gossip_datagram_filter.h"

#include <catch2/catch.hpp>

#include <map>
#include <string>

#include "gossip_test_util.h"

using namespace sidecrypt::filters::gossip;
using namespace sidecrypt::test::gossip;
using sidecrypt::test::fromHex;
namespace keyring = sidecrypt::filters::keyring;

namespace {

constexpr size_t kSlot = 2048;

// A packet in a slot with the headroom/tailroom the proxy provides, plus a spare slot.
struct Slots {
  Bytes a = Bytes(kSlot);
  Bytes b = Bytes(kSlot);
  Datagram packet;
  Datagram spare;
  explicit Slots(const Bytes& payload, size_t headroom = GossipDatagramFilter::kSealHeadroom) {
    REQUIRE(headroom + payload.size() <= kSlot);
    std::copy(payload.begin(), payload.end(), a.begin() + static_cast<ptrdiff_t>(headroom));
    packet = Datagram::inSlot(a, headroom, payload.size());
    spare = Datagram::inSlot(b, GossipDatagramFilter::kSealHeadroom, 0);
  }
  Bytes out() const { return Bytes(packet.data().begin(), packet.data().end()); }
};

std::shared_ptr<const GossipPolicy> policy(bool in, bool out, std::string label = "") {
  auto p = std::make_shared<GossipPolicy>();
  p->verify_incoming = in;
  p->verify_outgoing = out;
  p->label = std::move(label);
  return p;
}

keyring::KeySetConstSharedPtr noKeys() {
  return ringFromHex(nlohmann::json::array());
}

}  // namespace

TEST_CASE("gossip_datagram_filter: seals agent packets in place, byte-exact with memberlist",
          "[gossip][vectors]") {
  auto doc = loadVectors("packets.json");
  int checked = 0;
  for (const auto& v : doc["vectors"]) {
    if (v["kind"] != "gossip" || v["version"] != 1) {
      continue;
    }
    ++checked;
    DYNAMIC_SECTION(v["name"].get<std::string>()) {
      QueuedNonces nonces(hex(v["nonce_hex"]));
      GossipDatagramFilter f(ringOf(hex(v["key_hex"])), policy(true, true), nonces);
      Slots s(hex(v["layers"]["inner_plaintext_hex"]));
      auto r = f.onAgentPacket(s.packet);
      REQUIRE(r.verdict == Verdict::Forward);
      CHECK(r.reason == PacketReason::Sealed);
      CHECK(s.packet.slot.data() == s.a.data());  // in place: same slot
      CHECK(toHexString(s.out()) == v["sealed_hex"].get<std::string>());
      CHECK(f.stats().agent_to_peer.sealed == 1);
    }
  }
  CHECK(checked == 4);
}

TEST_CASE("gossip_datagram_filter: refuses to seal without headroom or tailroom", "[gossip]") {
  GossipDatagramFilter f(ringOf(Bytes(32, 1)), policy(true, true));
  Slots s(Bytes(100, 4), 12);
  auto r = f.onAgentPacket(s.packet);
  CHECK(r.verdict == Verdict::Drop);
  CHECK(r.reason == PacketReason::Oversize);
  CHECK(f.stats().agent_to_peer.oversize == 1);
  Slots t(Bytes(kSlot - GossipDatagramFilter::kSealHeadroom - 3, 4));
  CHECK(f.onAgentPacket(t.packet).reason == PacketReason::Oversize);
}

TEST_CASE("gossip_datagram_filter: verify_outgoing off or no keys sends plaintext", "[gossip]") {
  const Bytes ping = fromHex("0082a44e6f6465a66e6f64652d62a55365714e6f09");
  for (auto [keys, out] : {std::pair{true, false}, std::pair{false, true}}) {
    GossipDatagramFilter f(keys ? ringOf(Bytes(16, 1)) : noKeys(), policy(true, out));
    Slots s(ping);
    auto r = f.onAgentPacket(s.packet);
    CHECK(r.reason == PacketReason::PlaintextPassed);
    CHECK(s.out() == ping);
    CHECK(f.stats().agent_to_peer.plaintext_forwarded == 1);
  }
}

TEST_CASE("gossip_datagram_filter: opens peer packets out of place and reports the key",
          "[gossip][vectors]") {
  auto doc = loadVectors("keyring.json");
  GossipDatagramFilter f(ringFromHex(doc["keyring_hex"]), policy(true, true));
  for (const auto& v : doc["vectors"]) {
    CAPTURE(v["name"].get<std::string>());
    {
      auto sealed = hex(v["sealed_hex"]);
      Slots s(sealed);
      uint8_t* original = s.a.data();
      auto r = f.onPeerPacket(s.packet, s.spare);
      REQUIRE(r.verdict == Verdict::Forward);
      CHECK(r.reason == PacketReason::Opened);
      CHECK(r.key_index == v["expected_key_index"].get<int>());
      CHECK_FALSE(r.shadow_refused);
      CHECK(s.out() == hex(v["plaintext_hex"]));
      CHECK(s.packet.slot.data() == s.b.data());  // swapped: plaintext is in the spare slot
      CHECK(s.spare.slot.data() == original);
      CHECK(Bytes(s.spare.data().begin(), s.spare.data().end()) == sealed);  // input intact
    }
  }
  const auto& c = f.stats().peer_to_agent;
  CHECK(c.opened_key_0 == 2);
  CHECK(c.opened_key_1 == 2);
  CHECK(c.opened_key_2 == 2);
}

TEST_CASE("gossip_datagram_filter: counts key indexes past 7 as other", "[gossip]") {
  nlohmann::json ring = nlohmann::json::array();
  for (int i = 0; i < 10; ++i) {
    ring.push_back(toHexString(Bytes(16, static_cast<uint8_t>(i + 1))));
  }
  auto keys = ringFromHex(ring);
  GossipDatagramFilter f(keys, policy(true, true));
  for (size_t i : {0, 7, 8, 9}) {
    const Bytes plain = fromHex("0280");
    Bytes sealed(sealedLength(EncryptionVersion::V1, plain.size()));
    REQUIRE(sealPayload(keys->at(i), EncryptionVersion::V1, systemNonceSource(), plain, {},
                        sealed) == sealed.size());
    Slots s(sealed);
    CHECK(f.onPeerPacket(s.packet, s.spare).key_index == static_cast<int>(i));
  }
  CHECK(f.stats().peer_to_agent.opened_key_0 == 1);
  CHECK(f.stats().peer_to_agent.opened_key_7 == 1);
  CHECK(f.stats().peer_to_agent.opened_key_other == 2);
}

TEST_CASE("gossip_datagram_filter: negatives.json are dropped and never crash",
          "[gossip][vectors]") {
  auto doc = loadVectors("negatives.json");
  for (const auto& v : doc["vectors"]) {
    DYNAMIC_SECTION(v["name"].get<std::string>()) {
      const std::string name = v["name"];
      auto input = hex(v["input_hex"]);
      const bool keyless = v["keyring_hex"].empty();
      const bool must_drop =
          !v["decrypt_ok"].get<bool>() || name.rfind("version-1-relabelled-0", 0) == 0;
      auto p = std::make_shared<GossipPolicy>();
      p->label = v["aad_hex"].get<std::string>().empty() ? "" : "dc1";
      p->skip_inbound_label_check = true;  // the vector's input carries no label header
      GossipDatagramFilter f(ringFromHex(v["keyring_hex"]), p);
      Slots s(input);
      auto r = f.onPeerPacket(s.packet, s.spare);
      if (keyless) {
        // No keys: memberlist does not even try to decrypt (docs/spec/gossip-wire.md §4.1); the
        // packet is plaintext.
        CHECK(r.reason == PacketReason::PlaintextAccepted);
      } else if (must_drop) {
        CHECK(r.verdict == Verdict::Drop);
        CHECK(f.stats().peer_to_agent.open_failed == 1);
        if (name.rfind("version-1-relabelled-0", 0) == 0) {
          CHECK(r.reason == PacketReason::BadPadding);
          CHECK(f.stats().peer_to_agent.crash_shape_dropped == 1);
        } else {
          CHECK(r.reason == PacketReason::OpenFailed);
          CHECK(f.stats().peer_to_agent.plaintext_refused == 1);
        }
      } else {
        CHECK(r.verdict == Verdict::Forward);
        CHECK(r.key_index == 0);
      }
    }
  }
}

TEST_CASE("gossip_datagram_filter: verify_incoming off accepts plaintext with a shadow verdict",
          "[gossip][vectors]") {
  auto doc = loadVectors("negatives.json");
  for (const auto& v : doc["vectors"]) {
    const std::string name = v["name"];
    if (name != "plaintext-ping" && name != "wrong-key" && name != "valid-baseline" &&
        name != "version-1-relabelled-0-padding-exceeds-length") {
      continue;
    }
    DYNAMIC_SECTION(name) {
      GossipDatagramFilter f(ringFromHex(v["keyring_hex"]), policy(false, true));
      auto input = hex(v["input_hex"]);
      Slots s(input);
      auto r = f.onPeerPacket(s.packet, s.spare);
      const auto& c = f.stats().peer_to_agent;
      if (name == "valid-baseline") {
        CHECK(r.reason == PacketReason::Opened);
        CHECK_FALSE(r.shadow_refused);
      } else if (name == "version-1-relabelled-0-padding-exceeds-length") {
        CHECK(r.verdict == Verdict::Drop);  // never forwarded as plaintext either
        CHECK(r.reason == PacketReason::BadPadding);
      } else {
        // docs/spec/gossip-wire.md §4.1: "processed as plaintext": the original bytes go to the
        // agent
        CHECK(r.verdict == Verdict::Forward);
        CHECK(r.reason == PacketReason::PlaintextAccepted);
        CHECK(r.shadow_refused);
        CHECK(r.open_error == OpenError::NoKey);
        CHECK(s.out() == input);
        CHECK(c.shadow_refused == 1);
        CHECK(c.open_failed == 1);
        CHECK(c.plaintext_forwarded == 1);
      }
    }
  }
}

TEST_CASE("gossip_datagram_filter: parser_vectors crash shapes are dropped before the agent",
          "[gossip][vectors]") {
  auto doc = loadVectors("negatives.json");
  int crashes = 0;
  for (const auto& v : doc["parser_vectors"]) {
    const bool panics = v["outcome_0_2_2"].get<std::string>().rfind("PANIC", 0) == 0;
    crashes += panics ? 1 : 0;
    DYNAMIC_SECTION(v["name"].get<std::string>()) {
      auto input = hex(v["input_hex"]);
      // As accepted plaintext (keyless) ...
      GossipDatagramFilter plain(noKeys(), policy(true, true));
      Slots s(input);
      auto r = plain.onPeerPacket(s.packet, s.spare);
      // ... and after decryption by a key holder.
      auto ring = ringOf(Bytes(32, 9));
      GossipDatagramFilter sealed(ring, policy(true, true));
      Bytes wire(sealedLength(EncryptionVersion::V1, input.size()));
      REQUIRE(sealPayload(ring->primary(), EncryptionVersion::V1, systemNonceSource(), input, {},
                          wire) == wire.size());
      Slots t(wire);
      auto r2 = sealed.onPeerPacket(t.packet, t.spare);
      if (panics) {
        CHECK(r.reason == PacketReason::CrashShape);
        CHECK(r2.reason == PacketReason::CrashShape);
        CHECK(r2.key_index == 0);
        CHECK(plain.stats().peer_to_agent.crash_shape_dropped == 1);
        CHECK(sealed.stats().peer_to_agent.crash_shape_dropped == 1);
      } else {
        CHECK(r.reason != PacketReason::CrashShape);
        CHECK(r2.reason != PacketReason::CrashShape);
      }
    }
  }
  CHECK(crashes == 4);
}

TEST_CASE("gossip_datagram_filter: an empty decrypted payload is a crash shape", "[gossip]") {
  auto ring = ringOf(Bytes(16, 3));
  Bytes wire(kV1Overhead);
  REQUIRE(sealPayload(ring->primary(), EncryptionVersion::V1, systemNonceSource(), {}, {}, wire) ==
          kV1Overhead);
  GossipDatagramFilter f(ring, policy(true, true));
  Slots s(wire);
  CHECK(f.onPeerPacket(s.packet, s.spare).reason == PacketReason::CrashShape);
}

TEST_CASE("gossip_datagram_filter: real gossip packets pass the crash-shape checks",
          "[gossip][vectors]") {
  auto doc = loadVectors("packets.json");
  for (const auto& v : doc["vectors"]) {
    if (v["kind"] != "gossip") {
      continue;
    }
    DYNAMIC_SECTION(v["name"].get<std::string>()) {
      const bool encrypted = v["version"].get<int>() >= 0;
      GossipDatagramFilter f(encrypted ? ringFromHex(v["keyring_hex"]) : noKeys(),
                             policy(true, true));
      Slots s(hex(v["sealed_hex"]));
      auto r = f.onPeerPacket(s.packet, s.spare);
      REQUIRE(r.verdict == Verdict::Forward);
      CHECK(r.key_index == v["expected_key_index"].get<int>());
    }
  }
}

TEST_CASE("gossip_datagram_filter: all 46 captured serf packets open with the recorded key",
          "[gossip][vectors][captured]") {
  auto captured = loadVectors("captured/captured.json");
  auto verified = loadVectors("captured/verified.json");
  std::map<int, Bytes> payloads;
  for (const auto& u : captured["udp"]) {
    payloads[u["frame"].get<int>()] = hex(u["payload_hex"]);
  }
  GossipDatagramFilter f(ringFromHex(captured["keys_hex"]), policy(true, true));
  int opened = 0;
  for (const auto& u : verified["udp"]) {
    const int frame = u["frame"].get<int>();
    CAPTURE(frame, u["layers"].get<std::string>());
    REQUIRE(payloads.count(frame) == 1);
    Slots s(payloads[frame]);
    auto r = f.onPeerPacket(s.packet, s.spare);
    REQUIRE(r.verdict == Verdict::Forward);
    CHECK(r.key_index == u["opened_with_key_index"].get<int>());
    CHECK(s.packet.length == payloads[frame].size() - kV1Overhead);
    ++opened;
  }
  CHECK(opened == 46);
  CHECK(f.stats().peer_to_agent.opened_key_0 + f.stats().peer_to_agent.opened_key_1 == 46);
}

TEST_CASE("gossip_datagram_filter: labels are prefixed, checked and stripped",
          "[gossip][vectors][label]") {
  auto doc = loadVectors("labels.json");
  const std::string label = doc["label"];
  auto ring = ringOf(hex(doc["key_hex"]));
  const auto& pkt = doc["packet"];
  QueuedNonces nonces(hex(pkt["nonce_hex"]));
  GossipDatagramFilter f(ring, policy(true, true, label), nonces);

  Slots out(hex(pkt["plaintext_hex"]));
  REQUIRE(f.onAgentPacket(out.packet).reason == PacketReason::Sealed);
  CHECK(toHexString(out.out()) == pkt["wire_hex"].get<std::string>());

  Slots in(hex(pkt["wire_hex"]));
  auto r = f.onPeerPacket(in.packet, in.spare);
  REQUIRE(r.reason == PacketReason::Opened);
  CHECK(in.out() == hex(pkt["plaintext_hex"]));

  // Unlabelled, wrongly labelled, or labelled for a proxy without a label: dropped.
  GossipDatagramFilter other(ring, policy(true, true, "dc2"));
  Slots w(hex(pkt["wire_hex"]));
  CHECK(other.onPeerPacket(w.packet, w.spare).reason == PacketReason::LabelMismatch);
  GossipDatagramFilter none(ring, policy(true, true));
  Slots x(hex(pkt["wire_hex"]));
  CHECK(none.onPeerPacket(x.packet, x.spare).reason == PacketReason::LabelMismatch);
  Slots y(hex(pkt["sealed_hex"]));
  CHECK(f.onPeerPacket(y.packet, y.spare).reason == PacketReason::LabelMismatch);
  CHECK(f.stats().peer_to_agent.label_mismatch == 1);

  // Plaintext with a label and verify_outgoing off: [244][len][label] + plaintext.
  GossipDatagramFilter plain(ring, policy(false, false, label));
  Slots z(hex(pkt["plaintext_hex"]));
  REQUIRE(plain.onAgentPacket(z.packet).reason == PacketReason::PlaintextPassed);
  CHECK(toHexString(z.out()) == pkt["wire_plaintext_hex"].get<std::string>());
}
