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

std::optional<VerifiedChain> VerifiedChainCache::find(const Sha256& chain, const Sha256& trust,
                                                      int64_t now) {
  const Key key = keyOf(chain, trust);
  std::lock_guard<std::mutex> lock(mu_);
  auto found = index_.find(key);
  if (found == index_.end()) {
    return std::nullopt;
  }
  auto it = found->second;
  if (now < it->verified.not_before || now > it->verified.not_after) {
    index_.erase(found);
    lru_.erase(it);
    return std::nullopt;
  }
  lru_.splice(lru_.begin(), lru_, it);
  return it->verified;
}

void VerifiedChainCache::store(const Sha256& chain, const Sha256& trust,
                               const VerifiedChain& verified) {
  if (capacity_ == 0) {
    return;
  }
  const Key key = keyOf(chain, trust);
  std::lock_guard<std::mutex> lock(mu_);
  if (auto found = index_.find(key); found != index_.end()) {
    found->second->verified = verified;
    lru_.splice(lru_.begin(), lru_, found->second);
    return;
  }
  lru_.push_front(Entry{key, verified});
  index_.emplace(key, lru_.begin());
  while (lru_.size() > capacity_) {
    index_.erase(lru_.back().key);
    lru_.pop_back();
  }
}

size_t VerifiedChainCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lru_.size();
}

void VerifiedChainCache::clear() {
  std::lock_guard<std::mutex> lock(mu_);
  index_.clear();
  lru_.clear();
}

}  // namespace sidecrypt::filters::rpc_tls
