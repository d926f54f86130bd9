#include "filters/gossip/stream_framer.h"

#include <catch2/catch.hpp>

#include <string>

#include "gossip_test_util.h"

using namespace sidecrypt::filters::gossip;
using namespace sidecrypt::test::gossip;
using sidecrypt::test::fromHex;

namespace {

struct Outcome {
  FramerStatus status = FramerStatus::NeedMore;
  size_t length = 0;
  size_t label_length = 0;
  FramerError error = FramerError::None;
  size_t consumed = 0;
  bool operator==(const Outcome&) const = default;
};

// Feeds `bytes` to a fresh framer in the chunk sizes of `plan`, stopping at the first final
// result. Checks the framer never consumes past the end of the message.
Outcome run(const Bytes& bytes, const std::vector<size_t>& plan, FramerGrammar g = {},
            FramerLimits limits = {}) {
  StreamFramer f(g, limits);
  Outcome o;
  size_t at = 0;
  for (size_t n : plan) {
    auto r = f.feed(std::span<const uint8_t>(bytes).subspan(at, n));
    o.consumed += r.consumed;
    at += n;
    if (r.status != FramerStatus::NeedMore) {
      o.status = r.status;
      o.length = r.length;
      o.label_length = r.label_length;
      o.error = r.error;
      break;
    }
  }
  return o;
}

Outcome runWhole(const std::string& h, FramerGrammar g = {}, FramerLimits limits = {}) {
  auto b = fromHex(h);
  return run(b, {b.size()}, g, limits);
}

}  // namespace

TEST_CASE("stream_framer: every streams.json message frames identically however it is split",
          "[gossip][stream][vectors]") {
  auto doc = loadVectors("streams.json");
  int messages = 0;
  for (const auto& ex : doc["exchanges"]) {
    for (const char* field : {"request_hex", "response_hex"}) {
      auto bytes = hex(ex[field]);
      if (bytes.empty()) {
        continue;
      }
      ++messages;
      DYNAMIC_SECTION(ex["name"].get<std::string>() << " " << field) {
        const Outcome whole = run(bytes, {bytes.size()});
        REQUIRE(whole.status == FramerStatus::Frame);
        CHECK(whole.length == bytes.size());
        CHECK(whole.consumed == bytes.size());
        for (const auto& plan : splitPlans(bytes.size())) {
          CAPTURE(plan.size(), plan.front());
          CHECK(run(bytes, plan) == whole);
        }
        // One byte short of the end is never an error, only NeedMore.
        Bytes cut(bytes.begin(), bytes.end() - 1);
        CHECK(run(cut, {cut.size()}).status == FramerStatus::NeedMore);
      }
    }
  }
  CHECK(messages == 50);
}

TEST_CASE("stream_framer: the decrypted push/pull has the sizes the spec lists", "[gossip]") {
  auto doc = loadVectors("streams.json");
  const auto& ex = doc["exchanges"][0];
  REQUIRE(ex["name"] == "plain-pushpull-uncompressed");
  auto bytes = hex(ex["request_hex"]);
  CHECK(bytes.size() == 278);  // 1 + 28 + 74 + 74 + 68 + 33 (docs/spec/gossip-wire.md §6)
  // Stop at each boundary the spec names: never a frame before 278.
  for (size_t cut : {1, 29, 103, 177, 245, 277}) {
    CAPTURE(cut);
    Bytes part(bytes.begin(), bytes.begin() + static_cast<ptrdiff_t>(cut));
    CHECK(run(part, {part.size()}).status == FramerStatus::NeedMore);
  }
}

TEST_CASE("stream_framer: HEAD caps refuse the headers that kill 0.2.2 agents", "[gossip]") {
  // pushPull header {Nodes: N, UserStateLen: U} with hostile values (docs/spec/gossip-wire.md §9).
  auto header = [](const std::string& nodes, const std::string& user) {
    return "0682a54e6f646573" + nodes + "ac5573657253746174654c656e" + user;
  };
  CHECK(runWhole(header("ff", "00")).error == FramerError::NegativeLength);    // -1
  CHECK(runWhole(header("d0ff", "00")).error == FramerError::NegativeLength);  // -1
  CHECK(runWhole(header("cf0000010000000000", "00")).error == FramerError::TooManyNodes);
  CHECK(runWhole(header("ce00100001", "00")).error == FramerError::TooManyNodes);  // 2^20+1
  CHECK(runWhole(header("00", "cf0000010000000000")).error == FramerError::UserStateTooLarge);
  CHECK(runWhole(header("00", "d201400001")).error == FramerError::UserStateTooLarge);
  CHECK(runWhole(header("00", "a0")).error == FramerError::BadHeaderValue);
  // user message {UserMsgLen: 2^40}
  CHECK(runWhole("0881aa557365724d73674c656ecf0000010000000000").error ==
        FramerError::UserMsgTooLarge);
  // encrypted frame L = 20 MiB + 1 (responder_negatives frame-length-over-20MiB)
  auto big = runWhole("0a01400001");
  CHECK(big.error == FramerError::FrameTooLarge);
  // Accepted forms: nil and absent keys mean 0; HEAD's signed ints; a nil header.
  CHECK(runWhole(header("c0", "d10003") + "616263").status == FramerStatus::Frame);
  CHECK(runWhole("0680").status == FramerStatus::Frame);
  CHECK(runWhole("06c0").status == FramerStatus::Frame);
  CHECK(runWhole("0690").error == FramerError::HeaderNotMap);
}

