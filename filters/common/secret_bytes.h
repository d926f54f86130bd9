#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace sidecrypt::filters {

// Key material and anything derived from it (base64 text, keyring file bodies) lives here:
// libsodium's guarded allocation (guard pages, mlock'd, never swapped) that is wiped on free.
// Move-only; never copy a secret into std::string or std::vector.
class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(size_t size);  // zero-filled; aborts if libsodium cannot allocate
  static SecretBytes copyOf(std::span<const uint8_t> bytes);
  ~SecretBytes();

  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::span<uint8_t> span() { return {data_, size_}; }
  std::span<const uint8_t> span() const { return {data_, size_}; }
  std::string_view view() const { return {reinterpret_cast<const char*>(data_), size_}; }

  // Shrinks the logical size (the tail is wiped); used after decoding into an upper bound.
  void truncate(size_t size);

  // Constant-time comparison (sodium_memcmp); sizes are not secret.
  bool equals(const SecretBytes& other) const;

 private:
  void release();
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Calls sodium_init() once; every entry point that touches secrets calls it first.
void ensureSodium();

}  // namespace sidecrypt::filters
