#include "filters/keyring/key_set.h"

#include <catch2/catch.hpp>

using namespace sidecrypt::filters;
using namespace sidecrypt::filters::keyring;

namespace {

SecretBytes keyOf(uint8_t fill, size_t n = 32) {
  SecretBytes k(n);
  for (size_t i = 0; i < n; ++i) {
    k.data()[i] = static_cast<uint8_t>(fill + i);
  }
  return k;
}

KeySetConstSharedPtr ringOf(std::initializer_list<uint8_t> fills) {
  std::vector<std::unique_ptr<AeadKey>> keys;
  for (auto f : fills) {
    keys.push_back(AeadKey::create(keyOf(f)));
  }
  return std::make_shared<const KeySet>(std::move(keys));
}

KeySetConstSharedPtr ok(const KeySet::Result& r) {
  REQUIRE(std::holds_alternative<KeySetConstSharedPtr>(r));
  return std::get<KeySetConstSharedPtr>(r);
}

std::string err(const KeySet::Result& r) {
  REQUIRE(std::holds_alternative<std::string>(r));
  return std::get<std::string>(r);
}

}  // namespace

TEST_CASE("key_set: install appends, keeps the primary, and is a no-op when present", "[keyring]") {
  auto ring = ringOf({1, 2});
  auto next = ok(ring->install(keyOf(3)));
  REQUIRE(next->size() == 3);
  CHECK(next->at(0).raw().equals(keyOf(1)));
  CHECK(next->at(2).raw().equals(keyOf(3)));
  CHECK(ok(next->install(keyOf(2)))->size() == 3);
  CHECK(ring->size() == 2);  // the original snapshot is untouched
}

TEST_CASE("key_set: the first key installed into an empty ring becomes primary", "[keyring]") {
  auto empty = std::make_shared<const KeySet>(std::vector<std::unique_ptr<AeadKey>>{});
  auto next = ok(empty->install(keyOf(9, 16)));
  REQUIRE(next->size() == 1);
  CHECK(next->primary().raw().equals(keyOf(9, 16)));
}

TEST_CASE("key_set: install refuses bad key sizes", "[keyring]") {
  CHECK(err(ringOf({1})->install(keyOf(5, 31))) == "key size must be 16, 24 or 32 bytes");
}

TEST_CASE("key_set: use moves the key to the front and keeps the others in order", "[keyring]") {
  auto next = ok(ringOf({1, 2, 3})->use(keyOf(3)));
  REQUIRE(next->size() == 3);
  CHECK(next->at(0).raw().equals(keyOf(3)));
  CHECK(next->at(1).raw().equals(keyOf(1)));
  CHECK(next->at(2).raw().equals(keyOf(2)));
}

TEST_CASE("key_set: use of a key that is not installed fails", "[keyring]") {
  CHECK(err(ringOf({1, 2})->use(keyOf(7))) == "requested key is not in the keyring");
}

TEST_CASE("key_set: the primary cannot be removed; an absent key is a no-op", "[keyring]") {
  auto ring = ringOf({1, 2});
  CHECK(err(ring->remove(keyOf(1))) == "removing the primary key is not allowed");
  CHECK(ok(ring->remove(keyOf(8)))->size() == 2);
  auto next = ok(ring->remove(keyOf(2)));
  REQUIRE(next->size() == 1);
  CHECK(next->primary().raw().equals(keyOf(1)));
}

TEST_CASE("key_set: find and findByFingerprint", "[keyring]") {
  auto ring = ringOf({1, 2, 3});
  CHECK(ring->find(keyOf(2)) == std::optional<size_t>(1));
  CHECK_FALSE(ring->find(keyOf(4)).has_value());
  CHECK(ring->findByFingerprint(ring->fingerprint(2)) == std::optional<size_t>(2));
  CHECK_FALSE(ring->findByFingerprint("0123").has_value());  // too short to be unambiguous
}
