// The census's view of gossip membership (memberlist's incarnation rules) and of key use, which
// the rollout checks and the "key no longer in use" log read.
#include <catch2/catch.hpp>

#include <malloc.h>

#include <chrono>
#include <cstdio>

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

namespace {
WallClock::time_point g_now = WallClock::time_point{} + std::chrono::hours(500'000);
WallClock::time_point fakeNow() {
  return g_now;
}
}  // namespace

TEST_CASE("peer_census: a member is its address and port; a new name there is a rename",
          "[census]") {
  // Alertmanager picks a random node name on every start: the same member comes back at the
  // same address and port under a new name, with its incarnation starting over.
  PeerCensus c(kDefaultCensusCapacity, &fakeNow);
  PacketResult r;
  r.verdict = Verdict::Forward;
  r.reason = PacketReason::Opened;
  c.onPacket("10.250.0.2", r, "aaaaaaaa");
  const auto t0 = g_now;
  c.onAlive("01GA", "10.250.0.2", 9094, 7);
  g_now += std::chrono::seconds(10);
  c.onAlive("01GA", "10.250.0.2", 9094, 8);
  const auto t1 = g_now;
  g_now += std::chrono::seconds(5);
  const auto t2 = g_now;
  c.onAlive("01GB", "10.250.0.2", 9094, 1);  // restarted with a new name
  REQUIRE(c.members().size() == 1);
  const MemberRecord& m = c.members().at("01GB");
  CHECK(m.state == "alive");
  CHECK(m.incarnation == 1);
  CHECK(m.named == t2);
  REQUIRE(m.earlier_names.size() == 1);
  CHECK(m.earlier_names[0].name == "01GA");
  CHECK(m.earlier_names[0].first == t0);
  CHECK(m.earlier_names[0].last == t1);
  CHECK(c.memberRenames() == 1);
  CHECK(c.peers().at("10.250.0.2").node == "01GB");
  CHECK(c.memberAt("10.250.0.2") == &m);

  // Late news about the old name (its suspicion, its death, a retransmitted alive with a higher
  // incarnation) changes nothing: it is the same member, alive under its new name.
  c.onSuspect("01GA", 9);
  c.onDead("01GA", "01GC", 9);
  c.onAlive("01GA", "10.250.0.2", 9094, 9);
  REQUIRE(c.members().size() == 1);
  CHECK(c.members().at("01GB").state == "alive");
  CHECK(c.memberRenames() == 1);

  // Another port on the same IP is another member (several per host).
  c.onAlive("other", "10.250.0.2", 9095, 1);
  CHECK(c.members().size() == 2);
  c.onAlive("other2", "10.250.0.2", 9095, 1);  // and it renames on its own
  CHECK(c.members().size() == 2);
  CHECK(c.members().at("other2").earlier_names.at(0).name == "other");
  CHECK(c.members().at("01GB").earlier_names.size() == 1);

  // IPv6 endpoints are spelled with brackets.
  CHECK(memberEndpoint("fd00:250::2", 9094) == "[fd00:250::2]:9094");
  CHECK(memberEndpoint("10.250.0.2", 9094) == "10.250.0.2:9094");
}

TEST_CASE("peer_census: the names kept per member are bounded, newest kept", "[census]") {
  PeerCensus c(kDefaultCensusCapacity, &fakeNow);
  for (int i = 0; i < 50; ++i) {
    g_now += std::chrono::seconds(1);
    c.onAlive("name-" + std::to_string(i), "10.250.0.3", 9094, 1);
  }
  REQUIRE(c.members().size() == 1);
  const MemberRecord& m = c.members().at("name-49");
  REQUIRE(m.earlier_names.size() == kMaxNamesPerMember - 1);
  CHECK(m.earlier_names[0].name == "name-46");
  CHECK(m.earlier_names[2].name == "name-48");
  CHECK(c.memberRenames() == 49);
  // A name from further back than the history is a new name again (a rename, still one member).
  c.onAlive("name-0", "10.250.0.3", 9094, 1);
  CHECK(c.members().size() == 1);
  CHECK(c.members().count("name-0") == 1);
}

TEST_CASE("peer_census: a dead member renamed at its address is alive and not evicted",
          "[census]") {
  PeerCensus c(2, &fakeNow);
  c.onAlive("a", "10.250.0.4", 9094, 3);
  c.onDead("a", "b", 3);
  CHECK(c.members().at("a").state == "dead");
  c.onAlive("a2", "10.250.0.4", 9094, 1);  // restarted under a new name
  REQUIRE(c.members().count("a2") == 1);
  CHECK(c.members().at("a2").state == "alive");
  c.onAlive("x", "10.250.0.5", 9094, 1);
  c.onAlive("y", "10.250.0.6", 9094, 1);  // full of live members: y is dropped, a2 kept
  CHECK(c.members().count("a2") == 1);
  CHECK(c.members().count("y") == 0);
  CHECK(c.memberEvictions() == 0);
  // A name too long to keep does not rename a member either.
  c.onAlive(std::string(kMaxCensusNodeName + 1, 'z'), "10.250.0.4", 9094, 1);
  CHECK(c.members().count("a2") == 1);
}

// Heap held by a census of 10,000 members and their peer records (each heard, one key), as
// members that never renamed and as members that renamed enough to fill their name history.
// Hidden (run by hand): ./build/tests/unit_tests '[.census_memory]'
TEST_CASE("peer_census: heap at 10,000 members", "[.census_memory]") {
  PacketResult r;
  r.verdict = Verdict::Forward;
  r.reason = PacketReason::Opened;
  for (int renames : {0, static_cast<int>(kMaxNamesPerMember) - 1}) {
    const size_t before = mallinfo2().uordblks;
    {
      PeerCensus c(kDefaultCensusCapacity, &fakeNow);
      for (int i = 0; i < 10000; ++i) {
        const std::string ip =
            "10.250." + std::to_string(64 + i / 250) + "." + std::to_string(1 + i % 250);
        c.onPacket(ip, r, "aaaaaaaa");
        for (int k = 0; k <= renames; ++k) {
          // 26 characters, like an Alertmanager ULID.
          c.onAlive("01HZX" + std::to_string(100000 + i) + "ABCDEFGHIJ" + std::to_string(k), ip,
                    9094, 1);
        }
      }
      REQUIRE(c.members().size() == 10000);
      REQUIRE(c.peers().size() == 10000);
      const size_t used = mallinfo2().uordblks - before;
      std::printf("census at 10,000 members, %d renames each: %.2f MB heap (%zu bytes/member)\n",
                  renames, static_cast<double>(used) / 1e6, used / 10000);
      CHECK(used < size_t{16} << 20);
    }
  }
}
