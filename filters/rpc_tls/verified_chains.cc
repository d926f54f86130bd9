#include "filters/rpc_tls/verified_chains.h"

#include "filters/common/boringssl.h"

#include <openssl/digest.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstring>

namespace sidecrypt::filters::rpc_tls {

std::optional<Sha256> peerChainDigest(x509_st* leaf, stack_st_X509* presented) {
  if (leaf == nullptr) {
    return std::nullopt;
  }
  // SHA-256 over the count and each certificate's own SHA-256 (of its DER): an unambiguous
  // encoding of the whole list.
  SHA256_CTX sha;
  SHA256_Init(&sha);
  const size_t n = presented != nullptr ? sk_X509_num(presented) : 0;
  const uint64_t count = n + 1;
  SHA256_Update(&sha, &count, sizeof(count));
  for (size_t i = 0; i <= n; ++i) {
    const X509* cert = i == 0 ? leaf : sk_X509_value(presented, i - 1);
    Sha256 one{};
    unsigned len = 0;
    if (X509_digest(cert, EVP_sha256(), one.data(), &len) != 1 || len != one.size()) {
      return std::nullopt;
    }
    SHA256_Update(&sha, one.data(), one.size());
  }
  Sha256 out{};
  SHA256_Final(out.data(), &sha);
  return out;
}

size_t VerifiedChainCache::KeyHash::operator()(const Key& k) const {
  size_t h = 0;
  std::memcpy(&h, k.data(), sizeof(h));  // already a digest
  return h;
}

VerifiedChainCache::Key VerifiedChainCache::keyOf(const Sha256& chain, const Sha256& trust) {
  Key key{};
  std::copy(chain.begin(), chain.end(), key.begin());
  std::copy(trust.begin(), trust.end(), key.begin() + static_cast<ptrdiff_t>(chain.size()));
  return key;
}

namespace {

const VerifiedChain& chainOf(const VerifiedChain& v) {
  return v;
}
const VerifiedChain& chainOf(const VerifiedLeaf& v) {
  return v.chain;
}

// Whether every certificate of `chain` is within its dates at `now`.
bool current(const VerifiedChain& chain, int64_t now) {
  return now >= chain.not_before && now <= chain.not_after;
}

}  // namespace

template <typename V>
std::optional<V> VerifiedChainCache::findIn(Lru<V>& lru, const Key& key, int64_t now) {
  auto found = lru.index.find(key);
  if (found == lru.index.end()) {
    return std::nullopt;
  }
  auto it = found->second;
  if (!current(chainOf(it->value), now)) {
    dropped(it->value);
    lru.index.erase(found);
    lru.order.erase(it);
    return std::nullopt;
  }
  lru.order.splice(lru.order.begin(), lru.order, it);
  return it->value;
}

template <typename V>
void VerifiedChainCache::storeIn(Lru<V>& lru, const Key& key, V value) {
  if (capacity_ == 0) {
    return;
  }
  if (auto found = lru.index.find(key); found != lru.index.end()) {
    found->second->value = std::move(value);
    lru.order.splice(lru.order.begin(), lru.order, found->second);
    return;
  }
  lru.order.push_front({key, std::move(value)});
  lru.index.emplace(key, lru.order.begin());
  while (lru.order.size() > capacity_) {
    dropped(lru.order.back().value);
    lru.index.erase(lru.order.back().key);
    lru.order.pop_back();
  }
}

std::optional<VerifiedChain> VerifiedChainCache::find(const Sha256& chain, const Sha256& trust,
                                                      int64_t now) {
  const Key key = keyOf(chain, trust);
  std::lock_guard<std::mutex> lock(mu_);
  return findIn(chains_, key, now);
}

void VerifiedChainCache::store(const Sha256& chain, const Sha256& trust,
                               const VerifiedChain& verified) {
  const Key key = keyOf(chain, trust);
  std::lock_guard<std::mutex> lock(mu_);
  storeIn(chains_, key, verified);
}

std::optional<VerifiedLeaf> VerifiedChainCache::findLeaf(const Sha256& leaf, const Sha256& trust,
                                                         int64_t now) {
  const Key key = keyOf(leaf, trust);
  std::lock_guard<std::mutex> lock(mu_);
  return findIn(leaves_, key, now);
}

uint64_t VerifiedChainCache::storeLeaf(const Sha256& leaf, const Sha256& trust,
                                       VerifiedLeaf verified) {
  if (capacity_ == 0) {
    return 0;
  }
  const Key key = keyOf(leaf, trust);
  std::lock_guard<std::mutex> lock(mu_);
  if (auto found = leaves_.index.find(key); found != leaves_.index.end()) {
    verified.id = found->second->value.id;  // tickets naming it stay good
  } else {
    verified.id = ++next_leaf_id_;
    leaf_ids_.emplace(verified.id, key);
  }
  const uint64_t id = verified.id;
  storeIn(leaves_, key, std::move(verified));
  return id;
}

uint64_t VerifiedChainCache::leafId(const Sha256& leaf, const Sha256& trust, int64_t now) {
  const Key key = keyOf(leaf, trust);
  std::lock_guard<std::mutex> lock(mu_);
  auto found = leaves_.index.find(key);
  if (found == leaves_.index.end()) {
    return 0;
  }
  return current(found->second->value.chain, now) ? found->second->value.id : 0;
}

bool VerifiedChainCache::hasLeafId(uint64_t id, int64_t now) {
  std::lock_guard<std::mutex> lock(mu_);
  auto named = leaf_ids_.find(id);
  if (id == 0 || named == leaf_ids_.end()) {
    return false;
  }
  auto found = leaves_.index.find(named->second);
  if (found == leaves_.index.end()) {
    return false;
  }
  return current(found->second->value.chain, now);
}

size_t VerifiedChainCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return chains_.order.size();
}

size_t VerifiedChainCache::leafCount() const {
  std::lock_guard<std::mutex> lock(mu_);
  return leaves_.order.size();
}

void VerifiedChainCache::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  chains_ = {};
  leaves_ = {};
  leaf_ids_.clear();
}

}  // namespace sidecrypt::filters::rpc_tls
