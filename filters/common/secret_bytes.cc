#include "filters/common/secret_bytes.h"

#include <sodium.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <cerrno>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace sidecrypt::filters {

void ensureSodium() {
  static const int rc = sodium_init();
  if (rc < 0) {
    std::fputs("sidecrypt: fatal: libsodium failed to initialise\n", stderr);
    std::abort();
  }
}

SecretBytes::SecretBytes(size_t size) : size_(size) {
  ensureSodium();
  // sodium_malloc(0) is legal but returns a distinct guarded page; keep one byte minimum so
  // data() is never null and the guard layout is uniform.
  data_ = static_cast<uint8_t*>(sodium_malloc(size == 0 ? 1 : size));
  if (data_ == nullptr) {
    // Out of locked memory (RLIMIT_MEMLOCK) is not something the data path can survive.
    std::fputs("sidecrypt: fatal: cannot allocate locked memory for key material\n", stderr);
    std::abort();
  }
  sodium_memzero(data_, size == 0 ? 1 : size);
}

SecretBytes SecretBytes::copyOf(std::span<const uint8_t> bytes) {
  SecretBytes out(bytes.size());
  if (!bytes.empty()) {
    std::memcpy(out.data_, bytes.data(), bytes.size());
  }
  return out;
}

SecretBytes::~SecretBytes() {
  release();
}

SecretBytes::SecretBytes(SecretBytes&& other) noexcept : data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    release();
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

void SecretBytes::truncate(size_t size) {
  if (size < size_) {
    sodium_memzero(data_ + size, size_ - size);
    size_ = size;
  }
}

bool SecretBytes::equals(const SecretBytes& other) const {
  if (size_ != other.size_) {
    return false;
  }
  return size_ == 0 || sodium_memcmp(data_, other.data_, size_) == 0;
}

void SecretBytes::release() {
  if (data_ != nullptr) {
    sodium_free(data_);  // wipes before unmapping
    data_ = nullptr;
    size_ = 0;
  }
}

void* secureAllocate(size_t bytes) {
  ensureSodium();
  const size_t rounded = (bytes + 15) & ~size_t{15};
  void* p = sodium_malloc(rounded == 0 ? 16 : rounded);
  if (p == nullptr) {
    std::fputs("sidecrypt: fatal: cannot allocate guarded memory for key material in transit\n",
               stderr);
    std::abort();
  }
  return p;
}

void secureDeallocate(void* p) noexcept {
  if (p != nullptr) {
    sodium_free(p);  // wipes before unmapping
  }
}

std::string disableCoreDumps() {
  std::string err;
  const rlimit none{0, 0};
  rlimit now{};
  // Already off (systemd's LimitCORE=0, whose syscall filter also refuses setrlimit): done.
  const bool off = getrlimit(RLIMIT_CORE, &now) == 0 && now.rlim_cur == 0 && now.rlim_max == 0;
  if (!off && setrlimit(RLIMIT_CORE, &none) != 0) {
    err += std::string("setrlimit(RLIMIT_CORE, 0): ") + std::strerror(errno);
  }
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    err += (err.empty() ? "" : "; ") + std::string("prctl(PR_SET_DUMPABLE, 0): ") +
           std::strerror(errno);
  }
  return err;
}

}  // namespace sidecrypt::filters
