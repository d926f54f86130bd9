#include "filters/gossip/msgpack.h"

#include <algorithm>

namespace sidecrypt::filters::gossip {

namespace {

uint64_t readBe(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) {
    v = (v << 8) | p[i];
  }
  return v;
}

int64_t signExtend(uint64_t v, size_t bytes) {
  const unsigned shift = 64 - static_cast<unsigned>(bytes) * 8;
  return static_cast<int64_t>(v << shift) >> shift;
}

MpHeader make(MpKind kind, size_t header_len) {
  MpHeader h;
  h.kind = kind;
  h.header_len = static_cast<uint8_t>(header_len);
  return h;
}

MpHeader sized(MpKind kind, const uint8_t* p, size_t len_bytes) {
  MpHeader h = make(kind, 1 + len_bytes);
  uint64_t n = readBe(p + 1, len_bytes);
  if (kind == MpKind::Array) {
    h.count = n;
  } else if (kind == MpKind::Map) {
    h.count = n * 2;
  } else {
    h.payload = kind == MpKind::Ext ? n + 1 : n;
  }
  return h;
}

MpHeader unsignedInt(const uint8_t* p, size_t bytes) {
  MpHeader h = make(MpKind::UInt, 1 + bytes);
  h.uint_value = readBe(p + 1, bytes);
  h.int_value = static_cast<int64_t>(h.uint_value);
  return h;
}

MpHeader signedInt(const uint8_t* p, size_t bytes) {
  int64_t v = signExtend(readBe(p + 1, bytes), bytes);
  MpHeader h = make(v < 0 ? MpKind::NegInt : MpKind::UInt, 1 + bytes);
  h.int_value = v;
  h.uint_value = static_cast<uint64_t>(v);
  return h;
}

MpHeader fixext(size_t data) {
  MpHeader h = make(MpKind::Ext, 1);
  h.payload = data + 1;
  return h;
}

// The non-fix formats 0xc0..0xdf: kind, how the bytes after the type byte are read, and how
// many there are (for FixExt: the data size; the ext type byte counts as payload).
enum class Op : uint8_t { Plain, Length, UInt, SInt, FixExt };
struct VarFormat {
  MpKind kind;
  Op op;
  uint8_t n;
};
constexpr std::array<VarFormat, 32> kVar = {{
    {MpKind::Nil, Op::Plain, 0},    {MpKind::Invalid, Op::Plain, 0},  // c0 c1
    {MpKind::Bool, Op::Plain, 0},   {MpKind::Bool, Op::Plain, 0},     // c2 c3
    {MpKind::Raw, Op::Length, 1},   {MpKind::Raw, Op::Length, 2},     // c4 c5 bin
    {MpKind::Raw, Op::Length, 4},   {MpKind::Ext, Op::Length, 1},     // c6 bin, c7 ext
    {MpKind::Ext, Op::Length, 2},   {MpKind::Ext, Op::Length, 4},     // c8 c9 ext
    {MpKind::Float, Op::Plain, 4},  {MpKind::Float, Op::Plain, 8},    // ca cb
    {MpKind::UInt, Op::UInt, 1},    {MpKind::UInt, Op::UInt, 2},      // cc cd
    {MpKind::UInt, Op::UInt, 4},    {MpKind::UInt, Op::UInt, 8},      // ce cf
    {MpKind::UInt, Op::SInt, 1},    {MpKind::UInt, Op::SInt, 2},      // d0 d1
    {MpKind::UInt, Op::SInt, 4},    {MpKind::UInt, Op::SInt, 8},      // d2 d3
    {MpKind::Ext, Op::FixExt, 1},   {MpKind::Ext, Op::FixExt, 2},     // d4 d5
    {MpKind::Ext, Op::FixExt, 4},   {MpKind::Ext, Op::FixExt, 8},     // d6 d7
    {MpKind::Ext, Op::FixExt, 16},  {MpKind::Raw, Op::Length, 1},     // d8, d9 str8
    {MpKind::Raw, Op::Length, 2},   {MpKind::Raw, Op::Length, 4},     // da db raw16/32
    {MpKind::Array, Op::Length, 2}, {MpKind::Array, Op::Length, 4},   // dc dd
    {MpKind::Map, Op::Length, 2},   {MpKind::Map, Op::Length, 4},     // de df
}};

MpHeader decodeFix(uint8_t b) {
  if (b <= 0x7f) {
    MpHeader h = make(MpKind::UInt, 1);
    h.uint_value = b;
    h.int_value = b;
    return h;
  }
  if (b >= 0xe0) {
    MpHeader h = make(MpKind::NegInt, 1);
    h.int_value = static_cast<int64_t>(b) - 256;  // negative fixint: 0xe0..0xff = -32..-1
    h.uint_value = static_cast<uint64_t>(h.int_value);
    return h;
  }
  if (b <= 0x8f) {
    MpHeader h = make(MpKind::Map, 1);
    h.count = static_cast<uint64_t>(b & 0x0f) * 2;
    return h;
  }
  if (b <= 0x9f) {
    MpHeader h = make(MpKind::Array, 1);
    h.count = b & 0x0f;
    return h;
  }
  MpHeader h = make(MpKind::Raw, 1);  // fixraw a0..bf
  h.payload = b & 0x1f;
  return h;
}

}  // namespace