TEST_CASE("stream_framer: a configurable maximum message size", "[gossip]") {
  FramerLimits small;
  small.max_message_bytes = 64;
  // a raw32 claiming 4 GiB inside a ping: refused from its header, not waited for
  CHECK(runWhole("0081a4426f6479dbffffffff", {}, small).error == FramerError::MessageTooLarge);
  CHECK(runWhole("0a00000100", {}, small).error == FramerError::MessageTooLarge);
  // user message whose raw tail would pass the maximum
  CHECK(runWhole("0881aa557365724d73674c656e40", {}, small).error == FramerError::MessageTooLarge);
  // a ping exactly at the limit is fine
  std::string ping = "0081a4426f6479da0036" + std::string(size_t{0x36} * 2, 'a');
  CHECK(fromHex(ping).size() == 64);
  CHECK(runWhole(ping, {}, small).status == FramerStatus::Frame);
}

TEST_CASE("stream_framer: message types and labels follow the grammar", "[gossip]") {
  for (const char* h : {"01", "03", "04", "05", "07010000", "0b", "0c", "f4"}) {
    CAPTURE(h);
    CHECK(runWhole(h).error == FramerError::InvalidType);
  }
  FramerGrammar dialled{.allow_label = true};
  auto labelled = runWhole("f4036463310080", dialled);  // [244][3]"dc1" + ping {}
  CHECK(labelled.status == FramerStatus::Frame);
  CHECK(labelled.label_length == 5);
  CHECK(labelled.length == 7);
  CHECK(runWhole("f4036463310080").error == FramerError::InvalidType);  // not the dialled side
  CHECK(runWhole("f400", dialled).error == FramerError::EmptyLabel);
  CHECK(runWhole("f40161f4016100", dialled).error == FramerError::InvalidType);  // only once
  FramerGrammar inner{.allow_encrypted = false, .allow_compress = false};
  CHECK(runWhole("0a00000000", inner).error == FramerError::InvalidType);
  CHECK(runWhole("0980", inner).error == FramerError::InvalidType);
  CHECK(runWhole("0a00000000").status == FramerStatus::Frame);
}

TEST_CASE("stream_framer: the message type is known before the message is complete", "[gossip]") {
  StreamFramer f(FramerGrammar{.allow_label = true});
  CHECK(f.messageType() == -1);
  auto b = fromHex("f402616206");
  f.feed(std::span<const uint8_t>(b).first(4));
  CHECK(f.messageType() == -1);
  f.feed(std::span<const uint8_t>(b).subspan(4));
  CHECK(f.messageType() == 6);
  f.reset();
  CHECK(f.messageType() == -1);
}

TEST_CASE("stream_framer: a header over 1024 bytes fails at the same byte however it is cut",
          "[gossip]") {
  // [6] then a push/pull header map whose one key is a 1100-byte string: it cannot fit.
  Bytes msg = {6, 0x81, 0xda, 0x04, 0x4c};
  msg.resize(msg.size() + 0x44c, 'k');
  msg.push_back(0x00);
  const Outcome whole = run(msg, {msg.size()});
  CHECK(whole.status == FramerStatus::Error);
  CHECK(whole.error == FramerError::HeaderTooLarge);
  CHECK(whole.consumed == 1 + StreamFramer::kMaxHeaderBytes);  // the type byte, a full header
  for (size_t chunk : {size_t{1}, size_t{7}, size_t{62}, size_t{1000}, size_t{1024}}) {
    std::vector<size_t> plan;
    for (size_t at = 0; at < msg.size(); at += chunk) {
      plan.push_back(std::min(chunk, msg.size() - at));
    }
    CHECK(run(msg, plan) == whole);
  }
  // Exactly 1024 bytes of header still frames.
  Bytes fits = {6, 0x83, 0xa5, 'N', 'o', 'd', 'e', 's', 0x00, 0xac};
  for (char c : std::string("UserStateLen")) {
    fits.push_back(static_cast<uint8_t>(c));
  }
  fits.push_back(0x00);
  // A third key (raw16, 3 bytes of header) of the length that ends the header, with its nil
  // value, exactly at byte 1024 after the type byte.
  const size_t key = 1 + StreamFramer::kMaxHeaderBytes - fits.size() - 3 - 1;
  fits.push_back(0xda);
  fits.push_back(static_cast<uint8_t>(key >> 8));
  fits.push_back(static_cast<uint8_t>(key & 0xff));
  fits.resize(fits.size() + key, 'p');
  fits.push_back(0xc0);
  REQUIRE(fits.size() == 1 + StreamFramer::kMaxHeaderBytes);
  const Outcome ok = run(fits, {fits.size()});
  CHECK(ok.status == FramerStatus::Frame);
  CHECK(ok.length == fits.size());
}
