// The census's view of gossip membership (memberlist's incarnation rules) and of key use, which
// the rollout checks and the "key no longer in use" log read.
#include <catch2/catch.hpp>

#include <chrono>

#include "proxy/observe/peer_census.h"

using namespace sidecrypt::proxy;
using sidecrypt::filters::gossip::PacketReason;
using sidecrypt::filters::gossip::PacketResult;
using sidecrypt::filters::gossip::Verdict;

TEST_CASE("peer_census: members follow memberlist's incarnation rules", "[census]") {
  PeerCensus c;
  c.onAlive("n1", "10.250.0.1", 7946, 1);
  REQUIRE(c.members().size() == 1);
  CHECK(c.members().at("n1").state == "alive");
  CHECK(c.members().at("n1").address == "10.250.0.1");

  c.onSuspect("n1", 0);  // old news
  CHECK(c.members().at("n1").state == "alive");
  c.onSuspect("n1", 1);
  CHECK(c.members().at("n1").state == "suspect");
  c.onAlive("n1", "10.250.0.1", 7946, 1);  // same incarnation cannot refute
  CHECK(c.members().at("n1").state == "suspect");
  c.onAlive("n1", "10.250.0.1", 7946, 2);  // the refutation
  CHECK(c.members().at("n1").state == "alive");

  c.onDead("n1", "n2", 2);
  CHECK(c.members().at("n1").state == "dead");
  c.onAlive("n1", "10.250.0.1", 7946, 2);  // a stale retransmit of the old alive: still dead
  CHECK(c.members().at("n1").state == "dead");
  c.onAlive("n1", "10.250.0.9", 7946, 2);  // back (e.g. restarted elsewhere)
  CHECK(c.members().at("n1").state == "alive");
  CHECK(c.members().at("n1").address == "10.250.0.9");
  c.onDead("n1", "n1", 3);  // declared by itself: a graceful leave
  CHECK(c.members().at("n1").state == "left");

  c.onSuspect("ghost", 5);  // unknown members are not invented
  c.onDead("ghost", "n1", 5);
  CHECK(c.members().count("ghost") == 0);
  c.onAlive("", "10.250.0.3", 7946, 1);
  CHECK(c.members().size() == 1);
}

TEST_CASE("peer_census: node names reach the peer records, members are bounded", "[census]") {
  PeerCensus c(2);
  PacketResult r;
  r.verdict = Verdict::Forward;
  r.reason = PacketReason::Opened;
  r.key_index = 0;
  c.onPacket("10.250.0.2", r, "aaaaaaaa");
  c.onAlive("n2", "10.250.0.2", 7946, 1);
  CHECK(c.peers().at("10.250.0.2").node == "n2");
  c.onAlive("n3", "10.250.0.3", 7946, 1);
  c.onAlive("n4", "10.250.0.4", 7946, 1);  // both are alive: n4 is not kept, none evicted
  CHECK(c.members().size() == 2);
  CHECK(c.members().count("n4") == 0);
  CHECK(c.memberEvictions() == 0);
  CHECK(c.dropped() == 1);
  c.onDead("n3", "n2", 1);  // a dead member gives way
  c.onAlive("n4", "10.250.0.4", 7946, 1);
  CHECK(c.members().count("n4") == 1);
  CHECK(c.members().count("n3") == 0);
  CHECK(c.memberEvictions() == 1);
  c.setSelf("n1", "10.250.0.1");
  CHECK(c.selfNode() == "n1");
  CHECK(c.selfAddress() == "10.250.0.1");
}

TEST_CASE("peer_census: a key falls out of use once, when no peer used it in the window",
          "[census]") {
  PeerCensus c;
  PacketResult r;
  r.verdict = Verdict::Forward;
  r.reason = PacketReason::Opened;
  c.onPacket("10.250.0.2", r, "k1k1k1k1");
  const std::vector<std::string> ring = {"k2k2k2k2", "k1k1k1k1"};
  const auto now = WallClock::now();
  const auto window = std::chrono::seconds(60);
  CHECK(c.keysFallenOutOfUse(ring, now, window).empty());  // k1 in use, k2 never was
  CHECK(c.keysFallenOutOfUse(ring, now + std::chrono::seconds(30), window).empty());
  auto gone = c.keysFallenOutOfUse(ring, now + std::chrono::seconds(90), window);
  REQUIRE(gone.size() == 1);
  CHECK(gone[0].first == "k1k1k1k1");
  // Reported once, not on every sweep.
  CHECK(c.keysFallenOutOfUse(ring, now + std::chrono::seconds(120), window).empty());
}

TEST_CASE("peer_census: the CAs of a peer's TLS chains, per direction, bounded", "[census][ca]") {
  using sidecrypt::filters::Direction;
  auto t = WallClock::now();
  static WallClock::time_point clock;
  clock = t;
  PeerCensus c(16, [] { return clock; });
  CaFingerprint old_ca{};
  old_ca[0] = 0x01;
  CaFingerprint new_ca{};
  new_ca[0] = 0x02;
  c.onPeerChain("10.250.0.2", Direction::Inbound, old_ca);
  clock += std::chrono::seconds(5);
  c.onPeerChain("10.250.0.2", Direction::Inbound, old_ca);
  c.onPeerChain("10.250.0.2", Direction::Outbound, new_ca);
  const PeerRecord* p = c.peer("10.250.0.2");
  REQUIRE(p != nullptr);
  REQUIRE(p->cas_used.size() == 2);
  const auto* in = p->caUse(Direction::Inbound, old_ca);
  REQUIRE(in != nullptr);
  CHECK(in->count == 2);
  CHECK(in->last == clock);
  CHECK(p->caUse(Direction::Outbound, old_ca) == nullptr);  // directions are kept apart
  REQUIRE(p->caUse(Direction::Outbound, new_ca) != nullptr);
  CHECK(p->caUse(Direction::Inbound, new_ca) == nullptr);
  CHECK(caFingerprintHex(old_ca) == "01" + std::string(62, '0'));
  CHECK(c.lossSince() == WallClock::time_point{});

  // Bounded: the least recently used CA gives way, and the census remembers it lost something.
  for (uint8_t i = 0; i < kMaxCasPerPeer; ++i) {
    clock += std::chrono::seconds(1);
    CaFingerprint fp{};
    fp[1] = static_cast<uint8_t>(i + 1);
    c.onPeerChain("10.250.0.2", Direction::Inbound, fp);
  }
  CHECK(p->cas_used.size() == kMaxCasPerPeer);
  CHECK(p->caUse(Direction::Inbound, old_ca) == nullptr);
  CHECK(c.lossSince() == t + std::chrono::seconds(5));
}
