// Fuzzes a gossip TCP stream through StreamDriver, the loop StreamSession runs
// (GossipStreamProcessor over GossipStreamFilter): whatever a peer sends, cut into chunks. It must
// never crash, never move a phase backwards, and on an inbound stream never let a byte reach the
// agent, nor ask for the agent, before the peer's message passed the filter (docs/architecture.md
// §2.1). Input: [flags][chunk size][peer bytes...]; flags bit 1 = verify_incoming, bit 2 =
// Outbound (our agent dialled), bit 3 = the agent has sent a plaintext message first, bit 4 =
// peer FIN at the end. The corpus is the stream framer's (same layout; bit 0 means nothing here).
#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>

#include "filters/common/buffer.h"
#include "filters/gossip/gossip_stream_filter.h"
#include "filters/gossip/gossip_stream_processor.h"
#include "filters/stream_driver.h"
#include "tests/fuzz/fuzz_support.h"

using namespace sidecrypt::filters;
using namespace sidecrypt::filters::gossip;
using sidecrypt::fuzz::check;

namespace {

keyring::KeySetConstSharedPtr ring() {
  return sidecrypt::fuzz::streamsRing();
}

// A plaintext memberlist ping (type 0 + msgpack map {SeqNo: 1, Node: "a"}), as an agent sends.
constexpr uint8_t kAgentPing[] = {0x00, 0x82, 0xa5, 'S', 'e', 'q', 'N',  'o',
                                  0x01, 0xa4, 'N',  'o', 'd', 'e', 0xa1, 'a'};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) {
    return 0;
  }
  const uint8_t flags = data[0];
  const size_t chunk = static_cast<size_t>(data[1]) + 1;
  const bool inbound = (flags & 4) == 0;
  auto policy = std::make_shared<GossipPolicy>();
  policy->verify_incoming = (flags & 2) != 0;
  auto filter =
      std::make_unique<GossipStreamFilter>(inbound ? Origin::Inbound : Origin::Outbound, ring(),
                                           policy, std::make_shared<GossipStreamStats>());
  StreamDriver driver(std::make_unique<GossipStreamProcessor>(std::move(filter), ring(), inbound));
  Buffer agent_in, peer_in, to_agent, to_peer;
  if ((flags & 8) != 0) {
    agent_in.append(kAgentPing);
  }
  bool peer_eof = false;
  std::span<const uint8_t> rest(data + 2, size - 2);
  auto phase = driver.phase();
  for (;;) {
    const size_t n = std::min(chunk, rest.size());
    peer_in.append(rest.first(n));
    rest = rest.subspan(n);
    if (rest.empty() && (flags & 16) != 0) {
      peer_eof = true;
    }
    driver.run({to_agent, to_peer}, agent_in, false, peer_in, peer_eof);
    check(driver.phase() >= phase);  // phases only move forward
    phase = driver.phase();
    if (inbound && !driver.wantsUpstream()) {
      check(to_agent.empty());  // nothing of the peer's reaches the agent before it was vetted
      check(!driver.ready());
    }
    to_agent.clear();
    to_peer.clear();
    if (rest.empty() || driver.draining()) {
      break;
    }
  }
  return 0;
}
