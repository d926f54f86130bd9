// SourceShares: which session gives its descriptors up when a connection arrives at the
// open-file limit (Datapath::acceptFailed).
#include "proxy/datapath/source_shares.h"

#include <catch2/catch.hpp>

#include <string>

using sidecrypt::proxy::SourceShares;

namespace {
struct Fake {
  int n = 0;
};
}  // namespace

TEST_CASE("a lighter source takes the heaviest source's newest unfinished session",
          "[datapath][source_shares]") {
  Fake a1{1}, a2{2}, a3{3}, b1{4}, b2{5};
  SourceShares<Fake> shares;
  // The flood: 10.0.0.1 holds three, the newest (id 30) unfinished; id 40 is newer but finished.
  shares.add("10.0.0.1", 10, &a1, true);
  shares.add("10.0.0.1", 30, &a3, true);
  shares.add("10.0.0.1", 20, &a2, true);
  shares.add("10.0.0.1", 40, nullptr, false);
  shares.add("10.0.0.2", 5, &b1, true);
  shares.add("10.0.0.2", 6, &b2, true);
  // A peer holding none: 10.0.0.1 (4) is the heaviest; its newest unfinished is id 30.
  CHECK(shares.victimFor("10.0.0.9") == &a3);
  // Now 10.0.0.1 holds 3, 10.0.0.9 holds 1: the next from 10.0.0.9 takes id 20.
  CHECK(shares.victimFor("10.0.0.9") == &a2);
  // 10.0.0.1 holds 2, 10.0.0.2 holds 2, 10.0.0.9 holds 2: nobody is lighter than the heaviest.
  CHECK(shares.victimFor("10.0.0.9") == nullptr);
  CHECK(shares.victimFor("10.0.0.1") == nullptr);
  CHECK(shares.victimFor("10.0.0.2") == nullptr);
}

TEST_CASE("a flood's connection is shed, never one of a lighter source's sessions",
          "[datapath][source_shares]") {
  Fake f1, f2, f3, p1;
  SourceShares<Fake> shares;
  shares.add("10.0.0.66", 1, &f1, true);
  shares.add("10.0.0.66", 2, &f2, true);
  shares.add("10.0.0.66", 3, &f3, true);
  shares.add("10.0.0.7", 4, &p1, true);  // a peer mid-handshake
  for (int i = 0; i < 5; ++i) {
    CHECK(shares.victimFor("10.0.0.66") == nullptr);
  }
}

TEST_CASE("only unfinished sessions yield; our agent's connections hold no share",
          "[datapath][source_shares]") {
  Fake u;
  SourceShares<Fake> shares;
  // 10.0.0.1 holds five established streams: nothing of it may be closed.
  for (uint64_t id = 1; id <= 5; ++id) {
    shares.add("10.0.0.1", id, nullptr, false);
  }
  shares.add("10.0.0.2", 6, &u, true);
  shares.add("10.0.0.2", 7, nullptr, false);
  // The agent (empty source) holds none: 10.0.0.2 is the heaviest with something to give.
  CHECK(shares.victimFor("") == &u);
  CHECK(shares.victimFor("") == nullptr);
  CHECK(shares.victimFor("10.0.0.3") == nullptr);
}

TEST_CASE("an empty snapshot sheds", "[datapath][source_shares]") {
  SourceShares<Fake> shares;
  CHECK(shares.victimFor("10.0.0.1") == nullptr);
  CHECK(shares.victimFor("") == nullptr);
}
