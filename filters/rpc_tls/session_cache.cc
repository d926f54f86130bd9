#include "filters/rpc_tls/session_cache.h"

#include "filters/common/boringssl.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>

#include "filters/rpc_tls/cert_inventory.h"

namespace sidecrypt::filters::rpc_tls {

namespace {

// Until when `s` may be offered (unix seconds; 0: never): the session's own lifetime, and no
// longer than the server's certificate (Go's client does not resume with a server whose
// certificate has expired since; neither do we). Computed once when the session is stored, so a
// lookup compares two integers under the lock instead of formatting and parsing dates.
std::time_t usableUntil(SSL_SESSION* s) {
  X509* leaf = SSL_SESSION_get0_peer(s);
  if (SSL_SESSION_is_resumable(s) != 1 || leaf == nullptr) {
    return 0;
  }
  const int64_t not_after = asn1UnixTime(X509_get0_notAfter(leaf));
  const auto ends = static_cast<int64_t>(SSL_SESSION_get_time(s) + SSL_SESSION_get_timeout(s));
  return static_cast<std::time_t>(std::max<int64_t>(0, std::min(ends, not_after)));
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
  if (now < 0 || now >= it->usable_until || now - it->verified_at >= kMaxVerifiedAge) {
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
  const std::time_t until = usableUntil(session);
  std::lock_guard<std::mutex> lock(mu_);
  if (auto found = index_.find(key); found != index_.end()) {
    eraseLocked(found->second);
  }
  lru_.push_front(Entry{key, session, verified_at, until});
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
