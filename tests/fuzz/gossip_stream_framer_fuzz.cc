// Fuzzes the gossip stream framer and the stream filter's peer side: any input must give the
// same result fed whole, split in two, or one byte at a time (docs/spec/gossip-wire.md §6), and
// never crash. Input: [flags][split][stream bytes]. flags bit 0: dialled side (label allowed), bit
// 1: verify_incoming, bit 2: Outbound. The ring holds the streams.json keys.
#include <cstdint>
#include <memory>
#include <vector>

#include "filters/common/buffer.h"
#include "filters/gossip/gossip_stream_filter.h"
#include "filters/gossip/stream_framer.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using namespace sidecrypt::filters;
using namespace sidecrypt::filters::gossip;

keyring::KeySetConstSharedPtr ring() {
  return sidecrypt::fuzz::streamsRing();
}

struct Outcome {
  FramerResult last;
  size_t consumed = 0;
};

Outcome frame(std::span<const uint8_t> in, bool label, size_t chunk) {
  FramerLimits limits;
  limits.max_message_bytes = 1 << 20;
  StreamFramer f(FramerGrammar{.allow_label = label}, limits);
  Outcome o;
  for (size_t at = 0; at < in.size(); at += chunk) {
    o.last = f.feed(in.subspan(at, std::min(chunk, in.size() - at)));
    o.consumed += o.last.consumed;
    if (o.last.status != FramerStatus::NeedMore) {
      break;
    }
  }
  return o;
}

bool same(const Outcome& a, const Outcome& b) {
  return a.last.status == b.last.status && a.last.length == b.last.length &&
         a.last.error == b.last.error && a.last.label_length == b.last.label_length &&
         a.consumed == b.consumed;
}

struct FilterRun {
  std::vector<uint8_t> to_agent, to_peer;
  FilterStatus status = FilterStatus::Continue;
  StreamCloseReason reason = StreamCloseReason::None;
};

FilterRun filter(std::span<const uint8_t> in, unsigned flags, size_t split) {
  auto policy = std::make_shared<GossipPolicy>();
  policy->verify_incoming = (flags & 2) != 0;
  policy->verify_outgoing = false;  // replies in plaintext: no nonce, so runs compare equal
  auto stats = std::make_shared<GossipStreamStats>();
  GossipStreamFilter f((flags & 4) != 0 ? Origin::Outbound : Origin::Inbound, ring(), policy,
                       stats);
  Buffer buf, to_agent, to_peer;
  StreamIo io{to_agent, to_peer};
  FilterRun r;
  for (size_t at = 0; at < in.size() && r.status == FilterStatus::Continue; at += split) {
    buf.append(in.subspan(at, std::min(split, in.size() - at)));
    r.status = f.onPeerData(buf, false, io);
  }
  if (r.status == FilterStatus::Continue) {
    r.status = f.onPeerData(buf, true, io);
  }
  r.reason = f.closeReason();
  r.to_agent.assign(to_agent.readable().begin(), to_agent.readable().end());
  r.to_peer.assign(to_peer.readable().begin(), to_peer.readable().end());
  return r;
}

bool same(const FilterRun& a, const FilterRun& b) {
  return a.status == b.status && a.reason == b.reason && a.to_agent == b.to_agent &&
         a.to_peer == b.to_peer;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2 || size > (1 << 16)) {
    return 0;
  }
  const unsigned flags = data[0];
  const std::span<const uint8_t> in(data + 2, size - 2);
  const size_t split = 1 + data[1] % std::max<size_t>(in.size(), 1);
  const bool label = (flags & 1) != 0;

  const Outcome whole = frame(in, label, std::max<size_t>(in.size(), 1));
  if (!same(whole, frame(in, label, split)) || !same(whole, frame(in, label, 1))) {
    __builtin_trap();
  }
  if (whole.last.status == FramerStatus::Frame && whole.last.length > in.size()) {
    __builtin_trap();
  }
  const FilterRun a = filter(in, flags, std::max<size_t>(in.size(), 1));
  if (!same(a, filter(in, flags, split)) || !same(a, filter(in, flags, 1))) {
    __builtin_trap();
  }
  // Toward the agent: at most what arrived, except the errMsg an Outbound refusal explains
  // itself with.
  const bool refusal_note = (flags & 4) != 0 && a.status == FilterStatus::Close &&
                            !a.to_agent.empty() && a.to_agent[0] == kErrMsg;
  if (a.to_agent.size() > in.size() && !refusal_note) {
    __builtin_trap();
  }
  return 0;
}
