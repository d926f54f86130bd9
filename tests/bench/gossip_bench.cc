// Gossip keyring encryption and stream framing (issue 4). Run: ./build/tests/bench/bench_gossip
//   BM_SealPacket/<size>            seal one payload with the primary key (v1, fresh nonce)
//   BM_OpenPacket/<size>/<index>    open with a 4-key ring; index 0 = primary hit, 3 = 4th key
//                                   (three failed GCM opens first, docs/spec/gossip-wire.md §3.3)
//   BM_PeerPacketFilter/<size>/<i>  the whole UDP receive path (label, open, crash-shape checks)
//   BM_FramerPushPull/<chunk>       stream framer over a ~64 KiB push/pull, fed in chunks
//   BM_StreamSeal/<size>            stream filter: frame + seal one agent message
#include "filters/common/boringssl.h"

#include <benchmark/benchmark.h>
#include <openssl/aead.h>
#include <openssl/crypto.h>

#include <memory>
#include <vector>

#include "filters/common/buffer.h"
#include "filters/gossip/gossip_codec.h"
#include "filters/gossip/gossip_datagram_filter.h"
#include "filters/gossip/gossip_stream_filter.h"
#include "filters/gossip/stream_framer.h"
#include "tests/common/gossip_messages.h"

namespace {

using namespace sidecrypt::filters;
using namespace sidecrypt::filters::gossip;

keyring::KeySetConstSharedPtr fourKeys() {
  std::vector<std::unique_ptr<keyring::AeadKey>> keys;
  keys.reserve(4);
  for (int i = 0; i < 4; ++i) {
    keys.push_back(keyring::AeadKey::create(keyring::randomKey(32)));
  }
  return std::make_shared<const keyring::KeySet>(std::move(keys));
}

// A user message ([8] + opaque payload): valid for the crash-shape checks, any size.
std::vector<uint8_t> userPacket(size_t n) {
  std::vector<uint8_t> p(n, 0x5a);
  p[0] = 8;
  return p;
}

void BM_SealPacket(benchmark::State& state) {
  const auto n = static_cast<size_t>(state.range(0));
  auto ring = fourKeys();
  auto plain = userPacket(n);
  std::vector<uint8_t> out(sealedLength(EncryptionVersion::V1, n));
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        sealPayload(ring->primary(), EncryptionVersion::V1, systemNonceSource(), plain, {}, out));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n));
}

void BM_OpenPacket(benchmark::State& state) {
  const auto n = static_cast<size_t>(state.range(0));
  const auto index = static_cast<size_t>(state.range(1));
  auto ring = fourKeys();
  auto plain = userPacket(n);
  std::vector<uint8_t> sealed(sealedLength(EncryptionVersion::V1, n));
  sealPayload(ring->at(index), EncryptionVersion::V1, systemNonceSource(), plain, {}, sealed);
  std::vector<uint8_t> out(sealed.size());
  for (auto _ : state) {
    auto r = openPayload(*ring, sealed, {}, out);
    benchmark::DoNotOptimize(r);
    if (!r.ok()) {
      state.SkipWithError("open failed");
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n));
}

void BM_PeerPacketFilter(benchmark::State& state) {
  const auto n = static_cast<size_t>(state.range(0));
  const auto index = static_cast<size_t>(state.range(1));
  auto ring = fourKeys();
  GossipDatagramFilter filter(ring, std::make_shared<const GossipPolicy>());
  auto plain = userPacket(n);
  std::vector<uint8_t> sealed(sealedLength(EncryptionVersion::V1, n));
  sealPayload(ring->at(index), EncryptionVersion::V1, systemNonceSource(), plain, {}, sealed);
  std::vector<uint8_t> a(sealed.size() + 512);
  std::vector<uint8_t> b(sealed.size() + 512);
  std::copy(sealed.begin(), sealed.end(), a.begin() + 256);
  for (auto _ : state) {
    Datagram packet = Datagram::inSlot(a, 256, sealed.size());
    Datagram spare = Datagram::inSlot(b, 256, 0);
    auto r = filter.onPeerPacket(packet, spare);
    benchmark::DoNotOptimize(r);
    if (r.verdict != Verdict::Forward) {
      state.SkipWithError("dropped");
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n));
}

