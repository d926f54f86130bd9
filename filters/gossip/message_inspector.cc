#include "filters/gossip/message_inspector.h"

#include <cstring>
#include <string_view>

#include "filters/gossip/msgpack.h"

namespace sidecrypt::filters::gossip {

namespace {

constexpr size_t kCrcHeaderBytes = 5;  // [12][crc32 BE]
constexpr uint8_t kCompoundCountLimit = 128;

InspectResult verdict(InspectVerdict v, const char* reason) {
  return {v, reason};
}

// Collects decompressed bytes into a fixed buffer; stops when it is full.
class SpanSink final : public LzwSink {
 public:
  explicit SpanSink(std::span<uint8_t> out) : out_(out) {}
  bool write(std::span<const uint8_t> bytes) override {
    if (bytes.size() > out_.size() - len_) {
      overflow_ = true;
      return false;
    }
    std::memcpy(out_.data() + len_, bytes.data(), bytes.size());
    len_ += bytes.size();
    return true;
  }
  size_t length() const { return len_; }
  bool overflow() const { return overflow_; }

 private:
  std::span<uint8_t> out_;
  size_t len_ = 0;
  bool overflow_ = false;
};

// Streams decompressed bytes through a framer without keeping them.
class FramerSink final : public LzwSink {
 public:
  FramerSink(StreamFramer& framer, uint64_t max) : framer_(framer), max_(max) {}
  bool write(std::span<const uint8_t> bytes) override {
    total_ += bytes.size();
    if (total_ > max_) {
      overflow_ = true;
      return false;
    }
    if (last_.status == FramerStatus::NeedMore) {
      last_ = framer_.feed(bytes);
    }
    return last_.status != FramerStatus::Error;  // keep decoding after a Frame: LZW may still fail
  }
  uint64_t total() const { return total_; }
  bool overflow() const { return overflow_; }
  const FramerResult& last() const { return last_; }

