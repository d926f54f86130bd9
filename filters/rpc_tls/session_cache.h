#pragma once

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>

struct ssl_session_st;

namespace sidecrypt::filters::rpc_tls {

// The outbound (client) TLS sessions of one client TlsContext, for resumption: one session per
// destination (address and expected server name), least recently used dropped beyond
// `capacity`. Owned by the context, so a reload (new CA, certificate or settings) starts with an
// empty cache and a session is never offered under another context than the one that verified
// the server. A session is offered again until it expires or a newer one (the server's next
// ticket) replaces it; a session whose server certificate has since expired is dropped.
class SessionCache {
 public:
  static constexpr size_t kDefaultCapacity = 1024;
  explicit SessionCache(size_t capacity = kDefaultCapacity) : capacity_(capacity) {}
  ~SessionCache();
  SessionCache(const SessionCache&) = delete;
  SessionCache& operator=(const SessionCache&) = delete;

  // A new reference to the session stored for `key` (the caller frees it), or nullptr.
  ssl_session_st* find(const std::string& key, std::time_t now);
  // Takes the caller's reference to `session`; replaces what `key` held.
  void store(const std::string& key, ssl_session_st* session);
  size_t size() const;

 private:
  struct Entry {
    std::string key;
    ssl_session_st* session;
  };
  void eraseLocked(std::list<Entry>::iterator it);

  mutable std::mutex mu_;  // one loop today; handshakes may run on several threads later
  size_t capacity_;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
};

}  // namespace sidecrypt::filters::rpc_tls
