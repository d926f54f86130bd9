#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "filters/gossip/message_types.h"
#include "filters/keyring/aead_key.h"
#include "filters/keyring/key_set.h"

namespace sidecrypt::filters::gossip {

// memberlist's keyring encryption, byte-exact with 0.2.2 (docs/spec/gossip-wire.md §3.3, §3.6,
// §5.2). Pure functions over caller-provided storage: no allocation, no exceptions.

// Message type bytes that matter to the codec and the framer (message_types.h).
inline constexpr uint8_t kCompoundMsg = typeByte(MsgType::Compound);
inline constexpr uint8_t kCompressMsg = typeByte(MsgType::Compress);
inline constexpr uint8_t kEncryptMsg = typeByte(MsgType::Encrypt);
inline constexpr uint8_t kHasCrcMsg = typeByte(MsgType::HasCrc);
inline constexpr uint8_t kErrMsg = typeByte(MsgType::Err);
inline constexpr uint8_t kHasLabelMsg = typeByte(MsgType::HasLabel);

inline constexpr size_t kSealHeaderBytes = 1 + keyring::kNonceBytes;          // [version][nonce]
inline constexpr size_t kV1Overhead = kSealHeaderBytes + keyring::kTagBytes;  // 29
inline constexpr size_t kV0MinSealed = kV1Overhead + 16;                      // 45
inline constexpr size_t kFrameHeaderBytes = 5;                                // [10][u32 BE L]
// maxPushStateBytes (docs/spec/gossip-wire.md §5.2).
inline constexpr uint32_t kMaxFrameBytes = 20u * 1024 * 1024;
inline constexpr size_t kMaxLabelBytes = 255;

// Version 1 (no padding) is what every real peer sends; version 0 (PKCS#7) must still be opened
// and is sealed only to reproduce memberlist ProtocolVersion 1 (docs/spec/gossip-wire.md §3.3).
enum class EncryptionVersion : uint8_t { V0 = 0, V1 = 1 };

// memberlist encryptedLength(): the sealed size of `plain_len` bytes.
size_t sealedLength(EncryptionVersion version, size_t plain_len);

// Where nonces come from. Production uses systemNonceSource() (libsodium randombytes_buf, like
// memberlist's crypto/rand); tests inject the vector's nonce to reproduce bytes exactly.
class NonceSource {
 public:
  virtual ~NonceSource() = default;
  virtual void fill(std::span<uint8_t, keyring::kNonceBytes> nonce) = 0;
};
NonceSource& systemNonceSource();

// Writes [version][nonce][ciphertext][tag] into `out` (size >= sealedLength()); returns the bytes
// written, or 0 if `out` is too small or the AEAD fails. `plain` may be exactly
// out.subspan(kSealHeaderBytes, plain.size()) (in place: the datagram headroom/tailroom case);
// any other overlap with `out` is not allowed.
size_t sealPayload(const keyring::AeadKey& key, EncryptionVersion version, NonceSource& nonces,
                   std::span<const uint8_t> plain, std::span<const uint8_t> aad,
                   std::span<uint8_t> out);

// decryptPayload() outcomes, in memberlist's check order (docs/spec/gossip-wire.md §3.3), plus the
// two checks sidecrypt adds: PKCS#7 padding that 0.2.2 would panic on (or silently mis-strip), and
// short output space.
enum class OpenError : uint8_t {
  None,
  Empty,               // "Cannot decrypt empty payload"
  UnsupportedVersion,  // "Unsupported encryption version N"
  TooSmall,            // "Payload is too small to decrypt: N"
  NoKey,               // "No installed keys could decrypt the message"
  BadPadding,          // sidecrypt: v0 padding not 1..16 equal bytes (0.2.2 may panic)
  OutputTooSmall,      // sidecrypt: caller's output span is shorter than the ciphertext
};

struct OpenResult {
  OpenError error = OpenError::None;
  size_t length = 0;    // plaintext bytes written to `out` (padding removed)
  int key_index = -1;   // ring index that authenticated (also set for BadPadding)
  uint8_t version = 0;  // version byte of the input (valid from UnsupportedVersion on)
  bool ok() const { return error == OpenError::None; }
};

// Opens a sealed payload out of place: tries every key primary-first (BoringSSL zeroes `out`
// after a failed try, so the input must not alias it). `out` needs sealed.size() - 29 bytes.
OpenResult openPayload(const keyring::KeySet& keys, std::span<const uint8_t> sealed,
                       std::span<const uint8_t> aad, std::span<uint8_t> out);

// memberlist's error text for an open failure (0.2.2 capitalisation), written into `out`;
// returns the length used. `sealed_len` is the input length (for TooSmall).
size_t formatOpenError(const OpenResult& r, size_t sealed_len, std::span<char> out);
const char* describe(OpenError e);

// ---- labels (HEAD only, docs/spec/gossip-wire.md §3.6) ------------------------------------------

struct LabelHeader {
  enum class Status : uint8_t { None, Present, Incomplete, Malformed };
  Status status = Status::None;
  std::span<const uint8_t> label;  // Present: the label bytes
  size_t header_len = 0;           // Present: 2 + label length
};
// Parses an optional [244][len >= 1][label] prefix.
LabelHeader parseLabelHeader(std::span<const uint8_t> in);
// Bytes writeLabelHeader() needs: 0 for the empty label.
size_t labelHeaderLength(std::string_view label);
size_t writeLabelHeader(std::string_view label, std::span<uint8_t> out);

// ---- stream frames (docs/spec/gossip-wire.md §5.2) ----------------------------------------------

// [10][u32 BE L][sealed]: 5 + sealedLength().
size_t frameLength(EncryptionVersion version, size_t plain_len);
// Seals one whole message as one frame; AAD = the 5 header bytes + label. Returns bytes written.
size_t sealFrame(const keyring::AeadKey& key, EncryptionVersion version, NonceSource& nonces,
                 std::span<const uint8_t> plain, std::string_view label, std::span<uint8_t> out);
// Opens a complete frame (5 + L bytes); AAD = frame[0..5) + label.
OpenResult openFrame(const keyring::KeySet& keys, std::span<const uint8_t> frame,
                     std::string_view label, std::span<uint8_t> out);

// errMsg [13]{"Error": text} as 0.2.2 encodes it (raw family only, docs/spec/gossip-wire.md §2).
// Returns bytes written, 0 if `out` is too small.
size_t encodeErrMsg(std::string_view text, std::span<uint8_t> out);
inline constexpr size_t kErrMsgOverhead = 1 + 1 + 6 + 5;

}  // namespace sidecrypt::filters::gossip
