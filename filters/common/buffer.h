#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <utility>

namespace sidecrypt::filters {

// An owned byte queue: one contiguous block with a read offset and a write offset.
//
// Why one block and not a slice chain: the gossip stream filter must see a whole memberlist
// message contiguously to seal it as one frame (docs/spec/gossip-wire.md §5.2), and the AEAD writes
// its output straight into reserve()d space. Memory is allocated only when a reserve() does not fit
// the current capacity (reserve up front, per stream); drained space is reused by compacting.
//
// Header-only: the top-level CMake list compiles filters/gossip/*.cc but not filters/common/,
// and every member is small.
//
// Not thread-safe (one event-loop thread). Spans returned by readable()/peek()/reserve() stay
// valid until the next non-const call.
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t initial_capacity);
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() = default;

  size_t size() const { return end_ - begin_; }
  bool empty() const { return end_ == begin_; }
  size_t capacity() const { return capacity_; }

  // All readable bytes, contiguous.
  std::span<const uint8_t> readable() const { return {storage_.get() + begin_, size()}; }
  // The first n readable bytes; n must be <= size().
  std::span<const uint8_t> peek(size_t n) const;

  // A writable tail of at least `at_least` bytes (compacts, then grows, only if needed).
  // Nothing becomes readable until commit().
  std::span<uint8_t> reserve(size_t at_least);
  // Makes the first n bytes of the last reserve() readable; n must not exceed what was reserved.
  void commit(size_t n);

  void append(std::span<const uint8_t> bytes);
  void append(uint8_t byte) { append(std::span<const uint8_t>(&byte, 1)); }
  // Discards the first n readable bytes (n must be <= size()).
  void drain(size_t n);
  // Appends all of `from` and empties it; steals its storage when this buffer is empty.
  void move(Buffer& from);
  // Appends the first n bytes of `from` and drains them from it.
  void move(Buffer& from, size_t n);
  void clear() { begin_ = end_ = 0; }

 private:
  void grow(size_t needed);

  std::unique_ptr<uint8_t[]> storage_;
  size_t capacity_ = 0;
  size_t begin_ = 0;
  size_t end_ = 0;
  size_t reserved_ = 0;  // bytes handed out by the last reserve(), for commit() checks
};

namespace detail {
inline constexpr size_t kBufferMinGrowth = 4096;
// Misuse of the buffer is a programming error inside this process, never peer-controlled:
// every caller checks sizes against size() first.
[[noreturn]] inline void bufferMisuse() {
  std::abort();
}
}  // namespace detail

inline Buffer::Buffer(size_t initial_capacity) {
  if (initial_capacity > 0) {
    storage_ = std::make_unique_for_overwrite<uint8_t[]>(initial_capacity);
    capacity_ = initial_capacity;
  }
}

inline Buffer::Buffer(Buffer&& other) noexcept
    : storage_(std::move(other.storage_)),
      capacity_(std::exchange(other.capacity_, 0)),
      begin_(std::exchange(other.begin_, 0)),
      end_(std::exchange(other.end_, 0)),
      reserved_(std::exchange(other.reserved_, 0)) {}

inline Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    storage_ = std::move(other.storage_);
    capacity_ = std::exchange(other.capacity_, 0);
    begin_ = std::exchange(other.begin_, 0);
    end_ = std::exchange(other.end_, 0);
    reserved_ = std::exchange(other.reserved_, 0);
  }
  return *this;
}

inline std::span<const uint8_t> Buffer::peek(size_t n) const {
  if (n > size()) {
    detail::bufferMisuse();
  }
  return {storage_.get() + begin_, n};
}

inline void Buffer::grow(size_t needed) {
  size_t cap = std::max({capacity_ * 2, needed, detail::kBufferMinGrowth});
  auto fresh = std::make_unique_for_overwrite<uint8_t[]>(cap);
  if (!empty()) {
    std::memcpy(fresh.get(), storage_.get() + begin_, size());
  }
  end_ = size();
  begin_ = 0;
  storage_ = std::move(fresh);
  capacity_ = cap;
}

inline std::span<uint8_t> Buffer::reserve(size_t at_least) {
  if (capacity_ - end_ < at_least) {
    if (capacity_ - size() >= at_least && begin_ > 0) {
      // Compact: reuse drained space instead of allocating.
      std::memmove(storage_.get(), storage_.get() + begin_, size());
      end_ = size();
      begin_ = 0;
    } else {
      grow(size() + at_least);
    }
  }
  reserved_ = capacity_ - end_;
  return {storage_.get() + end_, reserved_};
}

inline void Buffer::commit(size_t n) {
  if (n > reserved_) {
    detail::bufferMisuse();
  }
  end_ += n;
  reserved_ -= n;
}

inline void Buffer::append(std::span<const uint8_t> bytes) {
  if (bytes.empty()) {
    return;
  }
  auto dst = reserve(bytes.size());
  std::memcpy(dst.data(), bytes.data(), bytes.size());
  commit(bytes.size());
}

inline void Buffer::drain(size_t n) {
  if (n > size()) {
    detail::bufferMisuse();
  }
  begin_ += n;
  if (begin_ == end_) {
    begin_ = end_ = 0;  // empty: restart at the front so the next reserve() needs no memmove
  }
}

inline void Buffer::move(Buffer& from) {
  if (&from == this) {
    return;
  }
  if (empty() && from.capacity_ >= capacity_) {
    std::swap(storage_, from.storage_);
    std::swap(capacity_, from.capacity_);
    begin_ = std::exchange(from.begin_, 0);
    end_ = std::exchange(from.end_, 0);
    reserved_ = 0;
    from.reserved_ = 0;
    return;
  }
  append(from.readable());
  from.clear();
}

inline void Buffer::move(Buffer& from, size_t n) {
  if (&from == this) {
    return;
  }
  append(from.peek(n));
  from.drain(n);
}

}  // namespace sidecrypt::filters
