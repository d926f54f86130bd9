#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace sidecrypt::filters::gossip {

// Just enough msgpack to delimit and sanity-check memberlist messages (docs/spec/gossip-wire.md §2,
// §6): the full format is accepted (0.2.2 only writes the legacy raw family, HEAD's go-msgpack v2
// may write signed ints, str8, bin and ext), but values are never materialised.

enum class MpKind : uint8_t { Nil, Bool, UInt, NegInt, Float, Raw, Array, Map, Ext, Invalid };

// One decoded value header. For Raw/Ext `payload` is the number of bytes that follow the header
// (Ext: data plus the type byte); for Array/Map `count` is the number of child values (a map
// counts keys and values separately, 2 per entry); for UInt/NegInt `int_value` is the value.
struct MpHeader {
  MpKind kind = MpKind::Invalid;
  uint8_t header_len = 0;
  uint64_t payload = 0;
  uint64_t count = 0;
  uint64_t uint_value = 0;
  int64_t int_value = 0;
};

// Bytes needed for the header that starts with `first` (1..9); 0 for the never-used 0xc1.
size_t mpHeaderLength(uint8_t first);
// Decodes a header; `p` must hold mpHeaderLength(p[0]) bytes.
MpHeader mpDecodeHeader(const uint8_t* p);

enum class MpStatus : uint8_t { NeedMore, Done, Error };

// Incremental skipper over exactly one msgpack value. Fed new bytes only (it never looks back),
// so a value split across any number of reads costs O(bytes). Bounded: nesting depth, and every
// declared length or element count is checked against `max_bytes` before it is believed, so a
// hostile "4 GiB" header is refused at once instead of being waited for.
class MsgpackSkipper {
 public:
  static constexpr uint32_t kMaxDepthLimit = 64;

  explicit MsgpackSkipper(uint32_t max_depth = 32, uint64_t max_bytes = UINT64_MAX);
  void reset(uint64_t max_bytes);
  // Consumes bytes of `data` (stops right after the value ends); `consumed` is set either way.
  MpStatus feed(std::span<const uint8_t> data, size_t& consumed);
  const char* error() const { return error_; }
  // True when the error is a size cap (declared length/count over max_bytes), not bad syntax.
  bool overLimit() const { return over_limit_; }
  uint64_t total() const { return total_; }

 private:
  MpStatus fail(const char* why, bool over_limit = false);
  MpStatus onHeader(const MpHeader& h);
  void completeOne();

  uint32_t max_depth_;
  uint64_t max_bytes_ = UINT64_MAX;
  uint64_t total_ = 0;  // bytes consumed so far for this value
  uint64_t skip_ = 0;   // payload bytes still to skip
  uint32_t depth_ = 0;  // number of open containers
  uint8_t hdr_have_ = 0;
  bool done_ = false;
  bool over_limit_ = false;
  std::array<uint8_t, 9> hdr_{};
  std::array<uint64_t, kMaxDepthLimit + 1> pending_{};  // values still expected per level
  const char* error_ = nullptr;
};

// Reader over a complete, in-memory msgpack buffer (a message already delimited by the framer
// or a decrypted/decompressed payload). Every method returns false on malformed or short input.
class MsgpackReader {
 public:
  explicit MsgpackReader(std::span<const uint8_t> in) : in_(in) {}
  size_t offset() const { return pos_; }
  std::span<const uint8_t> rest() const { return in_.subspan(pos_); }

  bool readHeader(MpHeader& out);
  bool skipValue();
  // A Raw/str/bin value (nil reads as empty).
  bool readBytes(std::span<const uint8_t>& out);
  // An integer field as go-msgpack decodes it into a Go int (nil reads as 0).
  bool readInt(int64_t& out);
  // A map header: nil reads as an empty map (go-msgpack leaves the struct zero).
  bool readMapHeader(uint64_t& entries);
  // A map key as a short string (longer or non-string keys are skipped and reported as "").
  bool readKey(std::string_view& key);

 private:
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
};

}  // namespace sidecrypt::filters::gossip