size_t mpHeaderLength(uint8_t first) {
  if (first < 0xc0 || first >= 0xe0) {
    return 1;
  }
  const VarFormat& f = kVar[first - 0xc0];
  if (f.kind == MpKind::Invalid) {
    return 0;
  }
  return f.op == Op::FixExt ? 1 : size_t{1} + f.n;
}

MpHeader mpDecodeHeader(const uint8_t* p) {
  const uint8_t b = p[0];
  if (b < 0xc0 || b >= 0xe0) {
    return decodeFix(b);
  }
  const VarFormat& f = kVar[b - 0xc0];
  switch (f.op) {
    case Op::Length:
      return sized(f.kind, p, f.n);
    case Op::UInt:
      return unsignedInt(p, f.n);
    case Op::SInt:
      return signedInt(p, f.n);
    case Op::FixExt:
      return fixext(f.n);
    case Op::Plain:
      break;
  }
  return f.kind == MpKind::Invalid ? MpHeader{} : make(f.kind, size_t{1} + f.n);
}

// ---- MsgpackSkipper ------------------------------------------------------------------------

MsgpackSkipper::MsgpackSkipper(uint32_t max_depth, uint64_t max_bytes)
    : max_depth_(max_depth > kMaxDepthLimit ? kMaxDepthLimit : max_depth) {
  reset(max_bytes);
}

void MsgpackSkipper::reset(uint64_t max_bytes) {
  max_bytes_ = max_bytes;
  total_ = 0;
  skip_ = 0;
  depth_ = 0;
  hdr_have_ = 0;
  done_ = false;
  over_limit_ = false;
  pending_[0] = 1;
  error_ = nullptr;
}

MpStatus MsgpackSkipper::fail(const char* why, bool over_limit) {
  error_ = why;
  over_limit_ = over_limit;
  return MpStatus::Error;
}

void MsgpackSkipper::completeOne() {
  // One value at the current level is finished; close every container that is now complete.
  --pending_[depth_];
  while (depth_ > 0 && pending_[depth_] == 0) {
    --depth_;
    --pending_[depth_];
  }
  done_ = depth_ == 0 && pending_[0] == 0;
}

MpStatus MsgpackSkipper::onHeader(const MpHeader& h) {
  const uint64_t budget = max_bytes_ - total_;  // total_ <= max_bytes_ always holds here
  if (h.kind == MpKind::Invalid) {
    return fail("invalid msgpack type byte 0xc1");
  }
  if (h.kind == MpKind::Array || h.kind == MpKind::Map) {
    // Every child needs at least one byte: a count larger than the budget can never fit.
    if (h.count > budget) {
      return fail("msgpack container count exceeds the size limit", true);
    }
    if (h.count == 0) {
      completeOne();
      return MpStatus::NeedMore;
    }
    if (depth_ + 1 > max_depth_) {
      return fail("msgpack nesting too deep");
    }
    ++depth_;
    pending_[depth_] = h.count;
    return MpStatus::NeedMore;
  }
  if (h.payload > budget) {
    return fail("msgpack length exceeds the size limit", true);
  }
  skip_ = h.payload;
  if (skip_ == 0) {
    completeOne();
  }
  return MpStatus::NeedMore;
}

