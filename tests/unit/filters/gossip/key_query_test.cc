// Serf key-manager queries: recognised in real captured traffic, and answered byte for byte as a
// real encrypting serf node answered them (captured/verified.json frames 28-56,
// docs/spec/gossip-wire.md §7.1).
#include <map>

#include "filters/gossip/key_query.h"
#include "filters/keyring/keyring_codec.h"
#include "gossip_test_util.h"

using namespace sidecrypt::filters::gossip;
using sidecrypt::filters::SecretBytes;
using sidecrypt::filters::keyring::AeadKey;
using sidecrypt::filters::keyring::KeySet;
using namespace sidecrypt::test::gossip;

namespace {

struct Captured {
  std::map<int, Bytes> plain;  // frame -> opened payload
  sidecrypt::filters::keyring::KeySetConstSharedPtr ring;
};

Captured openCaptured() {
  Captured c;
  auto captured = loadVectors("captured/captured.json");
  c.ring = ringFromHex(captured["keys_hex"]);
  for (const auto& u : captured["udp"]) {
    Bytes sealed = hex(u["payload_hex"]);
    Bytes out(sealed.size());
    auto r = openPayload(*c.ring, sealed, {}, out);
    REQUIRE(r.ok());
    out.resize(r.length);
    c.plain[u["frame"].get<int>()] = out;
  }
  return c;
}

// Every leaf user message of a packet, with its Serf message copied out.
struct Leaf {
  Bytes bytes;
  SerfMessage serf;  // views into `walked` storage of the caller: only scalars used after
  std::string name;
  Bytes payload;
  Bytes key;
  std::vector<std::string> keys;
  std::string primary;
  std::string message;
  bool result = false;
};

std::vector<Leaf> leaves(MessageWalker& w, const Bytes& packet) {
  struct V final : MessageVisitor {
    std::vector<Leaf> out;
    void onMessage(const Message& m) override {
      if (m.type != MsgType::User || !m.has_serf) {
        return;
      }
      Leaf l;
      l.bytes.assign(m.bytes.begin(), m.bytes.end());
      l.serf = m.serf;
      l.name = std::string(m.serf.name);
      l.payload.assign(m.serf.payload.begin(), m.serf.payload.end());
      l.key.assign(m.serf.key.begin(), m.serf.key.end());
      KeyList list(m.serf.keys);
      std::string_view k;
      while (list.next(k)) {
        l.keys.emplace_back(k);
      }
      l.primary = std::string(m.serf.primary_key);
      l.message = std::string(m.serf.message);
      l.result = m.serf.result;
      out.push_back(std::move(l));
    }
  } v;
  REQUIRE(w.walkPacket(packet, v).ok());
  return std::move(v.out);
}

sidecrypt::filters::keyring::KeySetConstSharedPtr ringOfBase64(
    const std::vector<std::string>& keys) {
  std::vector<std::unique_ptr<AeadKey>> out;
  for (const auto& k : keys) {
    auto raw = sidecrypt::filters::keyring::decodeKey(k);
    REQUIRE(std::holds_alternative<SecretBytes>(raw));
    out.push_back(AeadKey::create(std::move(std::get<SecretBytes>(raw))));
  }
  return std::make_shared<const KeySet>(std::move(out));
}

}  // namespace

TEST_CASE("key_query: query names", "[gossip][keyquery]") {
  CHECK(keyOpForQuery("_serf_install-key") == KeyOp::Install);
  CHECK(keyOpForQuery("_serf_use-key") == KeyOp::Use);
  CHECK(keyOpForQuery("_serf_remove-key") == KeyOp::Remove);
  CHECK(keyOpForQuery("_serf_list-keys") == KeyOp::List);
  CHECK_FALSE(keyOpForQuery("_serf_ping").has_value());
  CHECK_FALSE(keyOpForQuery("install-key").has_value());
  CHECK_FALSE(keyOpForQuery("_serf_install-key ").has_value());
  CHECK_FALSE(keyOpForQuery("").has_value());
}

