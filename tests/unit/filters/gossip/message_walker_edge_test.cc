// The message walker on crafted and hostile input: the 0.2.2 crash shapes, caps, Serf messages
// the capture lacks (relay, userEvent, stream user messages) and random garbage.
#include <catch2/catch.hpp>

#include <map>
#include <random>
#include <string>

#include "filters/gossip/message_summary.h"
#include "filters/gossip/message_walker.h"
#include "walker_test_util.h"

using namespace sidecrypt::filters::gossip;
using namespace sidecrypt::test::gossip;
using nlohmann::json;
using sidecrypt::test::fromHex;

namespace {

// Just enough msgpack writing for the tests (legacy raw family, like go-msgpack 0.5.5).
class Mp {
 public:
  Mp& map(size_t n) { return byte(static_cast<uint8_t>(0x80 | n)); }
  Mp& str(const std::string& s) {
    if (s.size() < 32) {
      byte(static_cast<uint8_t>(0xa0 | s.size()));
    } else {
      byte(0xda).byte(static_cast<uint8_t>(s.size() >> 8)).byte(static_cast<uint8_t>(s.size()));
    }
    out.insert(out.end(), s.begin(), s.end());
    return *this;
  }
  Mp& bytes(const Bytes& b) {
    byte(static_cast<uint8_t>(0xa0 | b.size()));
    out.insert(out.end(), b.begin(), b.end());
    return *this;
  }
  Mp& uint(uint32_t v) {
    if (v < 128) {
      return byte(static_cast<uint8_t>(v));
    }
    byte(0xce);
    for (int s = 24; s >= 0; s -= 8) {
      byte(static_cast<uint8_t>(v >> s));
    }
    return *this;
  }
  Mp& byte(uint8_t b) {
    out.push_back(b);
    return *this;
  }
  Mp& raw(const Bytes& b) {
    out.insert(out.end(), b.begin(), b.end());
    return *this;
  }
  Bytes out;
};

struct Walked {
  WalkResult result;
  std::string summary;
  Recorder rec;
};

Walked packet(const Bytes& bytes, WalkLimits limits = {}) {
  MessageWalker walker(limits);
  Walked w;
  MessageSummary summary;
  Tee tee(summary, w.rec);
  w.result = walker.walkPacket(bytes, tee);
  w.summary = summary.text();
  return w;
}

Walked stream(const Bytes& bytes) {
  MessageWalker walker;
  Walked w;
  MessageSummary summary;
  Tee tee(summary, w.rec);
  w.result = walker.walkStream(bytes, tee);
  w.summary = summary.text();
  return w;
}

}  // namespace

TEST_CASE("message_walker: CRC-32/IEEE and IP text", "[gossip][walker]") {
  const std::string check = "123456789";
  CHECK(crc32Ieee(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(check.data()),
                                           check.size())) == 0xcbf43926u);
  CHECK(crc32Ieee({}) == 0);
  CHECK(ipText(Bytes{10, 250, 0, 1}).view() == "10.250.0.1");
  auto v6 = [](std::initializer_list<uint16_t> groups) {
    Bytes b;
    for (uint16_t g : groups) {
      b.push_back(static_cast<uint8_t>(g >> 8));
      b.push_back(static_cast<uint8_t>(g));
    }
    return std::string(ipText(b).view());
  };
  CHECK(v6({0xfd00, 0x250, 0, 0, 0, 0, 0, 1}) == "fd00:250::1");
  CHECK(v6({0, 0, 0, 0, 0, 0, 0, 1}) == "::1");
  CHECK(v6({0, 0, 0, 0, 0, 0, 0, 0}) == "::");
  CHECK(v6({0, 0, 0, 0, 0, 0xffff, 0x0afa, 0x0001}) == "::ffff:10.250.0.1");
  CHECK(v6({0x2001, 0xdb8, 0, 0, 1, 0, 0, 1}) == "2001:db8::1:0:0:1");
  CHECK(v6({1, 0, 0, 2, 0, 0, 0, 3}) == "1:0:0:2::3");
  CHECK(v6({1, 2, 3, 4, 5, 6, 7, 0}) == "1:2:3:4:5:6:7:0");
  CHECK(v6({0xfd00, 0, 0, 0, 0, 0, 0, 0}) == "fd00::");
  CHECK(ipText(Bytes{1, 2, 3}).view() == "hex:010203");
  CHECK(ipText({}).view() == "-");
}

