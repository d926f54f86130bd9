#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

namespace sidecrypt::filters::gossip {

// Writes msgpack the way memberlist 0.2.2's go-msgpack (MsgpackHandle{} defaults) does
// (docs/spec/gossip-wire.md §2): unsigned integers in their smallest form, strings and []byte both
// as the legacy raw family (fixraw / raw16 / raw32, never str8 or bin). Into a caller's buffer,
// never allocating; once the buffer is too small every later write is ignored and ok() turns false.
class MsgpackWriter {
 public:
  explicit MsgpackWriter(std::span<uint8_t> out) : out_(out) {}

  bool ok() const { return ok_; }
  size_t size() const { return pos_; }

  void byte(uint8_t b) { put(&b, 1); }
  void nil() { byte(0xc0); }
  void boolean(bool v) { byte(v ? 0xc3 : 0xc2); }
  void uint(uint64_t v) {
    if (v <= 0x7f) {
      byte(static_cast<uint8_t>(v));
    } else if (v <= 0xff) {
      tagged(0xcc, v, 1);
    } else if (v <= 0xffff) {
      tagged(0xcd, v, 2);
    } else if (v <= 0xffffffffULL) {
      tagged(0xce, v, 4);
    } else {
      tagged(0xcf, v, 8);
    }
  }
  void raw(std::span<const uint8_t> v) {
    if (v.size() < 32) {
      byte(static_cast<uint8_t>(0xa0 | v.size()));
    } else if (v.size() <= 0xffff) {
      tagged(0xda, v.size(), 2);
    } else {
      tagged(0xdb, v.size(), 4);
    }
    put(v.data(), v.size());
  }
  void str(std::string_view v) { raw({reinterpret_cast<const uint8_t*>(v.data()), v.size()}); }
  void arrayHeader(size_t n) {
    if (n < 16) {
      byte(static_cast<uint8_t>(0x90 | n));
    } else if (n <= 0xffff) {
      tagged(0xdc, n, 2);
    } else {
      tagged(0xdd, n, 4);
    }
  }
  void mapHeader(size_t n) {
    if (n < 16) {
      byte(static_cast<uint8_t>(0x80 | n));
    } else if (n <= 0xffff) {
      tagged(0xde, n, 2);
    } else {
      tagged(0xdf, n, 4);
    }
  }

 private:
  void tagged(uint8_t tag, uint64_t v, int bytes) {
    byte(tag);
    for (int i = bytes - 1; i >= 0; --i) {
      byte(static_cast<uint8_t>(v >> (8 * i)));
    }
  }
  void put(const uint8_t* p, size_t n) {
    if (!ok_ || n > out_.size() - pos_) {
      ok_ = false;
      return;
    }
    if (n != 0) {
      std::memcpy(out_.data() + pos_, p, n);
    }
    pos_ += n;
  }

  std::span<uint8_t> out_;
  size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace sidecrypt::filters::gossip
