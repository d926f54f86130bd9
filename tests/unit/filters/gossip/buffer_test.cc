#include "filters/common/buffer.h"

#include <catch2/catch.hpp>

#include <cstring>
#include <numeric>
#include <vector>

using sidecrypt::filters::Buffer;

namespace {

std::vector<uint8_t> seq(size_t n, uint8_t start = 0) {
  std::vector<uint8_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

std::vector<uint8_t> all(const Buffer& b) {
  return {b.readable().begin(), b.readable().end()};
}

}  // namespace

TEST_CASE("buffer: append, peek and drain behave as a FIFO", "[buffer]") {
  Buffer b;
  CHECK(b.empty());
  CHECK(b.readable().empty());
  b.append(seq(10));
  b.append(uint8_t{99});
  REQUIRE(b.size() == 11);
  CHECK(b.peek(3)[2] == 2);
  b.drain(4);
  REQUIRE(b.size() == 7);
  CHECK(b.readable()[0] == 4);
  CHECK(b.readable()[6] == 99);
  b.drain(7);
  CHECK(b.empty());
}

TEST_CASE("buffer: reserve/commit exposes only committed bytes", "[buffer]") {
  Buffer b(16);
  auto w = b.reserve(8);
  REQUIRE(w.size() >= 8);
  std::memset(w.data(), 0xab, 8);
  CHECK(b.empty());
  b.commit(5);
  CHECK(b.size() == 5);
  CHECK(all(b) == std::vector<uint8_t>(5, 0xab));
}

TEST_CASE("buffer: reserve compacts drained space before growing", "[buffer]") {
  Buffer b(64);
  b.append(seq(60));
  b.drain(50);
  const size_t cap = b.capacity();
  auto w = b.reserve(40);  // 10 live bytes + 40 fit in 64 once compacted
  REQUIRE(w.size() >= 40);
  CHECK(b.capacity() == cap);
  CHECK(all(b) == seq(10, 50));
}

TEST_CASE("buffer: reserve grows and keeps the readable bytes", "[buffer]") {
  Buffer b(8);
  b.append(seq(8));
  b.drain(2);
  auto w = b.reserve(1000);
  REQUIRE(w.size() >= 1000);
  CHECK(b.capacity() >= 1006);
  CHECK(all(b) == seq(6, 2));
}

TEST_CASE("buffer: move steals storage into an empty buffer and appends otherwise", "[buffer]") {
  Buffer a;
  Buffer b;
  b.append(seq(5));
  a.move(b);
  CHECK(b.empty());
  CHECK(all(a) == seq(5));
  Buffer c;
  c.append(seq(3, 100));
  a.move(c);
  CHECK(c.empty());
  auto expect = seq(5);
  auto tail = seq(3, 100);
  expect.insert(expect.end(), tail.begin(), tail.end());
  CHECK(all(a) == expect);

  Buffer d;
  d.move(a, 2);
  CHECK(all(d) == seq(2));
  CHECK(a.size() == 6);
}

TEST_CASE("buffer: move-constructed buffers carry their bytes", "[buffer]") {
  Buffer a;
  a.append(seq(4));
  Buffer b(std::move(a));
  CHECK(all(b) == seq(4));
  Buffer c;
  c = std::move(b);
  CHECK(all(c) == seq(4));
}

TEST_CASE("buffer: draining everything restarts at the front", "[buffer]") {
  Buffer b(32);
  b.append(seq(32));
  b.drain(32);
  const size_t cap = b.capacity();
  auto w = b.reserve(32);
  CHECK(w.size() == 32);
  CHECK(b.capacity() == cap);
}