TEST_CASE("message_walker: every 0.2.2 parser crash shape is reported, none crashes",
          "[gossip][walker][vectors]") {
  const json doc = loadVectors("negatives.json");
  const std::map<std::string, std::pair<WalkError, std::string>> want = {
      {"hasCrc-of-nothing", {WalkError::Empty, "hasCrc > empty{ERROR empty message}"}},
      {"hasCrc-bad-crc", {WalkError::BadCrc, "hasCrc{ERROR invalid checksum}"}},
      {"compound-empty-part",
       {WalkError::CompoundEmptyPart, "compound{ERROR compound: empty part}"}},
      {"compound-count-200-short", {WalkError::CompoundTable, ""}},
      {"compound-truncated-part", {WalkError::CompoundTruncated, ""}},
      {"compress-to-empty", {WalkError::DecompressedEmpty, ""}},
      {"unknown-type-200",
       {WalkError::UnsupportedType, "unknown{ERROR message type not supported here}"}},
      {"label-header-on-0.2.2", {WalkError::UnsupportedType, ""}},
  };
  for (const auto& v : doc["parser_vectors"]) {
    const std::string name = v["name"];
    INFO(name);
    const Walked w = packet(hex(v["input_hex"]));
    CHECK_FALSE(w.result.ok());
    REQUIRE(want.count(name) == 1);
    CHECK(w.result.first_error == want.at(name).first);
    if (!want.at(name).second.empty()) {
      CHECK(w.summary == want.at(name).second);
    }
  }
}

TEST_CASE("message_walker: nesting, message count and decompression are capped",
          "[gossip][walker]") {
  // 200 compounds nested in each other, innermost a ping.
  Bytes msg = Mp().byte(0).map(0).out;
  for (int i = 0; i < 200; ++i) {
    Bytes outer = {7, 1, static_cast<uint8_t>(msg.size() >> 8), static_cast<uint8_t>(msg.size())};
    outer.insert(outer.end(), msg.begin(), msg.end());
    msg = outer;
  }
  Walked deep = packet(msg);
  CHECK(deep.result.first_error == WalkError::TooDeep);
  CHECK(deep.result.messages == 0);

  const json doc = loadVectors("packets.json");
  Bytes eight;
  for (const auto& v : doc["vectors"]) {
    if (v["name"] == "gossip-plain-compound-8-alive-compressed-crc") {
      eight = hex(v["sealed_hex"]);
    }
  }
  REQUIRE(!eight.empty());
  CHECK(packet(eight).result.messages == 8);
  WalkLimits few;
  few.max_messages = 3;
  Walked capped = packet(eight, few);
  CHECK(capped.result.messages == 3);
  CHECK(capped.result.first_error == WalkError::TooManyMessages);
  CHECK(capped.result.errors == 1);
  WalkLimits small;
  small.max_decompressed = 100;
  CHECK(packet(eight, small).result.first_error == WalkError::DecompressedTooLarge);
  // A flipped CRC byte is caught and nothing inside is reported.
  eight[2] ^= 1;
  Walked bad = packet(eight);
  CHECK(bad.result.first_error == WalkError::BadCrc);
  CHECK(bad.rec.messages.empty());
}

