#include "filters/keyring/aead_key.h"

#include "filters/common/boringssl.h"

#include <openssl/aead.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <sodium.h>

#include <cstdint>
#include <new>

namespace sidecrypt::filters::keyring {

bool isValidKeyLength(size_t n) {
  return n == 16 || n == 24 || n == 32;
}

std::string fingerprintOf(std::span<const uint8_t> key) {
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(key.data(), key.size(), digest);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(8);
  for (int i = 0; i < 4; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 0xf]);
  }
  return out;
}

namespace {

const EVP_AEAD* aeadFor(size_t key_len) {
  switch (key_len) {
    case 16:
      return EVP_aead_aes_128_gcm();
    case 24:
      return EVP_aead_aes_192_gcm();
    default:
      return EVP_aead_aes_256_gcm();
  }
}

EVP_AEAD_CTX* ctxIn(const SecretBytes& storage) {
  // The storage was placement-constructed in init(); sodium_malloc places allocations at the
  // end of a page, so a size that is a multiple of the alignment yields an aligned address.
  return reinterpret_cast<EVP_AEAD_CTX*>(const_cast<uint8_t*>(storage.data()));
}

}  // namespace

static_assert(sizeof(EVP_AEAD_CTX) % alignof(EVP_AEAD_CTX) == 0);

AeadKey::AeadKey(SecretBytes raw) : raw_(std::move(raw)), ctx_storage_(sizeof(EVP_AEAD_CTX)) {}

std::unique_ptr<AeadKey> AeadKey::create(SecretBytes raw) {
  if (!isValidKeyLength(raw.size())) {
    return nullptr;
  }
  std::unique_ptr<AeadKey> key(new AeadKey(std::move(raw)));
  if (!key->init()) {
    return nullptr;
  }
  return key;
}

bool AeadKey::init() {
  if (reinterpret_cast<uintptr_t>(ctx_storage_.data()) % alignof(EVP_AEAD_CTX) != 0) {
    return false;
  }
  auto* ctx = new (ctx_storage_.data()) EVP_AEAD_CTX;
  EVP_AEAD_CTX_zero(ctx);
  if (EVP_AEAD_CTX_init(ctx, aeadFor(raw_.size()), raw_.data(), raw_.size(), kTagBytes, nullptr) !=
      1) {
    ERR_clear_error();
    return false;
  }
  fingerprint_ = fingerprintOf(raw_.span());
  initialised_ = true;
  return true;
}

AeadKey::~AeadKey() {
  if (initialised_) {
    EVP_AEAD_CTX_cleanup(ctxIn(ctx_storage_));
  }
  // ctx_storage_ and raw_ are wiped by sodium_free in their destructors.
}

size_t AeadKey::seal(std::span<const uint8_t, kNonceBytes> nonce, std::span<const uint8_t> in,
                     std::span<const uint8_t> ad, std::span<uint8_t> out) const {
  size_t out_len = 0;
  if (EVP_AEAD_CTX_seal(ctxIn(ctx_storage_), out.data(), &out_len, out.size(), nonce.data(),
                        nonce.size(), in.data(), in.size(), ad.data(), ad.size()) != 1) {
    ERR_clear_error();
    return 0;
  }
  return out_len;
}

ptrdiff_t AeadKey::open(std::span<const uint8_t, kNonceBytes> nonce, std::span<const uint8_t> in,
                        std::span<const uint8_t> ad, std::span<uint8_t> out) const {
  size_t out_len = 0;
  if (EVP_AEAD_CTX_open(ctxIn(ctx_storage_), out.data(), &out_len, out.size(), nonce.data(),
                        nonce.size(), in.data(), in.size(), ad.data(), ad.size()) != 1) {
    // A failed open is routine (wrong key, plaintext, tampering); keep the error queue clean
    // so a later SSL_get_error on this thread is not confused (docs/spec/toolchain.md §3.3).
    ERR_clear_error();
    return -1;
  }
  return static_cast<ptrdiff_t>(out_len);
}

}  // namespace sidecrypt::filters::keyring

namespace sidecrypt::filters::keyring {
SecretBytes randomKey(size_t n) {
  SecretBytes out(n);
  randombytes_buf(out.data(), out.size());
  return out;
}
}  // namespace sidecrypt::filters::keyring