MpStatus MsgpackSkipper::feed(std::span<const uint8_t> data, size_t& consumed) {
  consumed = 0;
  if (error_ != nullptr) {
    return MpStatus::Error;
  }
  while (!done_ && consumed < data.size()) {
    if (skip_ > 0) {
      const uint64_t n = std::min<uint64_t>(skip_, data.size() - consumed);
      skip_ -= n;
      consumed += n;
      total_ += n;
      if (skip_ == 0) {
        completeOne();
      }
      continue;
    }
    if (total_ >= max_bytes_) {
      return fail("msgpack value exceeds the size limit", true);
    }
    hdr_[hdr_have_++] = data[consumed++];
    ++total_;
    const size_t need = mpHeaderLength(hdr_[0]);
    if (need == 0) {
      return fail("invalid msgpack type byte 0xc1");
    }
    if (hdr_have_ < need) {
      continue;
    }
    hdr_have_ = 0;
    if (onHeader(mpDecodeHeader(hdr_.data())) == MpStatus::Error) {
      return MpStatus::Error;
    }
  }
  return done_ ? MpStatus::Done : MpStatus::NeedMore;
}

// ---- MsgpackReader -------------------------------------------------------------------------

bool MsgpackReader::readHeader(MpHeader& out) {
  if (pos_ >= in_.size()) {
    return false;
  }
  const size_t need = mpHeaderLength(in_[pos_]);
  if (need == 0 || in_.size() - pos_ < need) {
    return false;
  }
  out = mpDecodeHeader(in_.data() + pos_);
  pos_ += need;
  return true;
}

bool MsgpackReader::skipValue() {
  MsgpackSkipper skipper(MsgpackSkipper::kMaxDepthLimit, in_.size() - pos_);
  size_t used = 0;
  if (skipper.feed(in_.subspan(pos_), used) != MpStatus::Done) {
    return false;
  }
  pos_ += used;
  return true;
}

bool MsgpackReader::readBytes(std::span<const uint8_t>& out) {
  MpHeader h;
  if (!readHeader(h)) {
    return false;
  }
  if (h.kind == MpKind::Nil) {
    out = {};
    return true;
  }
  if (h.kind != MpKind::Raw || h.payload > in_.size() - pos_) {
    return false;
  }
  out = in_.subspan(pos_, h.payload);
  pos_ += h.payload;
  return true;
}

bool MsgpackReader::readInt(int64_t& out) {
  MpHeader h;
  if (!readHeader(h)) {
    return false;
  }
  if (h.kind == MpKind::Nil) {
    out = 0;
    return true;
  }
  if (h.kind == MpKind::NegInt) {
    out = h.int_value;
    return true;
  }
  if (h.kind != MpKind::UInt) {
    return false;
  }
  // A uint64 above INT64_MAX would wrap negative in a Go int: report it as such.
  out = static_cast<int64_t>(h.uint_value);
  return true;
}

bool MsgpackReader::readMapHeader(uint64_t& entries) {
  MpHeader h;
  if (!readHeader(h)) {
    return false;
  }
  if (h.kind == MpKind::Nil) {
    entries = 0;
    return true;
  }
  if (h.kind != MpKind::Map) {
    return false;
  }
  entries = h.count / 2;
  return true;
}

bool MsgpackReader::readKey(std::string_view& key) {
  const size_t start = pos_;
  MpHeader h;
  if (!readHeader(h)) {
    return false;
  }
  if (h.kind == MpKind::Raw && h.payload <= in_.size() - pos_) {
    key = std::string_view(reinterpret_cast<const char*>(in_.data() + pos_), h.payload);
    pos_ += h.payload;
    return true;
  }
  pos_ = start;
  key = {};
  return skipValue();
}

}  // namespace sidecrypt::filters::gossip
