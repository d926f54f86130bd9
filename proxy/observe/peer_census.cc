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

void PeerCensus::setNodeName(std::string_view ip, std::string_view node) {
  auto it = peers_.find(ip);
  if (it != peers_.end() && it->second.node != node) {
    it->second.node = node;
  }
}

MemberRecord* PeerCensus::member(std::string_view node) {
  auto it = members_.find(node);
  return it == members_.end() ? nullptr : &it->second;
}

void PeerCensus::onAlive(std::string_view node, std::string_view ip, uint16_t port,
                         uint32_t incarnation) {
  if (node.empty()) {
    return;
  }
  MemberRecord* m = member(node);
  if (m != nullptr) {
    // memberlist aliveNode: old news unless the incarnation moved on (or a dead/left member
    // comes back).
    const bool gone = m->state == "dead" || m->state == "left";
    if (incarnation < m->incarnation || (incarnation == m->incarnation && !gone)) {
      return;
    }
  } else {
    if (members_.size() >= max_peers_ && !members_.empty()) {
      auto oldest = std::min_element(
          members_.begin(), members_.end(),
          [](const auto& a, const auto& b) { return a.second.updated < b.second.updated; });
      members_.erase(oldest);
      ++member_evictions_;
    }
    m = &members_.emplace(std::string(node), MemberRecord{}).first->second;
    m->name = std::string(node);
  }
  m->address = std::string(ip);
  m->port = port;
  m->state = "alive";
  m->incarnation = incarnation;
  m->updated = WallClock::now();
  setNodeName(ip, m->name);
  if (alive_hook_) {
    alive_hook_(*m);
  }
}

void PeerCensus::onSuspect(std::string_view node, uint32_t incarnation) {
  MemberRecord* m = member(node);
  if (m == nullptr || m->state != "alive" || incarnation < m->incarnation) {
    return;
  }
  m->state = "suspect";
  m->incarnation = incarnation;
  m->updated = WallClock::now();
}

void PeerCensus::onDead(std::string_view node, std::string_view from, uint32_t incarnation) {
  MemberRecord* m = member(node);
  if (m == nullptr || incarnation < m->incarnation || m->state == "dead" || m->state == "left") {
    return;
  }
  m->state = from == node ? "left" : "dead";
  m->incarnation = incarnation;
  m->updated = WallClock::now();
}

void PeerCensus::setSelf(std::string_view node, std::string_view ip) {
  if (!self_fixed_ && self_node_ != node) {
    self_node_ = std::string(node);
  }
  if (self_address_ != ip) {
    self_address_ = std::string(ip);
  }
}

std::vector<std::pair<std::string, WallClock::time_point>> PeerCensus::keysFallenOutOfUse(
    const std::vector<std::string>& ring, WallClock::time_point now, std::chrono::seconds window) {
  std::vector<std::pair<std::string, WallClock::time_point>> out;
  std::unordered_set<std::string> in_use;
  for (const auto& fp : ring) {
    WallClock::time_point last{};
    for (const auto& [ip, p] : peers_) {
      auto it = p.keys_used.find(fp);
      if (it != p.keys_used.end()) {
        last = std::max(last, it->second.last);
      }
    }
    if (last != WallClock::time_point{} && now - last <= window) {
      in_use.insert(fp);
    } else if (keys_in_use_.count(fp) != 0) {
      out.emplace_back(fp, last);
    }
  }
  keys_in_use_ = std::move(in_use);
  return out;
}

}  // namespace sidecrypt::proxy
