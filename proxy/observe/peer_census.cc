#include "proxy/observe/peer_census.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <functional>

namespace sidecrypt::proxy {

namespace fg = filters::gossip;

const PeerRecord::KeyUse* PeerRecord::keyUse(std::string_view fingerprint) const {
  for (const auto& k : keys_used) {
    if (k.fingerprint == fingerprint) {
      return &k;
    }
  }
  return nullptr;
}

std::string caFingerprintHex(const CaFingerprint& fp) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(fp.size() * 2, '0');
  for (size_t i = 0; i < fp.size(); ++i) {
    out[2 * i] = kHex[fp[i] >> 4];
    out[2 * i + 1] = kHex[fp[i] & 0xf];
  }
  return out;
}

const PeerRecord::CaUse* PeerRecord::caUse(filters::Direction direction,
                                           const CaFingerprint& fingerprint) const {
  for (const auto& c : cas_used) {
    if (c.direction == direction && c.fingerprint == fingerprint) {
      return &c;
    }
  }
  return nullptr;
}

bool PeerCensus::liveMemberAt(const PeerRecord& p) const {
  auto at = member_at_.find(p.address);
  if (at == member_at_.end()) {
    return false;
  }
  auto it = members_.find(at->second);
  return it != members_.end() && it->second.live() && it->second.address == p.address;
}

// Evicts the least recently heard peer among the oldest few that is not a live member's.
bool PeerCensus::makeRoomForPeer() {
  PeerRecord* p = peer_lru_.oldest();
  for (int i = 0; i < kEvictionCandidates && p != nullptr; ++i, p = p->lru.newer) {
    if (!liveMemberAt(*p)) {
      lost(p->last_seen);
      peer_lru_.unlink(p);
      peers_.erase(peers_.find(p->address));
      ++evictions_;
      return true;
    }
  }
  return false;
}

PeerRecord* PeerCensus::touch(std::string_view ip) {
  const auto now = now_();
  auto it = peers_.find(ip);
  if (it == peers_.end()) {
    if (peers_.size() >= capacity_ && !makeRoomForPeer()) {
      ++dropped_;
      lost(now);
      return nullptr;
    }
    it = peers_.emplace(std::string(ip), PeerRecord{}).first;
    it->second.address = it->first;
    it->second.first_seen = now;
    if (auto at = member_at_.find(ip); at != member_at_.end()) {
      it->second.node = at->second;  // the gossip named this address before it spoke
    }
    peer_lru_.pushNewest(&it->second);
  } else {
    peer_lru_.touch(&it->second);
  }
  it->second.last_seen = now;
  return &it->second;
}

void PeerCensus::plaintextSeen(PeerRecord& p) {
  const bool first = p.last_plaintext == WallClock::time_point{};
  p.last_plaintext = p.last_seen;
  if (first && first_plaintext_) {
    first_plaintext_(p);
  }
}

void PeerCensus::keyUsed(PeerRecord& p, std::string_view fingerprint) {
  if (fingerprint.empty()) {
    return;
  }
  for (auto& k : p.keys_used) {
    if (k.fingerprint == fingerprint) {
      ++k.count;
      k.last = p.last_seen;
      return;
    }
  }
  if (p.keys_used.size() >= kMaxKeysPerPeer) {
    auto stale = std::min_element(p.keys_used.begin(), p.keys_used.end(),
                                  [](const auto& a, const auto& b) { return a.last < b.last; });
    lost(stale->last);  // a remove-key check reaching back to it cannot be answered
    p.keys_used.erase(stale);
  }
  p.keys_used.push_back({std::string(fingerprint), 1, p.last_seen});
}

void PeerCensus::onPacket(std::string_view ip, const fg::PacketResult& r,
                          std::string_view key_fingerprint) {
  PeerRecord* p = touch(ip);
  if (p == nullptr) {
    return;
  }
  switch (r.reason) {
    case fg::PacketReason::Opened:
      ++p->packets_encrypted;
      keyUsed(*p, key_fingerprint);
      break;
    case fg::PacketReason::PlaintextAccepted:
      ++p->packets_plaintext;
      plaintextSeen(*p);
      break;
    case fg::PacketReason::OpenFailed:
      // Under verify_incoming a plaintext packet also fails to open: it is refused plaintext
      // when it does not even look sealed (memberlist cannot tell; neither can we, exactly).
      ++p->packets_refused;
      p->last_refused = p->last_seen;
      break;
    default:
      ++p->packets_open_failed;
      break;
  }
  if (r.shadow_refused) {
    ++p->shadow_refused;
    p->last_shadow_refused = p->last_seen;
  }
}

void PeerCensus::onStream(std::string_view ip, bool encrypted, std::string_view key_fingerprint,
                          bool shadow_refused, bool failed) {
  PeerRecord* p = touch(ip);
  if (p == nullptr) {
    return;
  }
  if (failed) {
    ++p->streams_failed;
  } else if (encrypted) {
    ++p->streams_encrypted;
    keyUsed(*p, key_fingerprint);
  } else {
    ++p->streams_plaintext;
    plaintextSeen(*p);
  }
  if (shadow_refused) {
    ++p->shadow_refused;
    p->last_shadow_refused = p->last_seen;
  }
}

