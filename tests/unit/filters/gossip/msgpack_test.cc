#include "filters/gossip/msgpack.h"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "gossip_test_util.h"

using namespace sidecrypt::filters::gossip;
using sidecrypt::test::fromHex;

namespace {

// Feeds `v` in chunks of `chunk` bytes; returns the status and total consumed.
std::pair<MpStatus, size_t> skipChunked(const std::vector<uint8_t>& v, size_t chunk,
                                        uint64_t max = UINT64_MAX, uint32_t depth = 32) {
  MsgpackSkipper s(depth, max);
  size_t total = 0;
  MpStatus st = MpStatus::NeedMore;
  while (total < v.size()) {
    size_t n = 0;
    const size_t len = std::min(chunk, v.size() - total);
    st = s.feed(std::span<const uint8_t>(v).subspan(total, len), n);
    total += n;
    if (st != MpStatus::NeedMore) {
      break;
    }
  }
  return {st, total};
}

}  // namespace

TEST_CASE("msgpack: skipper delimits every format, whole and byte by byte", "[gossip][msgpack]") {
  // value hex, followed by a trailing 0xff marker that must not be consumed
  const std::vector<std::string> values = {
      "c0",
      "c2",
      "c3",
      "00",
      "7f",
      "e0",
      "ff"  // nil, bools, fixints
      ,
      "cc80",
      "cd0102",
      "ce01020304",
      "cf0102030405060708",  // uint
      "d080",
      "d1fffe",
      "d2fffffffe",
      "d3fffffffffffffffe",  // int
      "ca3f800000",
      "cb3ff0000000000000",  // floats
      "a3616263",
      "d903616263",
      "da0003616263",
      "db00000003616263",  // str
      "c403010203",
      "c5000100",
      "c600000000",  // bin
      "93010203",
      "dc0002c0c0",
      "dd00000001a0",  // arrays
      "82a16101a162c0",
      "de0001a0c0",
      "df00000001a0c0",  // maps
      "d40101",
      "d5010102",
      "d60101020304",
      "d7010102030405060708",  // fixext
      "d8010102030405060708090a0b0c0d0e0f10",
      "c70201aabb",
      "c8000101aa",                                                      // ext
      "c90000000101aa",                                                  //
      "83a54e6f64657303ac5573657253746174654c656e21a44a6f696e91920102",  // nested
  };
  for (const auto& h : values) {
    CAPTURE(h);
    auto v = fromHex(h + "ff");
    for (size_t chunk : {v.size(), size_t{1}, size_t{2}}) {
      CAPTURE(chunk);
      auto [st, used] = skipChunked(v, chunk);
      CHECK(st == MpStatus::Done);
      CHECK(used == v.size() - 1);
    }
  }
}

TEST_CASE("msgpack: skipper needs more on truncated values", "[gossip][msgpack]") {
  for (const char* h : {"cd01", "a36162", "930102", "82a16101a162", "db000000", "c7"}) {
    CAPTURE(h);
    auto [st, used] = skipChunked(fromHex(h), 1);
    CHECK(st == MpStatus::NeedMore);
  }
}

TEST_CASE("msgpack: skipper refuses 0xc1, deep nesting and hostile lengths", "[gossip][msgpack]") {
  CHECK(skipChunked(fromHex("c1"), 1).first == MpStatus::Error);
  CHECK(skipChunked(fromHex("91c1"), 1).first == MpStatus::Error);

  std::vector<uint8_t> deep(40, 0x91);
  deep.push_back(0xc0);
  CHECK(skipChunked(deep, deep.size(), UINT64_MAX, 32).first == MpStatus::Error);
  CHECK(skipChunked(deep, deep.size(), UINT64_MAX, 64).first == MpStatus::Done);

  // A 4 GiB raw32, a 4-billion-element array and map: refused from the header alone.
  MsgpackSkipper s(32, 1 << 20);
  size_t n = 0;
  CHECK(s.feed(fromHex("dbffffffff"), n) == MpStatus::Error);
  CHECK(s.overLimit());
  s.reset(1 << 20);
  CHECK(s.feed(fromHex("ddffffffff"), n) == MpStatus::Error);
  s.reset(1 << 20);
  CHECK(s.feed(fromHex("df80000000"), n) == MpStatus::Error);
  // A value that fits the limit exactly is fine; one byte more is not.
  s.reset(4);
  CHECK(s.feed(fromHex("a3616263"), n) == MpStatus::Done);
  s.reset(3);
  CHECK(s.feed(fromHex("a3616263"), n) == MpStatus::Error);
}

TEST_CASE("msgpack: reader decodes ints as go-msgpack would", "[gossip][msgpack]") {
  const std::vector<std::pair<std::string, int64_t>> ints = {
      {"00", 0},  {"7f", 127},  {"cc80", 128}, {"cd024a", 586},           {"d1024a", 586},
      {"ff", -1}, {"d0ff", -1}, {"c0", 0},     {"cfffffffffffffffff", -1}};
  for (const auto& [h, want] : ints) {
    CAPTURE(h);
    auto v = fromHex(h);
    MsgpackReader r(v);
    int64_t got = 42;
    REQUIRE(r.readInt(got));
    CHECK(got == want);
  }
  auto bad = fromHex("a0");
  MsgpackReader r(bad);
  int64_t x = 0;
  CHECK_FALSE(r.readInt(x));
}

TEST_CASE("msgpack: reader walks a map's keys and values", "[gossip][msgpack]") {
  // {"Algo": 0, "Buf": "abc"} as 0.2.2 writes it
  auto v = fromHex("82a4416c676f00a3427566a3616263");
  MsgpackReader r(v);
  uint64_t n = 0;
  REQUIRE(r.readMapHeader(n));
  REQUIRE(n == 2);
  std::string_view key;
  REQUIRE(r.readKey(key));
  CHECK(key == "Algo");
  REQUIRE(r.skipValue());
  REQUIRE(r.readKey(key));
  CHECK(key == "Buf");
  std::span<const uint8_t> buf;
  REQUIRE(r.readBytes(buf));
  CHECK(std::string(buf.begin(), buf.end()) == "abc");
  CHECK(r.rest().empty());
}
