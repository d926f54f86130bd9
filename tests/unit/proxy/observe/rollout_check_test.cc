// The census at fleet scale and the rollout checks answered from it (issue 17): a full census
// never evicts a live member and never lets a check say a "yes" it cannot back; /metrics keeps
// the same series whatever the fleet size; /peers filters and pages.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <set>
#include <string>

#include "filters/rpc_tls/cert_inventory.h"
#include "proxy/admin/admin_server.h"
#include "proxy/admin/ca_view.h"
#include "proxy/admin/status_render.h"
#include "proxy/observe/peer_census.h"
#include "proxy/observe/rollout_check.h"
#include "proxy/runtime_state.h"

using namespace sidecrypt::proxy;
using nlohmann::json;
using sidecrypt::filters::gossip::PacketReason;
using sidecrypt::filters::gossip::PacketResult;
using sidecrypt::filters::gossip::Verdict;

namespace {

WallClock::time_point g_now = WallClock::time_point{} + std::chrono::hours(24 * 365 * 50);
WallClock::time_point fakeNow() {
  return g_now;
}
void advance(std::chrono::seconds s) {
  g_now += s;
}

PacketResult opened() {
  PacketResult r;
  r.verdict = Verdict::Forward;
  r.reason = PacketReason::Opened;
  r.key_index = 0;
  return r;
}
PacketResult plaintext() {
  PacketResult r;
  r.verdict = Verdict::Forward;
  r.reason = PacketReason::PlaintextAccepted;
  r.shadow_refused = true;
  return r;
}
PacketResult refused() {
  PacketResult r;
  r.verdict = Verdict::Drop;
  r.reason = PacketReason::OpenFailed;
  return r;
}

std::string ip(int i) {
  return "10.250." + std::to_string(64 + i / 256) + "." + std::to_string(i % 256);
}
std::string name(int i) {
  return "node-" + std::to_string(i);
}

CheckContext ctx(std::chrono::seconds window = std::chrono::seconds(600)) {
  CheckContext c;
  c.now = g_now;
  c.window = window;
  c.started = g_now - std::chrono::hours(1);
  return c;
}

std::set<std::string> peersOf(const CheckAnswer& a, const std::string& cls) {
  std::set<std::string> out;
  for (const auto& r : a.reasons) {
    if (r.cls == cls) {
      out.insert(r.peer);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("census: 20,000 peers and members fit the default without eviction", "[census]") {
  PeerCensus c(kDefaultCensusCapacity, &fakeNow);
  for (int i = 0; i < 20000; ++i) {
    c.onAlive(name(i), ip(i), 7946, 1);
    c.onPacket(ip(i), opened(), "k1k1k1k1");
  }
  CHECK(c.peers().size() == 20000);
  CHECK(c.members().size() == 20000);
  CHECK(c.evictions() == 0);
  CHECK(c.dropped() == 0);
  CHECK(c.lossSince() == WallClock::time_point{});
}

TEST_CASE("census: a full census evicts the longest-silent non-member, never a live member",
          "[census]") {
  PeerCensus c(1024, &fakeNow);
  // 1,000 live members and 24 strangers (say spoofed sources), heard before the members.
  for (int i = 0; i < 24; ++i) {
    c.onPacket("10.250.9." + std::to_string(i), plaintext(), "");
  }
  advance(std::chrono::seconds(1));
  for (int i = 0; i < 1000; ++i) {
    c.onAlive(name(i), ip(i), 7946, 1);
    c.onPacket(ip(i), opened(), "k1k1k1k1");
  }
  REQUIRE(c.peers().size() == 1024);
  advance(std::chrono::seconds(1));
  // 24 new sources take the strangers' places, oldest first.
  for (int i = 0; i < 24; ++i) {
    c.onPacket("10.250.10." + std::to_string(i), opened(), "k1k1k1k1");
  }
  CHECK(c.evictions() == 24);
  CHECK(c.dropped() == 0);
  for (int i = 0; i < 1000; ++i) {
    CHECK(c.peer(ip(i)) != nullptr);
  }
  // The strangers' plaintext is gone from the census: a window that reaches back to it is
  // answered "no, the census was full", never "yes".
  auto a = checkEnforceIncoming(c, ctx());
  CHECK_FALSE(a.ok);
  CHECK(peersOf(a, "census_full").size() == 1);
  // Now every candidate at the back is a live member: a new source is not kept.
  advance(std::chrono::seconds(700));
  for (int i = 0; i < 1000; ++i) {
    c.onPacket(ip(i), opened(), "k1k1k1k1");  // the members speak again, the new ones are older
  }
  advance(std::chrono::seconds(1));
  for (int i = 0; i < 24; ++i) {
    c.onPacket("10.250.10." + std::to_string(i), opened(), "k1k1k1k1");
  }
  c.onPacket("10.250.11.1", plaintext(), "");  // the oldest 16 are all live members now
  CHECK(c.peer("10.250.11.1") == nullptr);
  CHECK(c.dropped() == 1);
  a = checkEnforceIncoming(c, ctx());
  CHECK_FALSE(a.ok);
  CHECK(peersOf(a, "census_full").size() == 1);
  CHECK(peersOf(a, "plaintext").empty());
}

TEST_CASE("census: members are dropped, not evicted, while every candidate is alive", "[census]") {
  PeerCensus c(1024, &fakeNow);
  for (int i = 0; i < 1024; ++i) {
    c.onAlive(name(i), ip(i), 7946, 1);
  }
  c.onAlive("late", "10.250.20.1", 7946, 1);
  CHECK(c.members().count("late") == 0);
  CHECK(c.dropped() == 1);
  CHECK(c.memberEvictions() == 0);
  c.onDead(name(0), name(1), 1);
  c.onAlive("late", "10.250.20.1", 7946, 1);
  CHECK(c.members().count("late") == 1);
  CHECK(c.members().count(name(0)) == 0);
  // A hostile, overlong name is not kept (and says so through the loss).
  c.onAlive(std::string(kMaxCensusNodeName + 1, 'x'), "10.250.20.2", 7946, 1);
  CHECK(c.dropped() == 2);
}

TEST_CASE(
    "check enforce-incoming at 10,000 members names every plaintext sender and silent "
    "member",
    "[census][check]") {
  PeerCensus c(kDefaultCensusCapacity, &fakeNow);
  c.setSelf("self", "10.250.0.1");
  std::set<std::string> want_plain;
  std::set<std::string> want_silent;
  for (int i = 0; i < 10000; ++i) {
    c.onAlive(name(i), ip(i), 7946, 1);
    if (i % 97 == 0) {
      want_silent.insert(ip(i));  // announced alive, never heard
      continue;
    }
    const bool plain = i % 89 == 0;
    c.onPacket(ip(i), plain ? plaintext() : opened(), plain ? "" : "k1k1k1k1");
    if (plain) {
      want_plain.insert(ip(i));
    }
  }
  c.onAlive("self", "10.250.0.1", 7946, 1);  // never counted as silent
  auto a = checkEnforceIncoming(c, ctx());
  CHECK_FALSE(a.ok);
  CHECK(peersOf(a, "plaintext") == want_plain);
  CHECK(peersOf(a, "silent") == want_silent);
  CHECK(a.reasons.size() == want_plain.size() + want_silent.size());
  CHECK(a.live_members == 10000);
  CHECK(a.plaintext_peers == want_plain.size());
  CHECK(a.silent_members == want_silent.size());

  // The same counts as gauges.
  const auto counts = censusCounts(c, g_now, std::chrono::seconds(600), {"k1k1k1k1", "k2k2k2k2"});
  CHECK(counts.plaintext_peers == want_plain.size());
  CHECK(counts.silent_members == want_silent.size());
  CHECK(counts.key_peers[0].second == 10000 - want_plain.size() - want_silent.size());
  CHECK(counts.key_peers[1].second == 0);

  // Once the plaintext senders encrypt and the silent members are heard, and the plaintext has
  // left the window: yes.
  advance(std::chrono::seconds(601));
  for (int i = 0; i < 10000; ++i) {
    c.onPacket(ip(i), opened(), "k1k1k1k1");
  }
  a = checkEnforceIncoming(c, ctx());
  CHECK(a.ok);
  CHECK(a.reasons.empty());
  // A member heard only before the window is silent again.
  advance(std::chrono::seconds(300));
  for (int i = 1; i < 10000; ++i) {
    c.onPacket(ip(i), opened(), "k1k1k1k1");
  }
  advance(std::chrono::seconds(301));
  a = checkEnforceIncoming(c, ctx());
  CHECK(peersOf(a, "silent") == std::set<std::string>{ip(0)});
}

TEST_CASE("check enforce-incoming: refused plaintext, no traffic, a young census", "[check]") {
  PeerCensus c(kDefaultCensusCapacity, &fakeNow);
  auto a = checkEnforceIncoming(c, ctx());
  CHECK_FALSE(a.ok);
  CHECK(peersOf(a, "no_traffic").size() == 1);
  c.onAlive("n2", "10.250.0.2", 7946, 1);
  c.onPacket("10.250.0.2", refused(), "");
  a = checkEnforceIncoming(c, ctx());
  CHECK(peersOf(a, "refused") == std::set<std::string>{"10.250.0.2"});
  CHECK(a.refused_peers == 1);
  advance(std::chrono::seconds(601));
  c.onPacket("10.250.0.2", opened(), "k1k1k1k1");
  CHECK(checkEnforceIncoming(c, ctx()).ok);
  auto young = ctx();
  young.started = g_now - std::chrono::seconds(30);
  a = checkEnforceIncoming(c, young);
  CHECK_FALSE(a.ok);
  CHECK(peersOf(a, "census_young").size() == 1);
}

TEST_CASE("check remove-key: the primary, a peer still using it, then yes", "[check]") {
  PeerCensus c(kDefaultCensusCapacity, &fakeNow);
  c.onPacket("10.250.0.2", opened(), "oldoldol");
  auto a = checkRemoveKey(c, ctx(), "oldoldol", {"lan"});
  CHECK_FALSE(a.ok);
  CHECK(a.reasons.size() == 2);
  CHECK(peersOf(a, "key_in_use") == std::set<std::string>{"10.250.0.2"});
  CHECK(peersOf(a, "primary").size() == 1);
  a = checkRemoveKey(c, ctx(), "oldoldol", {});
  CHECK_FALSE(a.ok);
  advance(std::chrono::seconds(601));
  c.onPacket("10.250.0.2", opened(), "newnewne");
  CHECK(checkRemoveKey(c, ctx(), "oldoldol", {}).ok);
}

TEST_CASE("check remove-ca: peers per direction, the local certificate, an unknown CA, then yes",
          "[check][ca]") {
  using sidecrypt::filters::Direction;
  PeerCensus c(kDefaultCensusCapacity, &fakeNow);
  CaCheckSubject old_ca;
  old_ca.fingerprint[0] = 0xaa;
  old_ca.configured = true;
  old_ca.subject = "CN=Old CA";
  old_ca.local_dependents = {"cert_file /etc/agent.pem (CN=server.dc1.consul)"};
  CaFingerprint new_ca{};
  new_ca[0] = 0xbb;
  c.onAlive("peer-in", "10.250.0.2", 7946, 1);
  c.onPeerChain("10.250.0.2", Direction::Inbound, old_ca.fingerprint);
  c.onPeerChain("10.250.0.3", Direction::Outbound, old_ca.fingerprint);
  c.onPeerChain("10.250.0.4", Direction::Inbound, new_ca);
  auto a = checkRemoveCa(c, ctx(), old_ca);
  CHECK_FALSE(a.ok);
  CHECK(peersOf(a, "ca_in_use") == std::set<std::string>{"10.250.0.2", "10.250.0.3"});
  CHECK(peersOf(a, "local_certificate").size() == 1);
  CHECK(a.ca_peers == 2);
  CHECK(a.subject.find("CN=Old CA") != std::string::npos);
  for (const auto& r : a.reasons) {
    if (r.peer == "10.250.0.2") {
      CHECK(r.node == "peer-in");  // named, so the operator knows whom to reissue
      CHECK(r.why.find("client certificate") != std::string::npos);
    }
    if (r.peer == "10.250.0.3") {
      CHECK(r.why.find("server certificate") != std::string::npos);
    }
  }
  // The local certificate reissued from the new CA: only the peers hold it back.
  old_ca.local_dependents.clear();
  a = checkRemoveCa(c, ctx(), old_ca);
  CHECK_FALSE(a.ok);
  CHECK(a.reasons.size() == 2);
  // The peers move on to the new CA; once the window no longer holds the old chains: yes.
  advance(std::chrono::seconds(300));
  c.onPeerChain("10.250.0.2", Direction::Inbound, new_ca);
  c.onPeerChain("10.250.0.3", Direction::Outbound, new_ca);
  CHECK_FALSE(checkRemoveCa(c, ctx(), old_ca).ok);
  advance(std::chrono::seconds(301));
  CHECK(checkRemoveCa(c, ctx(), old_ca).ok);
  CHECK_FALSE(checkRemoveCa(c, ctx(std::chrono::seconds(900)), old_ca).ok);  // a longer window
  // A fingerprint no loaded CA has is not a yes (a typo would otherwise pass).
  CaCheckSubject typo;
  typo.fingerprint[0] = 0xcc;
  a = checkRemoveCa(c, ctx(), typo);
  CHECK_FALSE(a.ok);
  CHECK(peersOf(a, "unknown_ca").size() == 1);
  // The per-CA counts behind the metrics: bounded by the CAs asked about, never per peer.
  const auto counts =
      caUseCounts(c, g_now, std::chrono::seconds(600), {old_ca.fingerprint, new_ca});
  REQUIRE(counts.size() == 2);
  CHECK(counts[0].peers[0] == 0);
  CHECK(counts[0].peers[1] == 0);
  CHECK(counts[0].last[0] == g_now - std::chrono::seconds(601));
  CHECK(counts[1].peers[0] == 1);  // inbound: 10.250.0.2 (10.250.0.4 is older than the window)
  CHECK(counts[1].peers[1] == 1);
}

TEST_CASE("/peers shows each peer's CAs per direction and filters by CA", "[status_render][ca]") {
  using sidecrypt::filters::Direction;
  PeerCensus c(kDefaultCensusCapacity, &fakeNow);
  CaFingerprint old_ca{};
  old_ca[0] = 0xaa;
  CaFingerprint new_ca{};
  new_ca[0] = 0xbb;
  c.onPeerChain("10.250.0.2", Direction::Inbound, old_ca);
  c.onPeerChain("10.250.0.3", Direction::Outbound, new_ca);
  const json all = peersJson(c);
  REQUIRE(all.size() == 2);
  for (const auto& p : all) {
    const auto& cas = p["rpc"]["tls_cas"];
    REQUIRE(cas.size() == 1);
    CHECK(cas[0]["count"] == 1);
    if (p["address"] == "10.250.0.2") {
      CHECK(cas[0]["direction"] == "inbound");
      CHECK(cas[0]["fingerprint"] == "aa" + std::string(62, '0'));
    } else {
      CHECK(cas[0]["direction"] == "outbound");
    }
  }
  PeersQuery q;
  q.ca = "aa00";
  const json page = peersPageJson(c, q);
  REQUIRE(page["total"] == 1);
  CHECK(page["peers"][0]["address"] == "10.250.0.2");
  advance(std::chrono::seconds(601));  // only within the window
  CHECK(peersPageJson(c, q)["total"] == 0);
}

TEST_CASE("remove-ca from the TLS inventory: prefix, local certificate, per-CA series",
          "[check][ca][status_render]") {
  using sidecrypt::filters::Direction;
  namespace rt = sidecrypt::filters::rpc_tls;
  const std::string old_hex = "aa" + std::string(62, '0');
  const std::string new_hex = "bb" + std::string(62, '0');
  auto inventory = std::make_shared<rt::CertInventory>();
  rt::CertificateInfo leaf;
  leaf.role = rt::CertRole::Leaf;
  leaf.file = "/etc/consul/agent.pem";
  leaf.subject = "CN=server.dc1.consul";
  leaf.sha256 = "cc" + std::string(62, '0');
  leaf.chains_to = old_hex;
  inventory->add(leaf);
  for (const auto& [hex, cn] : {std::pair{old_hex, "CN=Old CA"}, std::pair{new_hex, "CN=New CA"}}) {
    rt::CertificateInfo ca;
    ca.role = rt::CertRole::Ca;
    ca.file = "/etc/consul/ca.pem";
    ca.subject = cn;
    ca.sha256 = hex;
    inventory->add(ca);
  }
  auto setup = std::make_shared<sidecrypt::filters::rpc_tls::RpcTlsSetup>();
  setup->certificates = inventory;
  RuntimeState state;
  state.rpc = setup;
  const auto cas = configuredCas(state);
  REQUIRE(cas.size() == 2);
  CHECK(cas[0].local_dependents ==
        std::vector<std::string>{"cert_file /etc/consul/agent.pem (CN=server.dc1.consul)"});
  CHECK(cas[1].local_dependents.empty());
  // A prefix is expanded to the configured CA; anything else is unknown.
  const auto subject = caCheckSubject(cas, "aa000000");
  CHECK(subject.configured);
  CHECK(subject.shown == old_hex);
  CHECK(subject.subject == "CN=Old CA");
  CHECK_FALSE(caCheckSubject(cas, "dd000000").configured);

  PeerCensus c(kDefaultCensusCapacity, &fakeNow);
  c.onPeerChain("10.250.0.2", Direction::Inbound, cas[1].fingerprint);
  auto a = checkRemoveCa(c, ctx(), subject);
  CHECK_FALSE(a.ok);
  CHECK(peersOf(a, "local_certificate").size() == 1);
  CHECK(peersOf(a, "ca_in_use").empty());

  StatusInput in(state);
  in.census = &c;
  in.started = g_now - std::chrono::hours(1);
  const std::string text = metricsText(in);
  CHECK(text.find("sidecrypt_check_ok{check=\"remove_ca\",fingerprint=\"" + old_hex + "\"} 0") !=
        std::string::npos);
  CHECK(text.find("sidecrypt_check_ok{check=\"remove_ca\",fingerprint=\"" + new_hex + "\"} 0") !=
        std::string::npos);
  CHECK(text.find("sidecrypt_tls_peer_ca_peers{direction=\"inbound\",ca_fingerprint=\"" + new_hex +
                  "\"} 1") != std::string::npos);
  CHECK(text.find("sidecrypt_tls_peer_ca_peers{direction=\"outbound\",ca_fingerprint=\"" + new_hex +
                  "\"} 0") != std::string::npos);
  CHECK(
      text.find("sidecrypt_tls_peer_ca_last_seen_seconds{direction=\"inbound\",ca_fingerprint=\"" +
                new_hex + "\",ca_subject=\"CN=New CA\"}") != std::string::npos);
  const json status = statusJson(in);
  CHECK(status["census"]["ca_peers"][new_hex]["inbound"] == 1);
}

TEST_CASE("a peer remembers its most recently used keys, at most four", "[census]") {
  PeerCensus c(kDefaultCensusCapacity, &fakeNow);
  for (const char* fp : {"aaaaaaaa", "bbbbbbbb", "cccccccc", "dddddddd", "eeeeeeee"}) {
    advance(std::chrono::seconds(1));
    c.onPacket("10.250.0.2", opened(), fp);
  }
  const PeerRecord* p = c.peer("10.250.0.2");
  REQUIRE(p != nullptr);
  CHECK(p->keys_used.size() == kMaxKeysPerPeer);
  CHECK(p->keyUse("aaaaaaaa") == nullptr);
  CHECK(p->keyUse("eeeeeeee") != nullptr);
  // Forgetting a key used within the window is a loss: remove-key of it cannot say yes.
  CHECK_FALSE(checkRemoveKey(c, ctx(), "aaaaaaaa", {}).ok);
}

namespace {

size_t seriesCount(const std::string& text) {
  size_t n = 0;
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = text.find('\n', start);
    if (text[start] != '#') {
      ++n;
    }
    start = end + 1;
  }
  return n;
}

}  // namespace

TEST_CASE("/metrics has the same series with 3 peers and with 10,000", "[status_render]") {
  RuntimeState state;
  auto metricsFor = [&state](int peers) {
    PeerCensus c(kDefaultCensusCapacity, &fakeNow);
    for (int i = 0; i < peers; ++i) {
      c.onAlive(name(i), ip(i), 7946, 1);
      c.onPacket(ip(i), i % 2 == 0 ? plaintext() : opened(), "k1k1k1k1");
    }
    StatusInput in(state);
    in.census = &c;
    in.started = g_now - std::chrono::hours(1);
    return metricsText(in);
  };
  const std::string small = metricsFor(3);
  const std::string large = metricsFor(10000);
  CHECK(seriesCount(small) == seriesCount(large));
  CHECK(large.find("sidecrypt_census_plaintext_peers 5000\n") != std::string::npos);
  CHECK(large.find("sidecrypt_census_silent_members 0\n") != std::string::npos);
  CHECK(large.find("sidecrypt_peer_plaintext_total") == std::string::npos);
  CHECK(large.find("sidecrypt_check_ok{check=\"enforce_incoming\"} 0\n") != std::string::npos);
  // Opt-in: the top K plaintext senders only.
  state.config.metrics.peer_series = 7;
  const std::string top = metricsFor(10000);
  CHECK(seriesCount(top) == seriesCount(large) + 2 * 7);
}

TEST_CASE("/peers filters and pages by address", "[status_render]") {
  PeerCensus c(kDefaultCensusCapacity, &fakeNow);
  for (int i = 0; i < 2500; ++i) {
    c.onAlive(name(i), ip(i), 7946, 1);
    if (i % 10 != 0) {
      c.onPacket(ip(i), i % 5 == 1 ? plaintext() : opened(), i % 5 == 1 ? "" : "k1k1k1k1");
    }
  }
  PeersQuery q;
  q.limit = 1000;
  std::set<std::string> seen;
  std::string last;
  for (int page = 0; page < 10; ++page) {
    const json j = peersPageJson(c, q);
    CHECK(j["total"] == 2250);
    for (const auto& p : j["peers"]) {
      const std::string a = p["address"];
      CHECK(a > last);  // sorted, no repeats across pages
      last = a;
      seen.insert(a);
    }
    if (j["next"].is_null()) {
      break;
    }
    q.after = j["next"];
  }
  CHECK(seen.size() == 2250);
  PeersQuery plain;
  plain.plaintext = true;
  CHECK(peersPageJson(c, plain)["total"] == 500);
  PeersQuery silent;
  silent.silent = true;
  const json s = peersPageJson(c, silent);
  CHECK(s["total"] == 250);
  CHECK(s["peers"][0]["silent"] == true);
  PeersQuery key;
  key.key = "k1k1k1k1";
  CHECK(peersPageJson(c, key)["total"] == 1750);
  PeersQuery top;
  top.plaintext = true;
  top.by_plaintext = true;
  top.limit = 3;
  CHECK(peersPageJson(c, top)["peers"].size() == 3);
}

TEST_CASE("query parameters are percent-decoded", "[admin]") {
  CHECK(queryParam("a=1&key=ab%2Fcd+e", "key") == "ab/cd e");
  CHECK(queryParam("a=1&silent", "silent") == "");
  CHECK_FALSE(queryParam("a=1", "b").has_value());
  CHECK(queryParam("x=%zz%4", "x") == "%zz%4");
}

TEST_CASE("/peers rendered one peer at a time is the same document", "[status_render]") {
  PeerCensus c(kDefaultCensusCapacity, &fakeNow);
  for (int i = 0; i < 50; ++i) {
    c.onAlive(name(i), ip(i), 7946, 1);
    c.onPacket(ip(i), i % 3 == 0 ? plaintext() : opened(), "k1k1k1k1");
  }
  CHECK(json::parse(peersText(c)) == peersJson(c));
  PeerCensus empty(kDefaultCensusCapacity, &fakeNow);
  CHECK(json::parse(peersText(empty)) == json::array());
}