void PeerCensus::onRpc(std::string_view ip, bool tls, bool refused,
                       const std::vector<std::string>* dns_names) {
  PeerRecord* p = touch(ip);
  if (p == nullptr) {
    return;
  }
  if (refused) {
    // Not ready: plaintext refused under verify_incoming, or a failed handshake (not told apart
    // here), so it is counted but not taken as plaintext.
    ++p->rpc_refused;
  } else if (tls) {
    ++p->rpc_tls;
  } else {
    // Accepted plaintext RPC: only possible while verify_incoming is off, which would refuse it.
    ++p->rpc_plaintext;
    ++p->shadow_refused;
    p->last_shadow_refused = p->last_seen;
    plaintextSeen(*p);
  }
  if (dns_names != nullptr && !dns_names->empty()) {
    p->tls_dns_names = *dns_names;
  }
}

void PeerCensus::onPeerChain(std::string_view ip, filters::Direction direction,
                             const CaFingerprint& anchor) {
  PeerRecord* p = touch(ip);
  if (p == nullptr) {
    return;
  }
  for (auto& c : p->cas_used) {
    if (c.direction == direction && c.fingerprint == anchor) {
      ++c.count;
      c.last = p->last_seen;
      return;
    }
  }
  if (p->cas_used.size() >= kMaxCasPerPeer) {
    auto stale = std::min_element(p->cas_used.begin(), p->cas_used.end(),
                                  [](const auto& a, const auto& b) { return a.last < b.last; });
    lost(stale->last);  // a remove-ca check reaching back to it cannot be answered
    p->cas_used.erase(stale);
  }
  p->cas_used.push_back({anchor, direction, 1, p->last_seen});
}

void PeerCensus::setNodeName(std::string_view ip, std::string_view node) {
  auto it = peers_.find(ip);
  if (it != peers_.end() && it->second.node != node) {
    it->second.node = node;
  }
}

std::string memberEndpoint(std::string_view ip, uint16_t port) {
  std::string out;
  const bool v6 = ip.find(':') != std::string_view::npos;
  out.reserve(ip.size() + 8);
  out += v6 ? "[" : "";
  out += ip;
  out += v6 ? "]:" : ":";
  out += std::to_string(port);
  return out;
}

size_t PeerCensus::EndpointHash::operator()(const Endpoint& e) const {
  uint64_t a = 0;
  uint64_t b = 0;
  std::memcpy(&a, e.ip.data(), 8);
  std::memcpy(&b, e.ip.data() + 8, 8);
  return std::hash<uint64_t>{}(a ^ (b * 0x9e3779b97f4a7c15ULL) ^ (uint64_t{e.port} << 48));
}

std::optional<PeerCensus::Endpoint> PeerCensus::endpointOf(std::string_view ip, uint16_t port) {
  char text[INET6_ADDRSTRLEN + 1] = {};
  if (ip.size() >= sizeof(text)) {
    return std::nullopt;
  }
  std::memcpy(text, ip.data(), ip.size());
  Endpoint e;
  e.port = port;
  in_addr v4{};
  if (inet_pton(AF_INET, text, &v4) == 1) {
    e.ip[10] = 0xff;
    e.ip[11] = 0xff;
    std::memcpy(e.ip.data() + 12, &v4, 4);
    return e;
  }
  if (inet_pton(AF_INET6, text, e.ip.data()) == 1) {
    return e;
  }
  return std::nullopt;
}

void PeerCensus::forgetAddress(const MemberRecord& m) {
  auto at = member_at_.find(m.address);
  if (at != member_at_.end() && at->second == m.name) {
    member_at_.erase(at);
  }
  if (auto e = endpointOf(m.address, m.port)) {
    auto on = member_on_.find(*e);
    if (on != member_on_.end() && on->second == &m) {
      member_on_.erase(on);
    }
  }
}

const MemberRecord* PeerCensus::memberAt(std::string_view ip) const {
  auto at = member_at_.find(ip);
  if (at == member_at_.end()) {
    return nullptr;
  }
  auto it = members_.find(at->second);
  return it == members_.end() ? nullptr : &it->second;
}

// The member keeps its record (and its place in the LRU lists: the map node moves, the record
// does not); its current name joins the earlier ones, the oldest giving way.
void PeerCensus::rename(MemberRecord& m, std::string_view node) {
  if (m.earlier_names.size() + 1 >= kMaxNamesPerMember) {
    m.earlier_names.erase(m.earlier_names.begin());
  }
  m.earlier_names.push_back({m.name, m.named, m.updated});
  auto handle = members_.extract(m.name);
  handle.key() = std::string(node);
  handle.mapped().name = handle.key();
  members_.insert(std::move(handle));
  m.named = now_();
  ++member_renames_;
}