TEST_CASE("message_walker: Serf relay, userEvent and stream user messages", "[gossip][walker]") {
  const Bytes response = Mp().byte(5)
                             .map(4)
                             .str("LTime")
                             .uint(3)
                             .str("ID")
                             .uint(7)
                             .str("From")
                             .str("n2")
                             .str("Flags")
                             .uint(0)
                             .out;
  const Bytes relay = Mp().byte(8)
                          .byte(9)
                          .map(2)
                          .str("DestAddr")
                          .map(3)
                          .str("IP")
                          .bytes({10, 250, 0, 1})
                          .str("Port")
                          .uint(7946)
                          .str("Zone")
                          .str("")
                          .str("DestName")
                          .str("n1")
                          .raw(response)
                          .out;
  Walked r = packet(relay);
  CHECK(r.result.ok());
  CHECK(r.summary == "user(serf relay)");
  REQUIRE(r.rec.messages.size() == 1);
  const SeenSerf& s = r.rec.messages[0].serf;
  CHECK(s.type == static_cast<int>(SerfType::Relay));
  CHECK(s.relayed_type == static_cast<int>(SerfType::QueryResponse));
  CHECK(s.relay_dest_name == "n1");
  CHECK(s.from == "n2");
  CHECK(s.id == 7);

  const Bytes event = Mp().byte(3)
                          .map(4)
                          .str("LTime")
                          .uint(5)
                          .str("Name")
                          .str("deploy")
                          .str("Payload")
                          .bytes({1, 2})
                          .str("CC")
                          .byte(0xc2)
                          .out;
  const Bytes user =
      Mp().byte(8).map(1).str("UserMsgLen").uint(uint32_t(event.size())).raw(event).out;
  Walked u = stream(user);
  CHECK(u.result.ok());
  CHECK(u.summary == "user(serf userEvent deploy)");
  CHECK(u.rec.messages[0].serf.ltime == 5);

  // Opaque (non-Serf) user data is not an error; a short one is.
  CHECK(stream(Mp().byte(8).map(1).str("UserMsgLen").uint(3).raw({'a', 'b', 'c'}).out).summary ==
        "user");
  Walked short_user = stream(Mp().byte(8).map(1).str("UserMsgLen").uint(9).raw({1}).out);
  CHECK(short_user.result.first_error == WalkError::TruncatedData);
}

TEST_CASE("message_walker: push/pull headers, HEAD's signed ints and hostile counts",
          "[gossip][walker]") {
  // HEAD writes ints > 127 as d1 (docs/spec/gossip-wire.md §2): UserStateLen 300 with two 0-byte
  // fields.
  Bytes pp = Mp().byte(6)
                 .map(3)
                 .str("Join")
                 .byte(0xc3)
                 .str("Nodes")
                 .uint(1)
                 .str("UserStateLen")
                 .byte(0xd1)
                 .byte(0x01)
                 .byte(0x2c)
                 .map(2)
                 .str("Name")
                 .str("n9")
                 .str("State")
                 .uint(3)
                 .out;
  pp.resize(pp.size() + 300, 0xaa);
  Walked ok = stream(pp);
  CHECK(ok.result.ok());
  REQUIRE(ok.rec.nodes.size() == 1);
  CHECK(ok.rec.nodes[0].name == "n9");
  CHECK(ok.rec.messages[0].join);
  CHECK(ok.rec.messages[0].user_state_len == 300);
  pp.resize(pp.size() - 1);
  CHECK(stream(pp).result.first_error == WalkError::TruncatedData);
  const Bytes huge = fromHex("0682a54e6f646573cf0000010000000000ac5573657253746174654c656e00");
  CHECK(stream(huge).result.first_error == WalkError::TooManyNodes);
  const Bytes negative = fromHex("0682a54e6f64657300ac5573657253746174654c656eff");
  CHECK(stream(negative).result.first_error == WalkError::BadBody);
  CHECK(stream(Mp().byte(7).byte(0).out).result.first_error == WalkError::UnsupportedType);
  CHECK(stream({}).result.first_error == WalkError::Empty);
}

TEST_CASE("message_walker: random and mutated input never crashes", "[gossip][walker]") {
  const json cap = loadVectors("captured/captured.json");
  const auto ring = ringFromHex(cap["keys_hex"]);
  std::vector<Bytes> seeds;
  for (const auto& u : cap["udp"]) {
    Bytes sealed = hex(u["payload_hex"]);
    Bytes out(sealed.size());
    const auto r = openPayload(*ring, sealed, {}, out);
    out.resize(r.length);
    seeds.push_back(out);
  }
  std::mt19937 rng(12345);
  MessageWalker walker;
  Recorder sink;
  MessageSummary summary(MessageSummary::Style::Detailed);
  Tee tee(sink, summary);
  size_t walked = 0;
  for (int round = 0; round < 20000; ++round) {
    Bytes b = seeds[rng() % seeds.size()];
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips && !b.empty(); ++f) {
      b[rng() % b.size()] = static_cast<uint8_t>(rng());
    }
    if (rng() % 4 == 0) {
      b.resize(rng() % (b.size() + 1));
    }
    walker.walkPacket(b, tee);
    walker.walkStream(b, tee, (round & 1) != 0);
    summary.clear();
    sink.messages.clear();
    sink.nodes.clear();
    sink.errors.clear();
    sink.layers.clear();
    ++walked;
  }
  CHECK(walked == 20000);
}
