// What the gossip observer (membership, key queries; issues 7 and 8) adds per UDP packet, on
// real captured serf packets opened with their keys: a ping (the most common packet), an ack
// (compressed), a compound of alive messages, and a compressed compound of key queries (after
// the first pass they are re-broadcasts: dedup only). Compare with BM_PeerPacketFilter in
// bench_gossip, the cost of opening the packet itself.
#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "filters/gossip/gossip_codec.h"
#include "filters/keyring/aead_key.h"
#include "proxy/datapath/gossip_observer.h"

// Counts heap allocations (malloc, below), so a benchmark can report allocations per packet.
std::atomic<uint64_t> g_allocs{0};

namespace {

using namespace sidecrypt;

std::vector<uint8_t> fromHex(const std::string& h) {
  std::vector<uint8_t> out(h.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<uint8_t>(std::stoi(h.substr(2 * i, 2), nullptr, 16));
  }
  return out;
}

struct Captured {
  filters::keyring::KeySetConstSharedPtr ring;
  std::map<int, std::vector<uint8_t>> plain;
};

const Captured& captured() {
  static const Captured c = [] {
    Captured out;
    std::ifstream in(std::string(SIDECRYPT_VECTORS_DIR) + "/captured/captured.json");
    auto doc = nlohmann::json::parse(in);
    std::vector<std::unique_ptr<filters::keyring::AeadKey>> keys;
    for (const auto& k : doc["keys_hex"]) {
      keys.push_back(filters::keyring::AeadKey::create(
          filters::SecretBytes::copyOf(fromHex(k.get<std::string>()))));
    }
    out.ring = std::make_shared<const filters::keyring::KeySet>(std::move(keys));
    for (const auto& u : doc["udp"]) {
      auto sealed = fromHex(u["payload_hex"].get<std::string>());
      std::vector<uint8_t> plain(sealed.size());
      auto r = filters::gossip::openPayload(*out.ring, sealed, {}, plain);
      plain.resize(r.length);
      out.plain[u["frame"].get<int>()] = plain;
    }
    return out;
  }();
  return c;
}

void BM_ObserverInbound(benchmark::State& state) {
  const auto& c = captured();
  const auto& packet = c.plain.at(static_cast<int>(state.range(0)));
  proxy::PeerCensus census;
  auto keys = c.ring;
  proxy::GossipObserver observer(census, [&keys](proxy::GossipPool) { return keys; });
  const auto peer = proxy::SocketAddress::parse("10.250.0.1:7946");
  for (auto _ : state) {
    observer.inbound(proxy::GossipPool::Lan, peer, packet);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * packet.size()));
}
// 20: ping, 21: compress > ackResp, 11: hasCrc > compound [alive, alive],
// 30: hasCrc > compress > compound [2 key queries]
BENCHMARK(BM_ObserverInbound)->Arg(20)->Arg(21)->Arg(11)->Arg(30);

}  // namespace

namespace {

using namespace sidecrypt;

// The census's share of a packet at fleet scale (issue 17): 10,000 known peers, each packet from
// one of them (opened with a key, or plaintext), as the relay records it. Reports allocations per
// packet (must be 0: the address is rendered on the stack, the key fingerprint is a view).
void BM_CensusPacket10k(benchmark::State& state) {
  proxy::PeerCensus census;
  std::vector<proxy::SocketAddress> peers;
  for (int i = 0; i < 10000; ++i) {
    peers.push_back(proxy::SocketAddress::parse("10.250." + std::to_string(64 + i / 256) + "." +
                                                std::to_string(i % 256) + ":7946"));
  }
  filters::gossip::PacketResult opened;
  opened.reason = filters::gossip::PacketReason::Opened;
  opened.key_index = 0;
  filters::gossip::PacketResult plain;
  plain.reason = filters::gossip::PacketReason::PlaintextAccepted;
  plain.shadow_refused = true;
  const std::string fp = "0123abcd";
  auto record = [&](size_t i) {
    const auto& a = peers[i % peers.size()];
    const auto ip = filters::gossip::ipText({a.ipBytes(), a.ipLen()});
    census.onPacket(ip.view(), i % 16 == 0 ? plain : opened, i % 16 == 0 ? "" : fp);
  };
  for (size_t i = 0; i < peers.size(); ++i) {
    record(i);  // every peer known before timing
  }
  {
    const uint64_t probe = g_allocs.load();
    std::string big(100, 'x');  // must be counted, or the counter proves nothing
    benchmark::DoNotOptimize(big.data());
    if (g_allocs.load() == probe) {
      state.SkipWithError("the allocation counter does not count");
      return;
    }
  }
  size_t i = 0;
  const uint64_t before = g_allocs.load();
  for (auto _ : state) {
    record(i);
    i += 7919;  // a prime stride: no two consecutive packets from the same peer
  }
  state.counters["allocs_per_packet"] = benchmark::Counter(
      static_cast<double>(g_allocs.load() - before) / static_cast<double>(state.iterations()));
  state.counters["peers"] = static_cast<double>(census.peers().size());
}
BENCHMARK(BM_CensusPacket10k);

}  // namespace

// glibc lets the executable interpose malloc: every operator new comes through here.
extern "C" void* __libc_malloc(size_t n);  // NOLINT(bugprone-reserved-identifier)
extern "C" void* malloc(size_t n) {  // NOLINT(readability-inconsistent-declaration-parameter-name)
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  return __libc_malloc(n);
}