TEST_CASE("key_query: every captured key query is recognised with its key",
          "[gossip][keyquery][captured]") {
  auto c = openCaptured();
  auto verified = loadVectors("captured/verified.json");
  MessageWalker w;
  int queries = 0;
  for (const auto& u : verified["udp"]) {
    const int frame = u["frame"].get<int>();
    CAPTURE(frame);
    size_t i = 0;
    for (const auto& leaf : leaves(w, c.plain[frame])) {
      const auto& expect = u["serf_messages"][i++];
      if (expect["serf_type"] != 4) {
        continue;
      }
      const auto q = keyQueryFrom(leaf.serf);
      const std::string name = expect["body"]["Name"];
      REQUIRE(q.has_value());
      CHECK(std::string("_serf_") + keyOpName(q->op) == name);
      CHECK(q->ltime == expect["body"]["LTime"].get<uint64_t>());
      CHECK(q->id == expect["body"]["ID"].get<uint32_t>());
      CHECK(q->port == expect["body"]["Port"].get<uint16_t>());
      CHECK(q->timeout_ns == expect["body"]["Timeout"].get<int64_t>());
      CHECK("hex:" + toHexString(q->address()) == expect["body"]["Addr"].get<std::string>());
      CHECK(q->payload_ok);
      const std::string key = expect["payload_decoded"]["body"]["Key"];
      CHECK(std::string(q->key.span().begin(), q->key.span().end()) == key);
      ++queries;
    }
  }
  CHECK(queries > 20);
}

TEST_CASE("key_query: answers are byte-identical to a real serf node's",
          "[gossip][keyquery][captured]") {
  auto c = openCaptured();
  MessageWalker w;
  // Frames 29 and 32 answer list-keys and install-key under K1, 36 answers use-key (sealed with
  // the new primary K2), 49 answers list-keys with both keys (compressed on the wire).
  int answered = 0;
  for (int frame : {29, 32, 36, 49}) {
    CAPTURE(frame);
    const auto r = agentQueryResponse(w, c.plain[frame]);
    REQUIRE(r.has_value());
    CHECK_FALSE(r->relayed());
    auto ls = leaves(w, c.plain[frame]);
    REQUIRE(ls.size() == 1);
    const Leaf& l = ls[0];
    CHECK(r->from() == std::string_view(l.serf.from.data(), 2));
    // The keyResponse inside says which operation it answered and what it reported.
    const bool listed = !l.keys.empty();
    const KeyOp op = listed ? KeyOp::List : (frame == 36 ? KeyOp::Use : KeyOp::Install);
    auto ring = listed ? ringOfBase64(l.keys) : nullptr;
    if (listed) {
      CHECK(l.primary == l.keys.front());
    }
    KeyResult result{l.result, l.message, ring.get()};
    std::array<uint8_t, 2048> out{};
    const size_t n = encodeKeyResponsePacket(*r, op, result, out);
    REQUIRE(n != 0);
    CHECK(toHexString({out.data(), n}) == toHexString(l.bytes));
    ++answered;
  }
  CHECK(answered == 4);
}

TEST_CASE("key_query: relay copies keep the relay header", "[gossip][keyquery]") {
  // [8][9 relayHeader{DestAddr{IP,Port,Zone},DestName}][5 queryResponse]
  std::array<uint8_t, 512> base{};
  KeyResult failing{false, "No keyring to modify (encryption not enabled)", nullptr};
  const size_t resp = encodeKeyQueryResponse(7, 99, "n3", 0, KeyOp::Install, failing, base);
  REQUIRE(resp != 0);
  Bytes relay = {8, 9};
  const Bytes header = sidecrypt::test::fromHex(
      "82a8446573744164647283a24950a40afa0001a4506f7274cd1f0aa45a6f6e65a0a8446573744e61"
      "6d65a26e31");
  relay.insert(relay.end(), header.begin() + 0, header.end());
  relay.insert(relay.end(), base.begin(), base.begin() + resp);
  MessageWalker w;
  auto r = agentQueryResponse(w, relay);
  REQUIRE(r.has_value());
  CHECK(r->relayed());
  CHECK(r->ltime == 7);
  CHECK(r->id == 99);
  CHECK(r->from() == "n3");
  KeyResult ok{true, "", nullptr};
  std::array<uint8_t, 1024> out{};
  const size_t n = encodeKeyResponsePacket(*r, KeyOp::Install, ok, out);
  REQUIRE(n != 0);
  // Same header, then the successful answer.
  CHECK(toHexString({out.data(), 2 + header.size()}) ==
        toHexString({relay.data(), 2 + header.size()}));
  std::array<uint8_t, 512> expect{};
  const size_t e = encodeKeyQueryResponse(7, 99, "n3", 0, KeyOp::Install, ok, expect);
  CHECK(toHexString({out.data() + 2 + header.size(), n - 2 - header.size()}) ==
        toHexString({expect.data(), e}));
}

