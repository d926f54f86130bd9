#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>

#include "filters/common/secret_bytes.h"

// Forward declarations only (see tls_context.h).
struct evp_cipher_ctx_st;
struct hmac_ctx_st;

namespace sidecrypt::filters::rpc_tls {

// The session-ticket keys of one server TlsContext (TLS 1.2 tickets and TLS 1.3 PSK tickets).
// Made fresh and random with the context, so a ticket is only ever accepted by the context that
// issued it: a reload or a certificate/CA change builds a new context, and the tickets of the old
// one then fail to decrypt and the client gets a full, fully verified handshake.
//
// Keys live in libsodium locked memory (docs/architecture.md §4) and rotate every `period`: new
// tickets use the current key; a ticket under the previous key is still accepted (and renewed
// under the current one) for one more period; older ones are refused. Rotation is lazy, on the
// first ticket operation after the period ends (as BoringSSL does for its own default keys).
class TicketKeys {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::seconds kDefaultPeriod{12 * 3600};

  explicit TicketKeys(std::chrono::seconds period = kDefaultPeriod);
  TicketKeys(const TicketKeys&) = delete;
  TicketKeys& operator=(const TicketKeys&) = delete;

  // BoringSSL's ticket key callback contract (SSL_CTX_set_tlsext_ticket_key_cb): encrypt: 1 ok,
  // -1 error; decrypt: 0 unknown key (full handshake), 1 ok, 2 ok and renew.
  int operate(uint8_t* key_name, uint8_t* iv, evp_cipher_ctx_st* cipher, hmac_ctx_st* hmac,
              bool encrypt, Clock::time_point now);

  // The current key becomes the previous one and a new current key is drawn (the timer's job;
  // tests call it to age tickets).
  void rotate();

  // A ticket's 16-byte key name is 8 bytes naming the key set (all operate() compares) and an
  // 8-byte tag the caller may use: sealTag writes `id` there masked with a keyed hash of the
  // ticket's random IV (so two tickets with the same id cannot be linked), openTag reads it back.
  static constexpr size_t kTagOffset = 8;
  void sealTag(uint8_t* key_name, const uint8_t* iv, uint64_t id) const;
  uint64_t openTag(const uint8_t* key_name, const uint8_t* iv) const;

 private:
  void rotateLocked();
  // One key set: 16-byte name (a ticket carries its first kTagOffset bytes, then the tag), 16-byte
  // AES-128-CBC key, 32-byte HMAC-SHA256 key.
  static constexpr size_t kNameLen = 16;
  static constexpr size_t kAesLen = 16;
  static constexpr size_t kHmacLen = 32;
  static constexpr size_t kSetLen = kNameLen + kAesLen + kHmacLen;

  std::mutex mu_;  // uncontended with one loop; handshakes may run on several threads later
  std::chrono::seconds period_;
  Clock::time_point rotated_at_;
  SecretBytes current_;
  SecretBytes previous_;  // empty until the first rotation
  SecretBytes tag_key_;   // for the tag's mask; for the context's life
  uint64_t tagMask(const uint8_t* iv) const;
};

}  // namespace sidecrypt::filters::rpc_tls