MemberRecord* PeerCensus::member(std::string_view node) {
  auto it = members_.find(node);
  return it == members_.end() ? nullptr : &it->second;
}

// Evicts the dead or departed member updated least recently: a live member is never evicted
// (the checks would take its silence for absence).
bool PeerCensus::makeRoomForMember() {
  MemberRecord* m = gone_lru_.oldest();
  if (m == nullptr) {
    return false;
  }
  forgetAddress(*m);
  gone_lru_.unlink(m);
  members_.erase(members_.find(m->name));
  ++member_evictions_;
  return true;
}

void PeerCensus::onAlive(std::string_view node, std::string_view ip, uint16_t port,
                         uint32_t incarnation) {
  if (node.empty()) {
    return;
  }
  MemberRecord* m = member(node);
  bool renamed = false;
  if (m == nullptr) {
    // Identity by address: a new name at a known member's address and port is that member
    // after a restart with a new name. A late alive for one of its earlier names changes nothing.
    const auto e = endpointOf(ip, port);
    auto on = e ? member_on_.find(*e) : member_on_.end();
    MemberRecord* there = on == member_on_.end() ? nullptr : on->second;
    if (there != nullptr && there->address == ip && there->port == port) {
      if (there->hadName(node) || node.size() > kMaxCensusNodeName) {
        return;
      }
      rename(*there, node);
      m = there;
      renamed = true;
    }
  }
  if (renamed) {
    if (m->state == "dead" || m->state == "left") {
      gone_lru_.unlink(m);
      member_lru_.pushNewest(m);
    } else {
      member_lru_.touch(m);
    }
  } else if (m != nullptr) {
    // memberlist aliveNode: old news unless the incarnation moved on, or a dead/left member is
    // replaced at another address with the same incarnation (memberlist: a left one, or a dead
    // one past DeadNodeReclaimTime; taken as alive here for both, which can only make the
    // checks stricter). A stale retransmit of the old alive does not bring it back.
    const bool gone = m->state == "dead" || m->state == "left";
    const bool moved = m->address != ip || m->port != port;
    if (incarnation < m->incarnation || (incarnation == m->incarnation && !(gone && moved))) {
      return;
    }
    if (gone) {
      gone_lru_.unlink(m);
      member_lru_.pushNewest(m);
    } else {
      member_lru_.touch(m);
    }
  } else {
    if (node.size() > kMaxCensusNodeName ||
        (members_.size() >= capacity_ && !makeRoomForMember())) {
      ++dropped_;
      lost(now_());
      return;
    }
    m = &members_.emplace(std::string(node), MemberRecord{}).first->second;
    m->name = std::string(node);
    m->named = now_();
    member_lru_.pushNewest(m);
  }
  if (m->address != ip || m->port != port) {
    forgetAddress(*m);
    m->address = std::string(ip);
    m->port = port;
  }
  member_at_.insert_or_assign(m->address, m->name);
  if (auto e = endpointOf(ip, port)) {
    member_on_.insert_or_assign(*e, m);
  }
  m->state = "alive";
  m->incarnation = incarnation;
  m->updated = now_();
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
  m->updated = now_();
  member_lru_.touch(m);
}

void PeerCensus::onDead(std::string_view node, std::string_view from, uint32_t incarnation) {
  MemberRecord* m = member(node);
  if (m == nullptr || incarnation < m->incarnation || m->state == "dead" || m->state == "left") {
    return;
  }
  m->state = from == node ? "left" : "dead";
  m->incarnation = incarnation;
  m->updated = now_();
  member_lru_.unlink(m);
  gone_lru_.pushNewest(m);
}

void PeerCensus::setSelf(std::string_view node, std::string_view ip) {
  if (!self_fixed_ && self_node_ != node) {
    self_node_ = std::string(node);
  }
  if (self_address_ != ip) {
    self_address_ = std::string(ip);
  }
}

void PeerCensus::setCapacity(size_t capacity) {
  capacity_ = capacity;
  while (peers_.size() > capacity_) {
    PeerRecord* p = peer_lru_.oldest();
    lost(p->last_seen);
    peer_lru_.unlink(p);
    peers_.erase(peers_.find(p->address));
    ++evictions_;
  }
  while (members_.size() > capacity_ && makeRoomForMember()) {
  }
  while (members_.size() > capacity_) {
    MemberRecord* m = member_lru_.oldest();
    lost(now_());
    forgetAddress(*m);
    member_lru_.unlink(m);
    members_.erase(members_.find(m->name));
    ++member_evictions_;
  }
}

std::vector<std::pair<std::string, WallClock::time_point>> PeerCensus::keysFallenOutOfUse(
    const std::vector<std::string>& ring, WallClock::time_point now, std::chrono::seconds window) {
  std::vector<std::pair<std::string, WallClock::time_point>> out;
  std::unordered_set<std::string> in_use;
  for (const auto& fp : ring) {
    WallClock::time_point last{};
    for (const auto& [ip, p] : peers_) {
      if (const auto* use = p.keyUse(fp)) {
        last = std::max(last, use->last);
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
