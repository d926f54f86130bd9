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
#include "tests/fuzz/fuzz_support.h"

namespace {

using namespace sidecrypt::filters;
using namespace sidecrypt::filters::gossip;

keyring::KeySetConstSharedPtr ring(bool empty) {
  if (empty) {
    return sidecrypt::fuzz::keyRing({});
  }
  return sidecrypt::fuzz::keyRing({"VyCxNNGoItgU4Da78vpwEz72f+XlruLSaDvb9QaqQGg=",
                                   "gDIPiPyJ/6pkegrXUNVrRK8E3x82Kvu8JnoOXgIOnzw=",
                                   "8K2+nM4iLbVE9lYncNy6jyQygcM4lTa1bvGhzZ1CnTo="});
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
