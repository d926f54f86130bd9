// GossipObserver with real captured Serf traffic: a key query from a peer is applied once (and
// persisted through the commit hook before it counts), the agent's failing answer is rewritten
// into the encrypting agent's answer, a refused persist is answered false, the agent's answer to
// its own query waits for the query, and a query in a stream message counts too.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fstream>
#include <map>
#include <optional>

#include "../../test_util.h"
#include "filters/gossip/gossip_codec.h"
#include "filters/gossip/key_query.h"
#include "filters/keyring/aead_key.h"
#include "filters/keyring/keyring_codec.h"
#include "proxy/datapath/gossip_observer.h"
#include "tests/common/gossip_messages.h"

using namespace sidecrypt;
using namespace sidecrypt::proxy;
namespace fg = sidecrypt::filters::gossip;
using Bytes = std::vector<uint8_t>;

namespace {

nlohmann::json load(const std::string& name) {
  std::ifstream in(test::vectorsDir() / name);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

filters::keyring::KeySetConstSharedPtr ringOf(const std::vector<Bytes>& keys) {
  std::vector<std::unique_ptr<filters::keyring::AeadKey>> v;
  for (const auto& k : keys) {
    v.push_back(filters::keyring::AeadKey::create(filters::SecretBytes::copyOf(k)));
  }
  return std::make_shared<const filters::keyring::KeySet>(std::move(v));
}

struct Captured {
  std::vector<Bytes> keys;  // K1, K2
  std::map<int, Bytes> plain;
};

Captured captured() {
  Captured c;
  auto doc = load("captured/captured.json");
  for (const auto& k : doc["keys_hex"]) {
    c.keys.push_back(test::fromHex(k.get<std::string>()));
  }
  auto ring = ringOf(c.keys);
  for (const auto& u : doc["udp"]) {
    Bytes sealed = test::fromHex(u["payload_hex"].get<std::string>());
    Bytes out(sealed.size());
    auto r = fg::openPayload(*ring, sealed, {}, out);
    REQUIRE(r.ok());
    out.resize(r.length);
    c.plain[u["frame"].get<int>()] = out;
  }
  return c;
}

// The agent's own (failing) answer to query (ltime, id), as a plaintext serf agent sends it.
Bytes agentAnswer(uint64_t ltime, uint32_t id, const char* from) {
  std::array<uint8_t, 512> buf{};
  const fg::KeyResult failing{false, "No keyring to modify (encryption not enabled)", nullptr};
  const size_t n = fg::encodeKeyQueryResponse(ltime, id, from, 0, fg::KeyOp::Install, failing, buf);
  REQUIRE(n != 0);
  Bytes out(n + 1, 8);
  std::copy_n(buf.begin(), n, out.begin() + 1);
  return out;
}

struct Slot {
  explicit Slot(const Bytes& b) : mem(70000) {
    std::copy(b.begin(), b.end(), mem.begin() + 512);
    d = fg::Datagram::inSlot(mem, 512, b.size());
  }
  Bytes bytes() const { return Bytes(d.data().begin(), d.data().end()); }
  Bytes mem;
  fg::Datagram d;
};

struct Harness {
  PeerCensus census;
  filters::keyring::KeySetConstSharedPtr keys;
  std::optional<std::string> fail_commit;
  int commits = 0;
  GossipObserver obs{census, [this](GossipPool) { return keys; }};
  // defer: the write "runs" until finishCommit() (as the server's worker thread does).
  bool defer = false;
  std::vector<std::pair<filters::keyring::KeySetConstSharedPtr, GossipObserver::CommitDone>>
      waiting;
  Harness() {
    obs.setKeyringCommit([this](GossipPool, filters::keyring::KeySetConstSharedPtr next,
                                GossipObserver::CommitDone done) {
      if (defer) {
        waiting.emplace_back(std::move(next), std::move(done));
        return;
      }
      complete(std::move(next), done);
    });
  }
  void complete(filters::keyring::KeySetConstSharedPtr next,
                const GossipObserver::CommitDone& done) {
    if (fail_commit) {
      done(fail_commit);
      return;
    }
    ++commits;
    keys = std::move(next);
    done(std::nullopt);
  }
  void finishCommit() {
    REQUIRE_FALSE(waiting.empty());
    auto [next, done] = std::move(waiting.front());
    waiting.erase(waiting.begin());
    complete(std::move(next), done);
  }
};

// The (LTime, ID) of the named query in a captured plaintext packet.
std::pair<uint64_t, uint32_t> queryId(const Bytes& packet, std::string_view name) {
  fg::MessageWalker w;
  struct V final : fg::MessageVisitor {
    std::string_view want;
    std::pair<uint64_t, uint32_t> id{0, 0};
    void onMessage(const fg::Message& m) override {
      if (m.has_serf && m.serf.type == 4 && m.serf.name == want) {
        id = {m.serf.ltime, m.serf.id};
      }
    }
  } v;
  v.want = name;
  w.walkPacket(packet, v);
  return v.id;
}

// What the rewritten answer says.
struct Said {
  bool found = false;
  bool result = false;
  std::string message;
  std::string from;
  uint64_t ltime = 0;
};
Said said(const Bytes& packet) {
  struct V final : fg::MessageVisitor {
    Said s;
    void onMessage(const fg::Message& m) override {
      if (m.has_serf && m.serf.key_type == static_cast<int>(fg::SerfType::KeyResponse)) {
        s.found = true;
        s.result = m.serf.result;
        s.message = std::string(m.serf.message);
        s.from = std::string(m.serf.from);
        s.ltime = m.serf.ltime;
      }
    }
  } v;
  fg::MessageWalker w;
  w.walkPacket(packet, v);
  return v.s;
}

const SocketAddress kPeer = SocketAddress::parse("10.250.0.1:7946");
const SocketAddress kAgent = SocketAddress::parse("10.250.0.2:7946");

}  // namespace

TEST_CASE("gossip_observer: a peer's install-key is applied once and answered for the agent",
          "[observer]") {
  auto c = captured();
  Harness h;
  h.keys = ringOf({c.keys[0]});
  // Frame 30 carries _serf_install-key (K2) and _serf_list-keys from n1, compressed.
  h.obs.inbound(GossipPool::Lan, kPeer, c.plain[30]);
  REQUIRE(h.commits == 1);
  CHECK(h.keys->size() == 2);
  CHECK(h.keys->fingerprint(0) == filters::keyring::fingerprintOf(c.keys[0]));
  CHECK(h.keys->fingerprint(1) == filters::keyring::fingerprintOf(c.keys[1]));
  // Re-broadcasts (frame 33 repeats both queries) change nothing.
  h.obs.inbound(GossipPool::Lan, kPeer, c.plain[33]);
  CHECK(h.commits == 1);
  CHECK(h.obs.stats().queries == 2);
  CHECK(h.obs.stats().applied == 1);

  // The agent answers the install query (LTime 2 in the capture) with a failure: rewritten.
  auto ids = [&] {
    fg::MessageWalker w;
    struct V final : fg::MessageVisitor {
      std::vector<std::pair<uint64_t, uint32_t>> q;
      void onMessage(const fg::Message& m) override {
        if (m.has_serf && m.serf.type == 4) {
          q.emplace_back(m.serf.ltime, m.serf.id);
        }
      }
    } v;
    w.walkPacket(c.plain[30], v);
    return v.q;
  }();
  REQUIRE(ids.size() == 2);
  Slot out(agentAnswer(ids[0].first, ids[0].second, "n2"));
  CHECK(h.obs.outbound(GossipPool::Lan, kAgent, kPeer, out.d));
  const Said s = said(out.bytes());
  REQUIRE(s.found);
  CHECK(s.result);
  CHECK(s.message.empty());
  CHECK(s.from == "n2");
  CHECK(s.ltime == ids[0].first);
  CHECK(h.obs.stats().answers_rewritten == 1);

  // An answer to a query we never saw is left alone.
  Slot other(agentAnswer(99, 12345, "n2"));
  const Bytes before = other.bytes();
  CHECK(h.obs.outbound(GossipPool::Lan, kAgent, kPeer, other.d));
  CHECK(other.bytes() == before);
  CHECK(h.obs.stats().answers_unmatched == 1);
}

TEST_CASE("gossip_observer: without Serf (alertmanager profile) key queries are left alone",
          "[observer]") {
  auto c = captured();
  Harness h;
  h.keys = ringOf({c.keys[0]});
  h.obs.setSerfKeyQueries(false);
  // The same install-key query that the Serf profiles apply (test above) changes nothing.
  h.obs.inbound(GossipPool::Lan, kPeer, c.plain[30]);
  CHECK(h.commits == 0);
  CHECK(h.keys->size() == 1);
  CHECK(h.obs.stats().queries == 0);
  // The agent's own user messages leave exactly as written.
  Slot out(agentAnswer(2, 1, "n2"));
  const Bytes before = out.bytes();
  CHECK(h.obs.outbound(GossipPool::Lan, kAgent, kPeer, out.d));
  CHECK(out.bytes() == before);
  CHECK(h.obs.stats().answers_unmatched == 0);
}

TEST_CASE("gossip_observer: a change that cannot be persisted is answered false, ring kept",
          "[observer]") {
  auto c = captured();
  Harness h;
  h.keys = ringOf({c.keys[0]});
  h.fail_commit = "disk full";
  h.obs.inbound(GossipPool::Lan, kPeer, c.plain[30]);
  CHECK(h.keys->size() == 1);
  CHECK(h.obs.stats().persist_failed == 1);
  fg::MessageWalker w;
  struct V final : fg::MessageVisitor {
    uint64_t ltime = 0;
    uint32_t id = 0;
    void onMessage(const fg::Message& m) override {
      if (m.has_serf && m.serf.type == 4 && m.serf.name == "_serf_install-key") {
        ltime = m.serf.ltime;
        id = m.serf.id;
      }
    }
  } v;
  w.walkPacket(c.plain[30], v);
  Slot out(agentAnswer(v.ltime, v.id, "n2"));
  h.obs.outbound(GossipPool::Lan, kAgent, kPeer, out.d);
  const Said s = said(out.bytes());
  REQUIRE(s.found);
  CHECK_FALSE(s.result);
  CHECK(s.message.find("disk full") != std::string::npos);
}

TEST_CASE("gossip_observer: the agent's answer to its own query waits for the query",
          "[observer]") {
  auto c = captured();
  Harness h;
  h.keys = ringOf({c.keys[0]});
  std::vector<Bytes> delivered;
  h.obs.setSelfSend([&](const SocketAddress&, const SocketAddress&, std::span<const uint8_t> b) {
    delivered.emplace_back(b.begin(), b.end());
  });
  // Frame 28: n1 (here: our agent) sends _serf_list-keys. Its self-answer comes first.
  fg::MessageWalker w;
  struct V final : fg::MessageVisitor {
    uint64_t ltime = 0;
    uint32_t id = 0;
    void onMessage(const fg::Message& m) override {
      if (m.has_serf && m.serf.type == 4) {
        ltime = m.serf.ltime;
        id = m.serf.id;
      }
    }
  } v;
  w.walkPacket(c.plain[28], v);
  Slot self(agentAnswer(v.ltime, v.id, "n1"));
  CHECK_FALSE(h.obs.outbound(GossipPool::Lan, kAgent, kAgent, self.d));  // held
  CHECK(delivered.empty());
  Slot query(c.plain[28]);
  CHECK(h.obs.outbound(GossipPool::Lan, kAgent, kPeer, query.d));  // the query goes out
  REQUIRE(delivered.size() == 1);
  const Said s = said(delivered[0]);
  REQUIRE(s.found);
  CHECK(s.result);
  CHECK(s.from == "n1");
}

TEST_CASE("gossip_observer: a key query in a stream message is applied too", "[observer]") {
  auto c = captured();
  Harness h;
  h.keys = ringOf({c.keys[0]});
  // Frame 41 is a single hasCrc-wrapped user message carrying _serf_use-key.
  struct V final : fg::MessageVisitor {
    Bytes user;
    void onMessage(const fg::Message& m) override {
      if (m.type == fg::MsgType::User) {
        user.assign(m.bytes.begin(), m.bytes.end());
      }
    }
  } v;
  fg::MessageWalker w;
  w.walkPacket(c.plain[41], v);
  REQUIRE_FALSE(v.user.empty());
  // The stream form of a user message: [8][msgpack {UserMsgLen: n}][n bytes] (memberlist
  // sendUserMsg), here carrying the Serf query of the packet's user message.
  const Bytes serf(v.user.begin() + 1, v.user.end());
  REQUIRE(serf.size() < 0x10000);
  const Bytes stream = sidecrypt::test::streamUserMessage(serf);
  // use-key K2 needs K2 installed first: refused (Consul's rule), nothing persisted.
  h.obs.stream(GossipPool::Lan, kPeer, false, stream);
  CHECK(h.obs.stats().queries == 1);
  CHECK(h.obs.stats().refused == 1);
  CHECK(h.commits == 0);
}

TEST_CASE("gossip_observer: membership and names from gossip", "[observer]") {
  auto c = captured();
  auto doc = load("captured/captured.json");
  Harness h;
  h.keys = ringOf({c.keys[0]});
  // Replay the capture as node n1 (10.250.0.1) would see it behind sidecrypt: its own packets
  // outbound, n2's inbound.
  for (const auto& u : doc["udp"]) {
    const int frame = u["frame"].get<int>();
    const auto src = SocketAddress::parse(u["src"].get<std::string>());
    const auto dst = SocketAddress::parse(u["dst"].get<std::string>());
    if (u["src"].get<std::string>().rfind("10.250.0.1:", 0) == 0) {
      Slot s(c.plain[frame]);
      h.obs.outbound(GossipPool::Lan, src, dst, s.d);
    } else {
      h.obs.inbound(GossipPool::Lan, src, c.plain[frame]);
    }
  }
  const auto& members = h.census.members();
  REQUIRE(members.count("n1") == 1);
  REQUIRE(members.count("n2") == 1);
  CHECK(members.at("n2").address == "10.250.0.2");
  CHECK(members.at("n2").state == "alive");
  CHECK(h.census.selfNode() == "n1");
  CHECK(h.census.selfAddress() == "10.250.0.1");
}

TEST_CASE("gossip_observer: the agent's answer waits for the keyring write, then leaves sealed",
          "[observer]") {
  auto c = captured();
  for (const bool fails : {false, true}) {
    Harness h;
    h.keys = ringOf({c.keys[0]});
    h.defer = true;
    if (fails) {
      h.fail_commit = "disk full";
    }
    std::vector<Bytes> sealed;
    std::vector<Bytes> local;
    h.obs.setSealedSend([&](GossipPool, const SocketAddress& agent, const SocketAddress& dst,
                            std::span<const uint8_t> b) {
      CHECK(agent == kAgent);
      CHECK(dst == kPeer);
      sealed.emplace_back(b.begin(), b.end());
    });
    h.obs.setSelfSend([&](const SocketAddress&, const SocketAddress&, std::span<const uint8_t> b) {
      local.emplace_back(b.begin(), b.end());
    });
    h.obs.inbound(GossipPool::Lan, kPeer, c.plain[30]);
    REQUIRE(h.waiting.size() == 1);  // the write is running
    const auto [ltime, id] = queryId(c.plain[30], "_serf_install-key");
    Slot out(agentAnswer(ltime, id, "n2"));
    // Not known yet: the agent's answer is held, nothing goes out.
    CHECK_FALSE(h.obs.outbound(GossipPool::Lan, kAgent, kPeer, out.d));
    CHECK(h.obs.stats().answers_held_for_commit == 1);
    CHECK(sealed.empty());
    h.finishCommit();
    // Released through the sealing path (never the local plaintext one), with the outcome.
    CHECK(local.empty());
    REQUIRE(sealed.size() == 1);
    const Said s = said(sealed[0]);
    REQUIRE(s.found);
    CHECK(s.result == !fails);
    CHECK(s.from == "n2");
    CHECK(h.keys->size() == (fails ? 1 : 2));
    CHECK(h.obs.stats().applied == (fails ? 0 : 1));
    CHECK(h.obs.stats().persist_failed == (fails ? 1 : 0));
  }
}

TEST_CASE("key-query counters are named once, as the outcome labels of /metrics", "[keyquery]") {
  // Dashboards and alert rules (monitoring/) select these label values; /status uses the same.
  KeyQueryStats k;
  k.queries = 1;
  k.answers_rewritten = 2;
  k.answers_held_for_commit = 3;
  std::vector<std::string> names;
  std::map<std::string, uint64_t> values;
  k.forEach([&](const char* name, uint64_t v) {
    names.emplace_back(name);
    values[name] = v;
  });
  CHECK(names == std::vector<std::string>{"seen", "applied", "unchanged", "refused",
                                          "persist_failed", "answer_rewritten", "answer_unmatched",
                                          "answer_too_large", "self_answer_held",
                                          "self_answer_expired", "answer_held_for_commit"});
  CHECK(values["seen"] == 1);
  CHECK(values["answer_rewritten"] == 2);
  CHECK(values["answer_held_for_commit"] == 3);
}
