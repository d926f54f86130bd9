#include "filters/rpc_tls/session_cache.h"

#include "filters/common/boringssl.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace sidecrypt::filters::rpc_tls {

namespace {

bool usable(SSL_SESSION* s, std::time_t now) {
  if (SSL_SESSION_is_resumable(s) != 1) {
    return false;
  }
  const uint64_t ends = SSL_SESSION_get_time(s) + SSL_SESSION_get_timeout(s);
  if (now < 0 || static_cast<uint64_t>(now) >= ends) {
    return false;
  }
  // Go's client does not resume with a server whose certificate has expired since; neither do we.
  X509* leaf = SSL_SESSION_get0_peer(s);
  return leaf != nullptr && X509_cmp_time(X509_get0_notAfter(leaf), &now) > 0;
}

}  // namespace

SessionCache::~SessionCache() {
  for (auto& e : lru_) {
    SSL_SESSION_free(e.session);
  }
}

void SessionCache::eraseLocked(std::list<Entry>::iterator it) {
  SSL_SESSION_free(it->session);
  index_.erase(it->key);
  lru_.erase(it);
}

ssl_session_st* SessionCache::find(const std::string& key, std::time_t now,
                                   std::time_t* verified_at) {
  std::lock_guard<std::mutex> lock(mu_);
  auto found = index_.find(key);
  if (found == index_.end()) {
    return nullptr;
  }
  auto it = found->second;
  if (!usable(it->session, now) || now - it->verified_at >= kMaxVerifiedAge) {
    eraseLocked(it);
    return nullptr;
  }
  lru_.splice(lru_.begin(), lru_, it);
  SSL_SESSION_up_ref(it->session);
  if (verified_at != nullptr) {
    *verified_at = it->verified_at;
  }
  return it->session;
}

void SessionCache::store(const std::string& key, ssl_session_st* session, std::time_t verified_at) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto found = index_.find(key); found != index_.end()) {
    eraseLocked(found->second);
  }
  lru_.push_front(Entry{key, session, verified_at});
  index_.emplace(key, lru_.begin());
  while (lru_.size() > capacity_) {
    eraseLocked(std::prev(lru_.end()));
  }
}

size_t SessionCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lru_.size();
}

}  // namespace sidecrypt::filters::rpc_tls
