// What the gossip observer (membership, key queries; issues 7 and 8) adds per UDP packet, on
// real captured serf packets opened with their keys: a ping (the most common packet), an ack
// (compressed), a compound of alive messages, and a compressed compound of key queries (after
// the first pass they are re-broadcasts: dedup only). Compare with BM_PeerPacketFilter in
// bench_gossip, the cost of opening the packet itself.
#include <benchmark/benchmark.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "filters/gossip/gossip_codec.h"
#include "filters/keyring/aead_key.h"
#include "proxy/datapath/gossip_observer.h"

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
