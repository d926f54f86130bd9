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
//
// A resumed handshake proves nothing new about the server's certificate chain, so a session (and
// the sessions renewed from it) is offered for at most kMaxVerifiedAge after the full handshake
// that verified the chain: every server is verified again, and its current chain seen by the
// census, at least that often.
class SessionCache {
 public:
  static constexpr size_t kDefaultCapacity = 1024;
  static constexpr std::time_t kMaxVerifiedAge = 3600;
  explicit SessionCache(size_t capacity = kDefaultCapacity) : capacity_(capacity) {}
  ~SessionCache();
  SessionCache(const SessionCache&) = delete;
  SessionCache& operator=(const SessionCache&) = delete;

  // A new reference to the session stored for `key` (the caller frees it), or nullptr;
  // `verified_at` is set to the time of the full handshake it descends from.
  ssl_session_st* find(const std::string& key, std::time_t now, std::time_t* verified_at = nullptr);
  // Takes the caller's reference to `session`; replaces what `key` held. `verified_at`: when the
  // server's chain was last verified (now for a full handshake; the offered session's time for a
  // resumed one).
  void store(const std::string& key, ssl_session_st* session, std::time_t verified_at);
  size_t size() const;

 private:
  struct Entry {
    std::string key;
    ssl_session_st* session;
    std::time_t verified_at;
    std::time_t usable_until;  // the session's end, or its server certificate's if sooner
  };
  void eraseLocked(std::list<Entry>::iterator it);

  mutable std::mutex mu_;  // one loop today; handshakes may run on several threads later
  size_t capacity_;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
};

}  // namespace sidecrypt::filters::rpc_tls