 private:
  StreamFramer& framer_;
  uint64_t max_;
  uint64_t total_ = 0;
  bool overflow_ = false;
  FramerResult last_;
};

}  // namespace

bool parseCompress(std::span<const uint8_t> body, std::span<const uint8_t>& buf) {
  MsgpackReader r(body);
  uint64_t entries = 0;
  if (!r.readMapHeader(entries)) {
    return false;
  }
  int64_t algo = 0;
  buf = {};
  for (uint64_t i = 0; i < entries; ++i) {
    std::string_view key;
    if (!r.readKey(key)) {
      return false;
    }
    bool ok = true;
    if (key == "Algo") {
      ok = r.readInt(algo);
    } else if (key == "Buf") {
      ok = r.readBytes(buf);
    } else {
      ok = r.skipValue();
    }
    if (!ok) {
      return false;
    }
  }
  return algo == 0;  // lzwAlgo; anything else: "Cannot decompress unknown algorithm"
}

// ---- packets -------------------------------------------------------------------------------

PacketInspector::PacketInspector(size_t max_decompressed)
    : lzw_(makeSecure<LzwDecoder>()), scratch_(max_decompressed), scratch_cap_(max_decompressed) {}

InspectResult PacketInspector::inspect(std::span<const uint8_t> packet) {
  // ingestPacket: a hasCrc layer is only recognised outermost and with >= 5 bytes. The CRC
  // itself is not checked: a mismatch is dropped by the agent, a crash shape inside must not
  // reach it either way.
  if (packet.size() >= kCrcHeaderBytes && packet[0] == kHasCrcMsg) {
    return command(packet.subspan(kCrcHeaderBytes), 0);
  }
  return command(packet, 0);
}

InspectResult PacketInspector::command(std::span<const uint8_t> msg, int depth) {
  if (msg.empty()) {
    // handleCommand reads buf[0] unchecked (fixed in memberlist v0.2.4).
    return verdict(InspectVerdict::CrashShape, "empty message reaches handleCommand");
  }
  if (depth > kMaxDepth) {
    return verdict(InspectVerdict::Malformed, "message nesting too deep");
  }
  switch (msg[0]) {
    case kCompoundMsg:
      return compound(msg.subspan(1), depth);
    case kCompressMsg:
      return compressed(msg.subspan(1), depth);
    default:
      return {};
  }
}

InspectResult PacketInspector::compound(std::span<const uint8_t> body, int depth) {
  // util.go decodeCompoundMessage (docs/spec/gossip-wire.md §3.4).
  if (body.empty()) {
    return verdict(InspectVerdict::Malformed, "compound without a count");
  }
  const uint8_t count = body[0];
  if (count >= kCompoundCountLimit) {
    // 0.2.2 computes count*2 in 8 bits: the length check passes on short input and the table
    // read panics, or the parts are cut at the wrong offset. No real sender builds this.
    return verdict(InspectVerdict::CrashShape, "compound count >= 128");
  }
  body = body.subspan(1);
  const size_t table = size_t{count} * 2;
  if (body.size() < table) {
    return verdict(InspectVerdict::Malformed, "compound length table truncated");
  }
  auto parts = body.subspan(table);
  for (size_t i = 0; i < count; ++i) {
    const size_t len = (size_t{body[2 * i]} << 8) | body[2 * i + 1];
    if (parts.size() < len) {
      break;  // this and later parts are dropped by the agent ("truncated messages")
    }
    const InspectResult r = command(parts.first(len), depth + 1);
    if (!r.ok()) {
      return r;
    }
    parts = parts.subspan(len);
  }
  return {};
}

InspectResult PacketInspector::compressed(std::span<const uint8_t> body, int depth) {
  std::span<const uint8_t> buf;
  if (!parseCompress(body, buf)) {
    return verdict(InspectVerdict::Malformed, "undecodable compress message");
  }
  if (scratch_busy_) {
    // Real senders compress once, outermost (docs/spec/gossip-wire.md §3.1); nesting would need a
    // second scratch.
    return verdict(InspectVerdict::Malformed, "nested compression");
  }
  SpanSink sink(std::span<uint8_t>(scratch_.data(), scratch_cap_));
  const LzwStatus st = lzw_->decode(buf, sink);
  if (sink.overflow()) {
    return verdict(InspectVerdict::TooLarge, "decompressed packet over the limit");
  }
  if (st != LzwStatus::Ok) {
    return verdict(InspectVerdict::Malformed, "corrupt LZW stream");
  }
  if (sink.length() == 0) {
    return verdict(InspectVerdict::CrashShape, "compressed payload decodes to nothing");
  }
  scratch_busy_ = true;
  const InspectResult r =
      command(std::span<const uint8_t>(scratch_.data(), sink.length()), depth + 1);
  scratch_busy_ = false;
  return r;
}

// ---- streams -------------------------------------------------------------------------------

StreamInspector::StreamInspector(FramerLimits limits) : limits_(limits) {}

InspectResult StreamInspector::inspect(std::span<const uint8_t> msg) {
  if (msg.empty()) {
    // readStream indexes plain[0] after decrypting (an empty frame kills 0.2.2).
    return verdict(InspectVerdict::CrashShape, "empty stream message");
  }
  if (msg[0] == static_cast<uint8_t>(MsgType::PushPull)) {
    return shortVsn(msg);
  }
  if (msg[0] != kCompressMsg) {
    return {};
  }
  std::span<const uint8_t> buf;
  if (!parseCompress(msg.subspan(1), buf)) {
    return verdict(InspectVerdict::Malformed, "undecodable compress message");
  }
  if (!lzw_) {
    lzw_ = makeSecure<LzwDecoder>();
  }
  // readStream: decomp[0] is the real type; then exactly the grammar of an unwrapped message.
  StreamFramer inner(
      FramerGrammar{.allow_label = false, .allow_encrypted = false, .allow_compress = false},
      limits_);
  FramerSink sink(inner, kMaxDecompressed);
  const LzwStatus st = lzw_->decode(buf, sink);
  if (sink.overflow()) {
    return verdict(InspectVerdict::TooLarge, "decompressed stream message over 40 MiB");
  }
  if (sink.last().status == FramerStatus::Error) {
    return verdict(
        isSizeError(sink.last().error) ? InspectVerdict::TooLarge : InspectVerdict::Malformed,
        describe(sink.last().error));
  }
  if (st != LzwStatus::Ok) {
    return verdict(InspectVerdict::Malformed, "corrupt LZW stream");
  }
  if (sink.total() == 0) {
    return verdict(InspectVerdict::CrashShape, "compressed stream message decodes to nothing");
  }
  if (sink.last().status != FramerStatus::Frame) {
    return verdict(InspectVerdict::Malformed, "decompressed message is truncated");
  }
  return shortVsn(msg);  // memberlist compresses its push/pulls by default
}

namespace {

// Finds the node states memberlist would index past the end of their Vsn (see the header).
class VsnCheck final : public MessageVisitor {
 public:
  void onMessage(const Message& m) override {
    if (m.type == MsgType::PushPull) {
      join_ = m.join;
    }
  }
  void onNodeState(const NodeState& s) override {
    constexpr size_t kVsnLen = 6;
    const size_t n = s.vsn.size();
    short_ = short_ || (s.decoded && n < kVsnLen && (n > 0 || join_));
  }
  bool found() const { return short_; }

 private:
  bool join_ = false;
  bool short_ = false;
};

}  // namespace

InspectResult StreamInspector::shortVsn(std::span<const uint8_t> msg) {
  if (!walker_) {
    WalkLimits limits;
    limits.max_stream_decompressed = kMaxDecompressed;
    walker_ = std::make_unique<MessageWalker>(limits);
  }
  VsnCheck check;
  walker_->walkStream(msg, check, /*in_frame=*/true);
  if (check.found()) {
    return verdict(InspectVerdict::CrashShape,
                   "push/pull node state with a short Vsn (memberlist indexes 6 bytes)");
  }
  return {};
}

}  // namespace sidecrypt::filters::gossip
