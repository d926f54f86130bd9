// Fuzzes the gossip stream framer and the stream filter's peer side: any input must give the
// same result fed whole, split in two, or one byte at a time (docs/spec/gossip-wire.md §6), and
// never crash. Input: [flags][split][stream bytes]. flags bit 0: dialled side (label allowed), bit
// 1: verify_incoming, bit 2: Outbound. The ring holds the streams.json keys.
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "filters/common/buffer.h"
#include "filters/gossip/gossip_stream_filter.h"
#include "filters/gossip/stream_framer.h"

namespace {

using namespace sidecrypt::filters;
using namespace sidecrypt::filters::gossip;

constexpr std::array<std::array<uint8_t, 32>, 4> kKeys = {{
    {0x65, 0x44, 0xc2, 0x37, 0x7e, 0x9d, 0x1f, 0xf0, 0xf8, 0xab, 0x3b,
     0x4d, 0xc4, 0x4a, 0xfa, 0x87, 0x48, 0x13, 0x66, 0x13, 0x3d, 0xa6,
     0xce, 0xf6, 0xcb, 0xd9, 0xe9, 0x5a, 0x50, 0xfa, 0xe0, 0x56},
    {0x6b, 0x06, 0xc3, 0xba, 0xd6, 0x69, 0xd6, 0x4f, 0xd0, 0x5c, 0xcf,
     0x52, 0xad, 0xf7, 0x5e, 0xa4, 0x88, 0x61, 0x57, 0x07, 0xa4, 0x6b,
     0x06, 0xfe, 0x4c, 0x66, 0x68, 0xf0, 0xb9, 0x0c, 0x33, 0x92},
    {0xc7, 0x3a, 0x35, 0x07, 0xbc, 0x71, 0x10, 0x04, 0xbb, 0x21, 0x59,
     0xdd, 0x5d, 0x60, 0xe3, 0xea, 0xdf, 0x6a, 0x23, 0x19, 0x02, 0x1f,
     0xe5, 0x6d, 0xfd, 0x30, 0x67, 0x80, 0x63, 0xe7, 0x8e, 0x25},
    {0xc7, 0xf5, 0x09, 0xc7, 0x3a, 0x52, 0x28, 0xdd, 0x27, 0x5d, 0x24,
     0x8b, 0x4c, 0x4b, 0x31, 0x76, 0x8e, 0xf1, 0xfa, 0x32, 0x62, 0x91,
     0xc0, 0x12, 0x00, 0xf0, 0x8c, 0x77, 0x76, 0x9b, 0xa0, 0x40},
}};

keyring::KeySetConstSharedPtr ring() {
  static const keyring::KeySetConstSharedPtr keys = [] {
    std::vector<std::unique_ptr<keyring::AeadKey>> v;
    v.reserve(kKeys.size());
    for (const auto& k : kKeys) {
      v.push_back(keyring::AeadKey::create(SecretBytes::copyOf(k)));
    }
    return std::make_shared<const keyring::KeySet>(std::move(v));
  }();
  return keys;
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