TEST_CASE("key_query: list responses are truncated like serf's", "[gossip][keyquery]") {
  std::vector<std::unique_ptr<AeadKey>> keys;
  for (int i = 0; i < 60; ++i) {
    SecretBytes raw(32);
    raw.data()[0] = static_cast<uint8_t>(i);
    keys.push_back(AeadKey::create(std::move(raw)));
  }
  KeySet ring(std::move(keys));
  KeyResult ok{true, "", &ring};
  std::array<uint8_t, 4096> out{};
  const size_t n = encodeKeyQueryResponse(1, 2, "node-a", 0, KeyOp::List, ok, out);
  REQUIRE(n != 0);
  CHECK(n <= kQueryResponseSizeLimit);
  MessageWalker w;
  Bytes packet = {8};
  packet.insert(packet.end(), out.begin(), out.begin() + n);
  auto ls = leaves(w, packet);
  REQUIRE(ls.size() == 1);
  const size_t shown = ls[0].keys.size();
  CHECK(shown < 60);
  CHECK(shown > 10);
  CHECK(ls[0].message ==
        "truncated key list response, showing first " + std::to_string(shown) + " of 60 keys");
  CHECK(ls[0].result);
  // One more key would not have fitted.
  std::vector<std::unique_ptr<AeadKey>> more;
  for (size_t i = 0; i <= shown; ++i) {
    more.push_back(AeadKey::create(SecretBytes::copyOf(ring.at(i).raw().span())));
  }
  KeySet bigger(std::move(more));
  KeyResult again{true, ls[0].message, &bigger};
  std::array<uint8_t, 4096> out2{};
  const size_t too_big =
      encodeKeyQueryResponse(1, 2, "node-a", 0, KeyOp::List, again, out2, 100000);
  CHECK(too_big > kQueryResponseSizeLimit);
}

TEST_CASE("key_query: other packets are not agent responses", "[gossip][keyquery]") {
  auto c = openCaptured();
  MessageWalker w;
  // Queries, compound gossip and pings are never rewritten.
  for (int frame : {28, 30, 34, 41}) {
    CHECK_FALSE(agentQueryResponse(w, c.plain[frame]).has_value());
  }
  CHECK_FALSE(agentQueryResponse(w, Bytes{}).has_value());
  CHECK_FALSE(agentQueryResponse(w, Bytes{8}).has_value());
  CHECK_FALSE(agentQueryResponse(w, Bytes{8, 5, 0xc1}).has_value());
  CHECK_FALSE(agentQueryResponse(w, Bytes{8, 9, 0x80}).has_value());
}

TEST_CASE("key_query: a malformed key request is reported, not guessed", "[gossip][keyquery]") {
  SerfMessage m;
  m.type = static_cast<int>(SerfType::Query);
  m.decoded = true;
  m.name = "_serf_install-key";
  const Bytes bad = {7, 0x81, 0xa3, 'K', 'e'};
  m.payload = bad;
  auto q = keyQueryFrom(m);
  REQUIRE(q.has_value());
  CHECK_FALSE(q->payload_ok);
  CHECK(q->key.size() == 0);
  const Bytes notkey = {3, 0x80};
  m.payload = notkey;
  CHECK_FALSE(keyQueryFrom(m)->payload_ok);
  m.name = "_serf_conflict";
  CHECK_FALSE(keyQueryFrom(m).has_value());
}
