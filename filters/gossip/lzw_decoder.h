#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

namespace sidecrypt::filters::gossip {

// Receives decompressed bytes in chunks; return false to stop decoding early.
class LzwSink {
 public:
  virtual ~LzwSink() = default;
  virtual bool write(std::span<const uint8_t> bytes) = 0;
};

enum class LzwStatus : uint8_t {
  Ok,       // reached the EOF code
  Corrupt,  // invalid code, or input ended before the EOF code (Go: ErrUnexpectedEOF)
  Stopped,  // the sink returned false
};

// A port of Go's compress/lzw Reader with LSB order and literal width 8, the only configuration
// memberlist uses (docs/spec/gossip-wire.md §3.5): codes start at 9 bits, clear = 256, EOF = 257,
// up to 12 bits. Decoding decisions (what is an error, what the code == hi case expands to,
// trailing bytes after EOF ignored) follow Go 1.19's reader.go so that "decodes to nothing" and "is
// corrupt" mean exactly what they mean to a 0.2.2 agent.
//
// The object is ~20 KiB of tables: create it once (per filter) and reuse; decode() resets state.
class LzwDecoder {
 public:
  LzwStatus decode(std::span<const uint8_t> in, LzwSink& sink);

 private:
  static constexpr uint32_t kMaxWidth = 12;
  static constexpr uint32_t kTableSize = 1u << kMaxWidth;
  static constexpr size_t kFlushAt = 4096;

  void emit(uint16_t code);
  bool flush(LzwSink& sink);

  std::array<uint16_t, kTableSize> prefix_{};
  std::array<uint8_t, kTableSize> suffix_{};
  std::array<uint8_t, size_t{2} * kTableSize> output_{};
  size_t out_len_ = 0;
  uint16_t hi_ = 0;
  uint16_t last_ = 0;
};

}  // namespace sidecrypt::filters::gossip
