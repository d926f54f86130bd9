#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "filters/common/secret_bytes.h"

namespace sidecrypt::filters::keyring {

// Key lengths memberlist accepts (keyring.go ValidateKey): AES-128/192/256-GCM.
bool isValidKeyLength(size_t n);

inline constexpr size_t kNonceBytes = 12;
inline constexpr size_t kTagBytes = 16;

// One gossip key: the raw bytes and an AES-GCM context initialised once. The context holds the
// expanded key schedule, so it lives in locked memory too and is wiped on destruction.
class AeadKey {
 public:
  // Returns nullptr if the length is not 16, 24 or 32.
  static std::unique_ptr<AeadKey> create(SecretBytes raw);
  ~AeadKey();
  AeadKey(const AeadKey&) = delete;
  AeadKey& operator=(const AeadKey&) = delete;

  const SecretBytes& raw() const { return raw_; }
  // First 8 hex digits of SHA-256(key): the only way a key is ever shown.
  const std::string& fingerprint() const { return fingerprint_; }

  // out.size() must be >= in.size() + kTagBytes; writes ciphertext||tag, returns bytes written
  // or 0 on failure. in and out may be the same buffer (exact overlap only).
  size_t seal(std::span<const uint8_t, kNonceBytes> nonce, std::span<const uint8_t> in,
              std::span<const uint8_t> ad, std::span<uint8_t> out) const;
  // Returns the plaintext length, or -1 if authentication fails. On failure BoringSSL zeroes
  // all of `out`, so never open in place when another key may need the input afterwards.
  ptrdiff_t open(std::span<const uint8_t, kNonceBytes> nonce, std::span<const uint8_t> in,
                 std::span<const uint8_t> ad, std::span<uint8_t> out) const;

 private:
  explicit AeadKey(SecretBytes raw);
  bool init();
  struct Ctx;
  SecretBytes raw_;
  SecretBytes ctx_storage_;  // holds an EVP_AEAD_CTX
  std::string fingerprint_;
  bool initialised_ = false;
};

std::string fingerprintOf(std::span<const uint8_t> key);

}  // namespace sidecrypt::filters::keyring

namespace sidecrypt::filters::keyring {
// A fresh random key of `n` bytes (libsodium's CSPRNG), as `consul keygen` makes (n = 32).
SecretBytes randomKey(size_t n = 32);
}  // namespace sidecrypt::filters::keyring
