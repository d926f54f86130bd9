#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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

// Working memory that may hold key bytes in transit: decompressed gossip (a Serf key query
// carries the raw key, usually inside an LZW-compressed packet), LZW tables, key-query answers
// (base64 keys). libsodium's guarded allocation, like SecretBytes: mlock'd where RLIMIT_MEMLOCK
// allows, always MADV_DONTDUMP (left out of core dumps), wiped on free. The size is rounded up to
// 16 bytes so the returned address (the end of a page minus the size) is 16-byte aligned. Aborts
// when libsodium cannot allocate.
void* secureAllocate(size_t bytes);
void secureDeallocate(void* p) noexcept;

template <class T>
struct SecureAllocator {
  using value_type = T;
  SecureAllocator() = default;
  template <class U>
  explicit SecureAllocator(const SecureAllocator<U>& /*other*/) noexcept {}
  T* allocate(size_t n) { return static_cast<T*>(secureAllocate(n * sizeof(T))); }
  void deallocate(T* p, size_t /*n*/) noexcept { secureDeallocate(p); }
  bool operator==(const SecureAllocator& /*other*/) const { return true; }
};

using SecureBuffer = std::vector<uint8_t, SecureAllocator<uint8_t>>;

template <class T>
struct SecureDelete {
  void operator()(T* p) const noexcept {
    p->~T();
    secureDeallocate(p);
  }
};
template <class T>
using SecureUnique = std::unique_ptr<T, SecureDelete<T>>;

// One object in secure memory (see secureAllocate).
template <class T, class... Args>
SecureUnique<T> makeSecure(Args&&... args) {
  static_assert(alignof(T) <= 16);
  void* m = secureAllocate(sizeof(T));
  return SecureUnique<T>(new (m) T(std::forward<Args>(args)...));
}

// Process hardening for a process that holds keys: not dumpable (PR_SET_DUMPABLE 0: no core
// file, no ptrace or /proc/<pid>/mem access for other users) and RLIMIT_CORE 0 (soft and hard).
// Returns an error text for what could not be set (nothing is fatal).
std::string disableCoreDumps();

}  // namespace sidecrypt::filters
