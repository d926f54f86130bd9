#include "filters/keyring/aead_key.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fstream>

#include "../../test_util.h"

using namespace sidecrypt::filters;
using namespace sidecrypt::filters::keyring;
using sidecrypt::test::fromHex;

namespace {

nlohmann::json loadVectors(const char* name) {
  std::ifstream in(sidecrypt::test::vectorsDir() / name);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

std::unique_ptr<AeadKey> keyFromHex(const std::string& hex) {
  auto bytes = fromHex(hex);
  return AeadKey::create(SecretBytes::copyOf(bytes));
}

}  // namespace

TEST_CASE("aead_key: rejects key lengths memberlist rejects", "[keyring]") {
  for (size_t n : {0, 1, 15, 17, 31, 33, 64}) {
    CAPTURE(n);
    CHECK(AeadKey::create(SecretBytes(n)) == nullptr);
  }
  for (size_t n : {16, 24, 32}) {
    CAPTURE(n);
    CHECK(AeadKey::create(SecretBytes(n)) != nullptr);
  }
}

TEST_CASE("aead_key: opens every v1 sweep vector made by memberlist", "[keyring][vectors]") {
  auto doc = loadVectors("packets.json");
  int opened = 0;
  for (const auto& v : doc["vectors"]) {
    if (v["kind"] != "sweep" || v["version"] != 1) {
      continue;
    }
    DYNAMIC_SECTION(v["name"].get<std::string>()) {
      auto key = keyFromHex(v["key_hex"]);
      REQUIRE(key);
      auto sealed = fromHex(v["sealed_hex"]);
      REQUIRE(sealed.size() >= 29);
      std::vector<uint8_t> out(sealed.size());
      std::span<const uint8_t, kNonceBytes> nonce(sealed.data() + 1, kNonceBytes);
      auto n = key->open(nonce, std::span(sealed).subspan(1 + kNonceBytes), {}, out);
      REQUIRE(n >= 0);
      out.resize(static_cast<size_t>(n));
      CHECK(out == fromHex(v["plaintext_hex"]));
      ++opened;
    }
  }
  CHECK(opened > 0);
}

TEST_CASE("aead_key: seal with the vector's nonce reproduces memberlist's bytes", "[keyring]") {
  auto doc = loadVectors("packets.json");
  const auto& v = doc["vectors"][23];
  REQUIRE(v["name"] == "sweep-v1-k16-p15");
  auto key = keyFromHex(v["key_hex"]);
  auto plain = fromHex(v["plaintext_hex"]);
  auto nonce = fromHex(v["nonce_hex"]);
  std::vector<uint8_t> out(plain.size() + kTagBytes);
  auto n =
      key->seal(std::span<const uint8_t, kNonceBytes>(nonce.data(), kNonceBytes), plain, {}, out);
  REQUIRE(n == out.size());
  std::vector<uint8_t> expect = fromHex(v["sealed_hex"]);
  expect.erase(expect.begin(), expect.begin() + 1 + kNonceBytes);
  CHECK(out == expect);
}

TEST_CASE("aead_key: a wrong key fails to open and says so", "[keyring]") {
  auto doc = loadVectors("keyring.json");
  const auto& v = doc["vectors"][1];  // sealed with ring index 1
  auto wrong = keyFromHex(doc["keyring_hex"][0]);
  auto right = keyFromHex(doc["keyring_hex"][1]);
  auto sealed = fromHex(v["sealed_hex"]);
  std::span<const uint8_t, kNonceBytes> nonce(sealed.data() + 1, kNonceBytes);
  auto body = std::span(sealed).subspan(1 + kNonceBytes);
  std::vector<uint8_t> out(sealed.size());
  CHECK(wrong->open(nonce, body, {}, out) == -1);
  CHECK(right->open(nonce, body, {}, out) == static_cast<ptrdiff_t>(v["plaintext_len"].get<int>()));
}

TEST_CASE("aead_key: fingerprint is 8 hex digits of SHA-256 and never the key", "[keyring]") {
  auto key = keyFromHex("5720b134d1a822d814e036bbf2fa70133ef67fe5e5aee2d2683bdbf506aa4068");
  REQUIRE(key);
  // sha256 of those 32 bytes, first four bytes (computed independently with Python's hashlib).
  CHECK(key->fingerprint() == "26183204");
}

TEST_CASE("aead_key: randomKey gives distinct 32-byte keys", "[keyring]") {
  auto a = randomKey();
  auto b = randomKey();
  CHECK(a.size() == 32);
  CHECK_FALSE(a.equals(b));
}
