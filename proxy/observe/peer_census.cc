#include "proxy/observe/peer_census.h"

#include <algorithm>
#include <functional>

namespace sidecrypt::proxy {

namespace fg = filters::gossip;

PeerRecord& PeerCensus::touch(const std::string& ip) {
  const auto now = WallClock::now();
  auto it = peers_.find(ip);
  if (it == peers_.end()) {
    if (peers_.size() >= max_peers_ && !peers_.empty()) {
      auto oldest = std::min_element(
          peers_.begin(), peers_.end(),
          [](const auto& a, const auto& b) { return a.second.last_seen < b.second.last_seen; });
      peers_.erase(oldest);
      ++evictions_;
    }
    it = peers_.emplace(ip, PeerRecord{}).first;
    it->second.address = ip;
    it->second.first_seen = now;
  }
  it->second.last_seen = now;
  return it->second;
}

void PeerCensus::plaintextSeen(PeerRecord& p) {
  const bool first = p.last_plaintext == WallClock::time_point{};
  p.last_plaintext = p.last_seen;
  if (first && first_plaintext_) {
    first_plaintext_(p);
  }
}

namespace {
void keyUsed(PeerRecord& p, const std::string& fingerprint) {
  if (!fingerprint.empty()) {
    auto& use = p.keys_used[fingerprint];
    ++use.count;
    use.last = p.last_seen;
  }
}
}  // namespace

void PeerCensus::onPacket(const std::string& ip, const fg::PacketResult& r,
                          const std::string& key_fingerprint) {
  PeerRecord& p = touch(ip);
  switch (r.reason) {
    case fg::PacketReason::Opened:
      ++p.packets_encrypted;
      keyUsed(p, key_fingerprint);
      break;
    case fg::PacketReason::PlaintextAccepted:
      ++p.packets_plaintext;
      plaintextSeen(p);
      break;
    case fg::PacketReason::OpenFailed:
      // Under verify_incoming a plaintext packet also fails to open: it is refused plaintext
      // when it does not even look sealed (memberlist cannot tell; neither can we, exactly).
      ++p.packets_refused;
      break;
    default:
      ++p.packets_open_failed;
      break;
  }
  if (r.shadow_refused) {
    ++p.shadow_refused;
    p.last_shadow_refused = p.last_seen;
  }
}

void PeerCensus::onStream(const std::string& ip, bool encrypted, const std::string& key_fingerprint,
                          bool shadow_refused, bool failed) {
  PeerRecord& p = touch(ip);
  if (failed) {
    ++p.streams_failed;
  } else if (encrypted) {
    ++p.streams_encrypted;
    keyUsed(p, key_fingerprint);
  } else {
    ++p.streams_plaintext;
    plaintextSeen(p);
  }
  if (shadow_refused) {
    ++p.shadow_refused;
    p.last_shadow_refused = p.last_seen;
  }
}

void PeerCensus::onRpc(const std::string& ip, bool tls, bool refused,
                       const std::vector<std::string>* dns_names) {
  PeerRecord& p = touch(ip);
  if (refused) {
    ++p.rpc_refused;
  } else if (tls) {
    ++p.rpc_tls;
  } else {
    // Accepted plaintext RPC: only possible while verify_incoming is off, which would refuse it.
    ++p.rpc_plaintext;
    ++p.shadow_refused;
    p.last_shadow_refused = p.last_seen;
    plaintextSeen(p);
  }
  if (dns_names != nullptr && !dns_names->empty()) {
    p.tls_dns_names = *dns_names;
  }
}

void PeerCensus::setNodeName(const std::string& ip, const std::string& node) {
  auto it = peers_.find(ip);
  if (it != peers_.end()) {
    it->second.node = node;
  }
}

}  // namespace sidecrypt::proxy
