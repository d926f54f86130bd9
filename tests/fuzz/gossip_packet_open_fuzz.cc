// Fuzzes the gossip UDP receive path: label check, decrypt (every key, both versions, padding),
// verify_incoming policy and the crash-shape inspector (LZW, compound, hasCrc).
// Input: [flags][datagram]. flags bit 0: verify_incoming, bit 1: label "dc1", bit 2: keyless.
// The ring is keyring.json's three keys, so corpus packets from the vectors really open.
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "filters/gossip/gossip_codec.h"
#include "filters/gossip/gossip_datagram_filter.h"

namespace {

using namespace sidecrypt::filters;
using namespace sidecrypt::filters::gossip;

constexpr std::array<std::array<uint8_t, 32>, 3> kKeys = {{
    {0x57, 0x20, 0xb1, 0x34, 0xd1, 0xa8, 0x22, 0xd8, 0x14, 0xe0, 0x36,
     0xbb, 0xf2, 0xfa, 0x70, 0x13, 0x3e, 0xf6, 0x7f, 0xe5, 0xe5, 0xae,
     0xe2, 0xd2, 0x68, 0x3b, 0xdb, 0xf5, 0x06, 0xaa, 0x40, 0x68},
    {0x80, 0x32, 0x0f, 0x88, 0xfc, 0x89, 0xff, 0xaa, 0x64, 0x7a, 0x0a,
     0xd7, 0x50, 0xd5, 0x6b, 0x44, 0xaf, 0x04, 0xdf, 0x1f, 0x36, 0x2a,
     0xfb, 0xbc, 0x26, 0x7a, 0x0e, 0x5e, 0x02, 0x0e, 0x9f, 0x3c},
    {0xf0, 0xad, 0xbe, 0x9c, 0xce, 0x22, 0x2d, 0xb5, 0x44, 0xf6, 0x56,
     0x27, 0x70, 0xdc, 0xba, 0x8f, 0x24, 0x32, 0x81, 0xc3, 0x38, 0x95,
     0x36, 0xb5, 0x6e, 0xf1, 0xa1, 0xcd, 0x9d, 0x42, 0x9d, 0x3a},
}};

keyring::KeySetConstSharedPtr ring(bool empty) {
  std::vector<std::unique_ptr<keyring::AeadKey>> keys;
  keys.reserve(kKeys.size());
  if (!empty) {
    for (const auto& k : kKeys) {
      keys.push_back(keyring::AeadKey::create(SecretBytes::copyOf(k)));
    }
  }
  return std::make_shared<const keyring::KeySet>(std::move(keys));
}

struct Fixture {
  std::array<GossipDatagramFilter*, 8> filters{};
  Fixture() {
    for (unsigned flags = 0; flags < 8; ++flags) {
      auto p = std::make_shared<GossipPolicy>();
      p->verify_incoming = (flags & 1) != 0;
      p->label = (flags & 2) != 0 ? "dc1" : "";
      filters[flags] = new GossipDatagramFilter(ring((flags & 4) != 0), p);
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Fixture fx;
  if (size == 0) {
    return 0;
  }
  const unsigned flags = data[0] & 7;
  const std::span<const uint8_t> payload(data + 1, size - 1);
  constexpr size_t kRoom = GossipDatagramFilter::kSealHeadroom;
  static std::vector<uint8_t> a(70000 + 2 * kRoom);
  static std::vector<uint8_t> b(70000 + 2 * kRoom);
  if (payload.size() > 70000) {
    return 0;
  }
  std::memcpy(a.data() + kRoom, payload.data(), payload.size());
  Datagram packet = Datagram::inSlot(a, kRoom, payload.size());
  Datagram spare = Datagram::inSlot(b, kRoom, 0);
  const PacketResult r = fx.filters[flags]->onPeerPacket(packet, spare);
  if (r.verdict == Verdict::Forward) {
    if (packet.length > payload.size()) {
      __builtin_trap();  // nothing toward the agent is ever larger than what arrived
    }
    if (r.reason == PacketReason::Opened && (r.key_index < 0 || r.key_index > 2)) {
      __builtin_trap();
    }
    if ((flags & 1) != 0 && (flags & 4) == 0 && r.reason != PacketReason::Opened) {
      __builtin_trap();  // verify_incoming with keys forwards only what opened
    }
  }
  if (r.shadow_refused && (flags & 1) != 0) {
    __builtin_trap();
  }
  // Sealing what arrived and opening it again must round-trip exactly.
  Datagram again = Datagram::inSlot(a, kRoom, payload.size());
  std::memcpy(a.data() + kRoom, payload.data(), payload.size());
  if (fx.filters[1]->onAgentPacket(again).verdict == Verdict::Forward) {
    Datagram spare2 = Datagram::inSlot(b, kRoom, 0);
    const PacketResult back = fx.filters[1]->onPeerPacket(again, spare2);
    if (back.reason == PacketReason::Opened &&
        (again.length != payload.size() ||
         std::memcmp(again.data().data(), payload.data(), payload.size()) != 0)) {
      __builtin_trap();
    }
    if (back.reason != PacketReason::Opened && back.reason != PacketReason::CrashShape &&
        back.reason != PacketReason::Malformed && back.reason != PacketReason::Oversize) {
      __builtin_trap();
    }
  }
  return 0;
}
