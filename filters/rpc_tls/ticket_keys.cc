#include "filters/rpc_tls/ticket_keys.h"

#include "filters/common/boringssl.h"

#include <openssl/cipher.h>
#include <openssl/crypto.h>
#include <openssl/digest.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstring>

namespace sidecrypt::filters::rpc_tls {

TicketKeys::TicketKeys(std::chrono::seconds period)
    : period_(period), rotated_at_(Clock::now()), current_(kSetLen), tag_key_(kHmacLen) {
  RAND_bytes(current_.data(), current_.size());
  RAND_bytes(tag_key_.data(), tag_key_.size());
}

uint64_t TicketKeys::tagMask(const uint8_t* iv) const {
  uint8_t mac[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  uint64_t mask = 0;
  if (HMAC(EVP_sha256(), tag_key_.data(), tag_key_.size(), iv,
           EVP_CIPHER_iv_length(EVP_aes_128_cbc()), mac, &len) != nullptr &&
      len >= sizeof(mask)) {
    std::memcpy(&mask, mac, sizeof(mask));
  }
  return mask;
}

void TicketKeys::sealTag(uint8_t* key_name, const uint8_t* iv, uint64_t id) const {
  const uint64_t tag = id ^ tagMask(iv);
  std::memcpy(key_name + kTagOffset, &tag, sizeof(tag));
}

uint64_t TicketKeys::openTag(const uint8_t* key_name, const uint8_t* iv) const {
  uint64_t tag = 0;
  std::memcpy(&tag, key_name + kTagOffset, sizeof(tag));
  return tag ^ tagMask(iv);
}

void TicketKeys::rotate() {
  std::lock_guard<std::mutex> lock(mu_);
  rotateLocked();
}

void TicketKeys::rotateLocked() {
  SecretBytes next(kSetLen);
  RAND_bytes(next.data(), next.size());
  previous_ = std::move(current_);
  current_ = std::move(next);
}

int TicketKeys::operate(uint8_t* key_name, uint8_t* iv, evp_cipher_ctx_st* cipher,
                        hmac_ctx_st* hmac, bool encrypt, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  // Lazy rotation; after a long quiet spell both keys are replaced (two periods passed).
  for (int i = 0; i < 2 && now - rotated_at_ >= period_; ++i) {
    rotateLocked();
    rotated_at_ += period_;
  }
  if (now - rotated_at_ >= period_) {
    rotated_at_ = now;
  }
  const SecretBytes* keys = &current_;
  int ok = 1;
  if (encrypt) {
    std::memcpy(key_name, current_.data(), kNameLen);
    RAND_bytes(iv, EVP_CIPHER_iv_length(EVP_aes_128_cbc()));
  } else if (CRYPTO_memcmp(key_name, current_.data(), kTagOffset) == 0) {
    ok = 1;
  } else if (!previous_.empty() && CRYPTO_memcmp(key_name, previous_.data(), kTagOffset) == 0) {
    keys = &previous_;
    ok = 2;  // accepted, and re-issued under the current key
  } else {
    return 0;  // another context's (or an expired) ticket: a full handshake
  }
  const uint8_t* aes = keys->data() + kNameLen;
  const uint8_t* mac = aes + kAesLen;
  if (HMAC_Init_ex(hmac, mac, kHmacLen, EVP_sha256(), nullptr) != 1) {
    return -1;
  }
  const int init = encrypt ? EVP_EncryptInit_ex(cipher, EVP_aes_128_cbc(), nullptr, aes, iv)
                           : EVP_DecryptInit_ex(cipher, EVP_aes_128_cbc(), nullptr, aes, iv);
  return init == 1 ? ok : -1;
}

}  // namespace sidecrypt::filters::rpc_tls