// [6]{Join, Nodes: N, UserStateLen: U} + N node-state-like maps + U raw bytes, ~64 KiB.
std::vector<uint8_t> pushPull() {
  const size_t nodes = 800;
  const size_t user = 4096;
  std::vector<uint8_t> m = {6,
                            0x83,
                            0xa4,
                            'J',
                            'o',
                            'i',
                            'n',
                            0xc2,
                            0xa5,
                            'N',
                            'o',
                            'd',
                            'e',
                            's',
                            0xcd,
                            static_cast<uint8_t>(nodes >> 8),
                            static_cast<uint8_t>(nodes),
                            0xac,
                            'U',
                            's',
                            'e',
                            'r',
                            'S',
                            't',
                            'a',
                            't',
                            'e',
                            'L',
                            'e',
                            'n',
                            0xcd,
                            static_cast<uint8_t>(user >> 8),
                            static_cast<uint8_t>(user)};
  // {"Name": "node-xxxx", "Addr": 4 bytes, "Port": 7946, "Meta": 16 bytes, "Vsn": 6 bytes}
  const std::vector<uint8_t> node = {
      0x85, 0xa4, 'N', 'a', 'm',  'e',  0xa9, 'n', 'o', 'd',  'e', '-', 'x', 'x', 'x',  'x', 0xa4,
      'A',  'd',  'd', 'r', 0xa4, 10,   250,  0,   1,   0xa4, 'P', 'o', 'r', 't', 0xcd, 31,  10,
      0xa4, 'M',  'e', 't', 'a',  0xb0, 1,    2,   3,   4,    5,   6,   7,   8,   9,    10,  11,
      12,   13,   14,  15,  16,   0xa3, 'V',  's', 'n', 0xa6, 1,   5,   2,   2,   5,    4};
  for (size_t i = 0; i < nodes; ++i) {
    m.insert(m.end(), node.begin(), node.end());
  }
  m.insert(m.end(), user, 0x41);
  return m;
}

void BM_FramerPushPull(benchmark::State& state) {
  const auto chunk = static_cast<size_t>(state.range(0));
  const auto msg = pushPull();
  StreamFramer framer;
  for (auto _ : state) {
    framer.reset();
    FramerResult r;
    for (size_t at = 0; at < msg.size(); at += chunk) {
      r = framer.feed(std::span<const uint8_t>(msg).subspan(at, std::min(chunk, msg.size() - at)));
    }
    if (r.status != FramerStatus::Frame || r.length != msg.size()) {
      state.SkipWithError("no frame");
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * msg.size()));
  state.counters["message_bytes"] = static_cast<double>(msg.size());
}

void BM_StreamSeal(benchmark::State& state) {
  const auto n = static_cast<size_t>(state.range(0));
  // [8]{"UserMsgLen": raw} + raw bytes, n bytes in all
  const size_t raw = n - 16;
  const std::vector<uint8_t> msg =
      sidecrypt::test::streamUserMessage(std::vector<uint8_t>(raw, 0x41));
  auto ring = fourKeys();
  auto policy = std::make_shared<const GossipPolicy>();
  auto stats = std::make_shared<GossipStreamStats>();
  Buffer in(n), to_agent(n), to_peer(n + 64);
  StreamIo io{to_agent, to_peer};
  for (auto _ : state) {
    GossipStreamFilter f(Origin::Outbound, ring, policy, stats);
    in.append(msg);
    if (f.onAgentData(in, false, io) != FilterStatus::Continue) {
      state.SkipWithError("closed");
    }
    to_peer.clear();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * n));
}

}  // namespace

constexpr int64_t k64KiB = 65536;

BENCHMARK(BM_SealPacket)->Arg(64)->Arg(1400)->Arg(k64KiB);
BENCHMARK(BM_OpenPacket)->ArgsProduct({{64, 1400, k64KiB}, {0, 3}});
BENCHMARK(BM_PeerPacketFilter)->ArgsProduct({{64, 1400, k64KiB}, {0, 3}});
BENCHMARK(BM_FramerPushPull)->Arg(1)->Arg(1400)->Arg(k64KiB);
BENCHMARK(BM_StreamSeal)->Arg(1400)->Arg(61440);

// Printed with the results, as spiped prints its AES-NI status.
static const bool kContext = [] {
  benchmark::AddCustomContext("aes_hardware", EVP_has_aes_hardware() ? "yes" : "no");
  return true;
}();
