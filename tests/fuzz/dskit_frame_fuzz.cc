// Fuzzes dskit's connection framing (docs/spec/dskit-transport.md §2, §3) and the packet seal/open
// around it. Input: [flags][split][connection bytes]. flags bit 0: verify_incoming on the
// receiving side. Checks: a prefix never decides differently from the whole connection (an early
// error is final and the same), a packet written again gives the input exactly when its digest is
// right, a payload sealed and opened comes back as the same packet, what a filter forwards
// always parses as a packet again, and the inbound connection filter (DskitStreamProcessor) gives
// the same bytes and verdict whether the peer's bytes come whole, split, or one at a time.
#include <cstdint>
#include <memory>
#include <vector>

#include "filters/gossip/dskit_frame.h"
#include "filters/gossip/dskit_packet.h"
#include "filters/gossip/dskit_stream_processor.h"
#include "filters/gossip/gossip_datagram_filter.h"
#include "filters/stream_driver.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using namespace sidecrypt::filters;
using namespace sidecrypt::filters::gossip;
using sidecrypt::fuzz::check;

constexpr DskitLimits kLimits{.max_packet_bytes = 1 << 16};

std::shared_ptr<const GossipPolicy> policy(bool in, bool out) {
  auto p = std::make_shared<GossipPolicy>();
  p->verify_incoming = in;
  p->verify_outgoing = out;
  return p;
}

struct Run {
  std::vector<uint8_t> to_agent, to_peer;
  bool draining = false;
  bool dialled = false;
  CloseReason reason = CloseReason::Done;
  bool operator==(const Run&) const = default;
};

// An inbound dskit connection (a peer dialled the agent) fed `in` in chunks of `chunk`, then the
// peer's FIN. Replies are plaintext (verify_outgoing off) so runs compare equal.
Run inbound(std::span<const uint8_t> in, size_t chunk, bool verify_incoming,
            const keyring::KeySetConstSharedPtr& ring) {
  auto pol = policy(verify_incoming, false);
  auto stats = std::make_shared<GossipStreamStats>();
  StreamDriver d(std::make_unique<DskitStreamProcessor>(
      Origin::Inbound, std::make_unique<GossipStreamFilter>(Origin::Inbound, ring, pol, stats),
      ring, std::make_shared<GossipDatagramFilter>(ring, pol), kLimits));
  Buffer agent_in, peer_in, to_agent, to_peer;
  for (size_t at = 0; at < in.size() && !d.draining(); at += chunk) {
    peer_in.append(in.subspan(at, std::min(chunk, in.size() - at)));
    d.run({to_agent, to_peer}, agent_in, false, peer_in, false);
  }
  d.run({to_agent, to_peer}, agent_in, false, peer_in, true);
  Run r;
  r.to_agent.assign(to_agent.readable().begin(), to_agent.readable().end());
  r.to_peer.assign(to_peer.readable().begin(), to_peer.readable().end());
  r.draining = d.draining();
  r.dialled = d.wantsUpstream();
  r.reason = d.reason();
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2 || size > (1 << 16)) {
    return 0;
  }
  const unsigned flags = data[0];
  const std::span<const uint8_t> in(data + 2, size - 2);
  const size_t step = 1 + data[1] % std::max<size_t>(in.size(), 1);

  static auto ring = sidecrypt::fuzz::streamsRing();
  {
    const bool verify = (flags & 1) != 0;
    const Run a = inbound(in, std::max<size_t>(in.size(), 1), verify, ring);
    check(a == inbound(in, step, verify, ring));
    check(a == inbound(in, 1, verify, ring));
    // Nothing reaches an agent that was never dialled.
    check(a.dialled || a.to_agent.empty());
  }

  const DskitParse whole = parseDskit(in, true, kLimits);
  for (size_t n = 0; n < in.size(); n += step) {
    const DskitParse part = parseDskit(in.first(n), false, kLimits);
    check(part.status != DskitStatus::Packet);  // a packet is complete only at the FIN
    check(part.status == DskitStatus::NeedMore ||
          (part.status == whole.status && part.error == whole.error));
  }
  if (whole.status != DskitStatus::Packet) {
    return 0;
  }
  std::vector<uint8_t> again;
  check(appendDskitPacket(whole.address, whole.payload, again));
  check((again == std::vector<uint8_t>(in.begin(), in.end())) == whole.digest_ok);

  static GossipDatagramFilter sender(ring, policy(true, true));
  static GossipDatagramFilter strict(ring, policy(true, true));
  static GossipDatagramFilter lenient(ring, policy(false, false));
  GossipDatagramFilter& receiver = (flags & 1) != 0 ? strict : lenient;

  // The peer's bytes as they arrive: whatever goes on to the agent is still a dskit packet.
  const DskitPacketResult direct = openDskitPacket(receiver, whole);
  check(direct.packet.verdict != Verdict::Forward ||
        parseDskit(direct.frame, true).status == DskitStatus::Packet);
  // Sealed by one sidecar and opened by another: the same packet, unless the opened plaintext
  // is a crash shape the receiver drops.
  const DskitPacketResult sealed = sealDskitPacket(sender, whole);
  if (sealed.packet.verdict != Verdict::Forward) {
    return 0;
  }
  const DskitParse wire = parseDskit(sealed.frame, true);
  check(wire.status == DskitStatus::Packet && wire.digest_ok);
  const DskitPacketResult opened = openDskitPacket(strict, wire);
  if (opened.packet.verdict == Verdict::Forward) {
    check(opened.packet.reason == PacketReason::Opened);
    check(!whole.digest_ok || opened.frame == std::vector<uint8_t>(in.begin(), in.end()));
  }
  return 0;
}
