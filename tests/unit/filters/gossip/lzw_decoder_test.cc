#include "filters/gossip/lzw_decoder.h"

#include <catch2/catch.hpp>

#include <string>

#include "gossip_test_util.h"
#include "lzw_test_util.h"

using namespace sidecrypt::filters::gossip;
using namespace sidecrypt::test::gossip;
using sidecrypt::test::fromHex;

namespace {

const nlohmann::json* findInner(const nlohmann::json& tree, int type) {
  if (tree.contains("type") && tree["type"].get<int>() == type) {
    return &tree;
  }
  if (tree.contains("inner")) {
    for (const auto& child : tree["inner"]) {
      if (const auto* hit = findInner(child, type)) {
        return hit;
      }
    }
  }
  return nullptr;
}

}  // namespace

TEST_CASE("lzw_decoder: decompresses memberlist's compressed gossip packets", "[gossip][lzw]") {
  auto doc = loadVectors("packets.json");
  int checked = 0;
  for (const auto& v : doc["vectors"]) {
    if (v["kind"] != "gossip") {
      continue;
    }
    const auto* compress = findInner(v["layers"], kCompressMsg);
    if (compress == nullptr) {
      continue;
    }
    ++checked;
    DYNAMIC_SECTION(v["name"].get<std::string>()) {
      // hasCrc(compress(...)): the compress message starts after [12][crc32].
      auto wire =
          hex(v["version"].get<int>() < 0 ? v["sealed_hex"] : v["layers"]["inner_plaintext_hex"]);
      auto msg = std::span<const uint8_t>(wire).subspan(5);
      CHECK(decompressMessage(msg) == hex(v["plaintext_hex"]));
      CHECK(decompressMessage(msg) == hex((*compress)["inner_plaintext_hex"]));
    }
  }
  CHECK(checked == 2);
}

TEST_CASE("lzw_decoder: decompresses memberlist's compressed stream messages", "[gossip][lzw]") {
  auto doc = loadVectors("streams.json");
  int checked = 0;
  for (const auto& ex : doc["exchanges"]) {
    for (const char* side : {"request", "response"}) {
      if (!ex.contains(side)) {
        continue;
      }
      const auto* compress = findInner(ex[side], kCompressMsg);
      if (compress == nullptr || !compress->contains("inner_plaintext_hex")) {
        continue;
      }
      // the compress message itself: the frame's plaintext or the raw stream bytes
      const auto& top = ex[side];
      auto msg = top["type"].get<int>() == kEncryptMsg ? hex(top["inner_plaintext_hex"])
                                                       : hex(ex[std::string(side) + "_hex"]);
      CAPTURE(ex["name"].get<std::string>(), side);
      CHECK(decompressMessage(msg) == hex((*compress)["inner_plaintext_hex"]));
      ++checked;
    }
  }
  CHECK(checked > 20);
}

TEST_CASE("lzw_decoder: literal streams round-trip across every code width", "[gossip][lzw]") {
  for (size_t n : {1, 2, 254, 255, 256, 300, 767, 768, 1000, 3838, 3839, 3840, 5000, 20000}) {
    CAPTURE(n);
    Bytes plain(n);
    for (size_t i = 0; i < n; ++i) {
      plain[i] = static_cast<uint8_t>((i * 31 + 7) & 0xff);
    }
    CHECK(decompressMessage(compressMessage(plain)) == plain);
  }
}

TEST_CASE("lzw_decoder: empty, corrupt and truncated streams", "[gossip][lzw]") {
  LzwDecoder d;
  VectorSink sink;
  // compress-to-empty from negatives.json: Buf = 00 03 02 decodes to nothing, without error
  CHECK(d.decode(fromHex("000302"), sink) == LzwStatus::Ok);
  CHECK(sink.out.empty());
  CHECK(d.decode(fromHex("0101"), sink) == LzwStatus::Ok);  // EOF code first
  CHECK(d.decode({}, sink) == LzwStatus::Corrupt);          // Go: unexpected EOF
  CHECK(d.decode(fromHex("41"), sink) == LzwStatus::Corrupt);
  // literal 'A' then code 300 (> hi = 258): "lzw: invalid code"
  CHECK(d.decode(fromHex("4158"), sink) == LzwStatus::Corrupt);
}
