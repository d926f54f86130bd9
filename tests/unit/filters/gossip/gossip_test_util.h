#pragma once

// Shared helpers for the gossip filter tests: golden vectors from tests/vectors (read in place,
// never copied), key rings from hex, and an injectable nonce source.

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <deque>
#include <fstream>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "../../test_util.h"
#include "filters/common/buffer.h"
#include "filters/gossip/gossip_codec.h"
#include "filters/keyring/key_set.h"

namespace sidecrypt::test::gossip {

using Bytes = std::vector<uint8_t>;

inline nlohmann::json loadVectors(const std::string& name) {
  std::ifstream in(vectorsDir() / name);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

inline Bytes hex(const nlohmann::json& v) {
  return fromHex(v.get<std::string>());
}
inline std::string toHexString(std::span<const uint8_t> b) {
  return toHex(b.data(), b.size());
}

inline filters::keyring::KeySetConstSharedPtr ringFromHex(const nlohmann::json& list) {
  std::vector<std::unique_ptr<filters::keyring::AeadKey>> keys;
  for (const auto& k : list) {
    auto raw = hex(k);
    auto key = filters::keyring::AeadKey::create(filters::SecretBytes::copyOf(raw));
    REQUIRE(key);
    keys.push_back(std::move(key));
  }
  return std::make_shared<const filters::keyring::KeySet>(std::move(keys));
}

inline filters::keyring::KeySetConstSharedPtr ringOf(const Bytes& key) {
  nlohmann::json list = nlohmann::json::array();
  list.push_back(toHexString(key));
  return ringFromHex(list);
}

// Hands out queued nonces in order (the vector's recorded nonce), then fails the test.
class QueuedNonces final : public filters::gossip::NonceSource {
 public:
  QueuedNonces() = default;
  explicit QueuedNonces(const Bytes& nonce) { push(nonce); }
  void push(const Bytes& nonce) {
    REQUIRE(nonce.size() == filters::keyring::kNonceBytes);
    queue_.push_back(nonce);
  }
  void fill(std::span<uint8_t, filters::keyring::kNonceBytes> out) override {
    REQUIRE_FALSE(queue_.empty());
    std::copy(queue_.front().begin(), queue_.front().end(), out.begin());
    queue_.pop_front();
  }
  size_t left() const { return queue_.size(); }

 private:
  std::deque<Bytes> queue_;
};

inline Bytes contents(const filters::Buffer& b) {
  auto r = b.readable();
  return Bytes(r.begin(), r.end());
}

// Every way the tests split a byte stream: whole, every 2-way split, 1 byte at a time.
inline std::vector<std::vector<size_t>> splitPlans(size_t n) {
  std::vector<std::vector<size_t>> plans;
  plans.push_back({n});
  for (size_t cut = 1; cut < n; ++cut) {
    plans.push_back({cut, n - cut});
  }
  if (n > 1) {
    plans.emplace_back(n, 1);
  }
  return plans;
}

}  // namespace sidecrypt::test::gossip
