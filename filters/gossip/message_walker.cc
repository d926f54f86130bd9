#include "filters/gossip/message_walker.h"

#include <algorithm>
#include <cstring>

#include "filters/gossip/gossip_codec.h"
#include "filters/gossip/lzw_decoder.h"
#include "filters/gossip/message_fields.h"
#include "filters/gossip/message_inspector.h"
#include "filters/gossip/msgpack.h"

namespace sidecrypt::filters::gossip {

namespace {

constexpr size_t kCrcHeaderBytes = 5;  // [12][crc32 BE]

uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

uint8_t typeOf(MsgType t) {
  return static_cast<uint8_t>(t);
}

// Appends decompressed bytes to a vector, refusing to grow past `cap`.
class VectorSink final : public LzwSink {
 public:
  VectorSink(SecureBuffer& out, size_t cap) : out_(out), cap_(cap) { out_.clear(); }
  bool write(std::span<const uint8_t> bytes) override {
    if (bytes.size() > cap_ - out_.size()) {
      overflow_ = true;
      return false;
    }
    out_.insert(out_.end(), bytes.begin(), bytes.end());
    return true;
  }
  bool overflow() const { return overflow_; }

 private:
  SecureBuffer& out_;
  size_t cap_;
  bool overflow_ = false;
};

Message messageAt(std::span<const uint8_t> msg, int depth) {
  Message m;
  m.type = static_cast<MsgType>(msg[0]);
  m.depth = depth;
  m.bytes = msg;
  return m;
}

}  // namespace

struct MessageWalker::Walk {
  MessageVisitor& visitor;
  size_t decompress_budget;
  WalkResult result;
  bool stopped = false;

  void error(WalkError e, uint8_t type, int depth, uint64_t detail = 0) {
    ++result.errors;
    if (result.first_error == WalkError::None) {
      result.first_error = e;
    }
    visitor.onError(WalkIssue{e, type, depth, detail});
  }
  // Counts one leaf message; false (reported once) when over the cap.
  bool count(uint32_t max, uint8_t type, int depth) {
    if (result.messages >= max) {
      if (!stopped) {
        error(WalkError::TooManyMessages, type, depth, max);
      }
      stopped = true;
      return false;
    }
    ++result.messages;
    return true;
  }
};

MessageWalker::MessageWalker(WalkLimits limits) : limits_(limits) {
  limits_.max_depth = std::clamp(limits_.max_depth, 0, 64);
  // One buffer per depth, created up front: spans into them must survive deeper decompressions.
  scratch_.resize(static_cast<size_t>(limits_.max_depth) + 1);
}
MessageWalker::~MessageWalker() = default;

bool MessageWalker::admit(Walk& w, std::span<const uint8_t> msg, int depth) {
  if (w.stopped) {
    return false;
  }
  if (msg.empty()) {
    w.error(WalkError::Empty, 0, depth);
    return false;
  }
  if (depth > limits_.max_depth) {
    w.error(WalkError::TooDeep, msg[0], depth);
    return false;
  }
  return true;
}

// ---- packets (docs/spec/gossip-wire.md §3.2) ----------------------------------------------------

WalkResult MessageWalker::walkPacket(std::span<const uint8_t> packet, MessageVisitor& visitor) {
  Walk w{visitor, limits_.max_total_decompressed, {}};
  if (packet.size() >= kCrcHeaderBytes && packet[0] == typeOf(MsgType::HasCrc)) {
    LayerInfo layer;
    layer.type = MsgType::HasCrc;
    layer.bytes = packet;
    layer.crc = be32(packet.data() + 1);
    const uint32_t actual = crc32Ieee(packet.subspan(kCrcHeaderBytes));
    layer.crc_ok = actual == layer.crc;
    visitor.enterLayer(layer);
    if (layer.crc_ok) {
      packetCommand(w, packet.subspan(kCrcHeaderBytes), 1);
    } else {
      w.error(WalkError::BadCrc, typeOf(MsgType::HasCrc), 0, actual);
    }
    visitor.leaveLayer(layer);
  } else {
    packetCommand(w, packet, 0);
  }
  return w.result;
}

void MessageWalker::packetCommand(Walk& w, std::span<const uint8_t> msg, int depth) {
  if (!admit(w, msg, depth)) {
    return;
  }
  switch (static_cast<MsgType>(msg[0])) {
    case MsgType::Compound:
      compound(w, msg, depth);
      return;
    case MsgType::Compress: {
      LayerInfo layer;
      layer.type = MsgType::Compress;
      layer.depth = depth;
      layer.bytes = msg;
      const auto* plain = decompress(w, msg, depth, limits_.max_decompressed);
      if (plain != nullptr) {
        layer.decompressed_len = plain->size();
        w.visitor.enterLayer(layer);
        packetCommand(w, *plain, depth + 1);
        w.visitor.leaveLayer(layer);
      }
      return;
    }
    case MsgType::Ping:
    case MsgType::IndirectPing:
    case MsgType::AckResp:
    case MsgType::Suspect:
    case MsgType::Alive:
    case MsgType::Dead:
    case MsgType::User:
    case MsgType::NackResp:
      leaf(w, msg, depth);
      return;
    default:  // includes hasCrc below the outermost layer and the stream-only types
      w.error(WalkError::UnsupportedType, msg[0], depth, msg[0]);
      return;
  }
}

void MessageWalker::compound(Walk& w, std::span<const uint8_t> msg, int depth) {
  // util.go decodeCompoundMessage (docs/spec/gossip-wire.md §3.4), with int arithmetic (0.2.2's
  // 8-bit count*2 is a bug).
  LayerInfo layer;
  layer.type = MsgType::Compound;
  layer.depth = depth;
  layer.bytes = msg;
  layer.parts = msg.size() > 1 ? msg[1] : 0;
  w.visitor.enterLayer(layer);
  const size_t table = size_t{layer.parts} * 2;
  if (msg.size() < 2 || msg.size() - 2 < table) {
    w.error(WalkError::CompoundTable, typeOf(MsgType::Compound), depth, layer.parts);
    w.visitor.leaveLayer(layer);
    return;
  }
  const auto lengths = msg.subspan(2, table);
  auto parts = msg.subspan(2 + table);
  for (size_t i = 0; i < layer.parts && !w.stopped; ++i) {
    const size_t len = (size_t{lengths[2 * i]} << 8) | lengths[2 * i + 1];
    if (parts.size() < len) {
      w.error(WalkError::CompoundTruncated, typeOf(MsgType::Compound), depth, layer.parts - i);
      break;
    }
    if (len == 0) {
      w.error(WalkError::CompoundEmptyPart, typeOf(MsgType::Compound), depth, i);
      continue;
    }
    packetCommand(w, parts.first(len), depth + 1);
    parts = parts.subspan(len);
  }
  w.visitor.leaveLayer(layer);
}

const SecureBuffer* MessageWalker::decompress(Walk& w, std::span<const uint8_t> msg, int depth,
                                              size_t cap) {
  auto fail = [&](WalkError e, uint64_t detail = 0) -> const SecureBuffer* {
    LayerInfo layer;
    layer.type = MsgType::Compress;
    layer.depth = depth;
    layer.bytes = msg;
    w.visitor.enterLayer(layer);
    w.error(e, typeOf(MsgType::Compress), depth, detail);
    w.visitor.leaveLayer(layer);
    return nullptr;
  };
  std::span<const uint8_t> buf;
  if (!parseCompress(msg.subspan(1), buf)) {
    return fail(WalkError::BadCompress);
  }
  if (!lzw_) {
    lzw_ = makeSecure<LzwDecoder>();
  }
  SecureBuffer& out = scratch_[static_cast<size_t>(depth)];  // depth <= max_depth
  const size_t limit = std::min(cap, w.decompress_budget);
  VectorSink sink(out, limit);
  const LzwStatus st = lzw_->decode(buf, sink);
  if (sink.overflow()) {
    return fail(WalkError::DecompressedTooLarge, limit);
  }
  if (st != LzwStatus::Ok) {
    return fail(WalkError::CorruptLzw);
  }
  if (out.empty()) {
    return fail(WalkError::DecompressedEmpty);
  }
  w.decompress_budget -= out.size();
  return &out;
}

void MessageWalker::leaf(Walk& w, std::span<const uint8_t> msg, int depth) {
  if (!w.count(limits_.max_messages, msg[0], depth)) {
    return;
  }
  Message m = messageAt(msg, depth);
  if (m.type == MsgType::User) {
    // Packet form: [8][opaque payload to the end] (docs/spec/gossip-wire.md §1), here a Serf
    // message (§7).
    m.payload = msg.subspan(1);
    m.decoded = true;
    detail::attachSerf(m, m.payload);
  } else {
    MsgpackReader r(msg.subspan(1));
    m.decoded = detail::decodeMessageBody(r, m);
  }
  w.visitor.onMessage(m);
  if (!m.decoded) {
    w.error(WalkError::BadBody, msg[0], depth);
  }
}

// ---- streams (docs/spec/gossip-wire.md §5, §6) --------------------------------------------------

WalkResult MessageWalker::walkStream(std::span<const uint8_t> msg, MessageVisitor& visitor,
                                     bool in_frame) {
  Walk w{visitor, limits_.max_stream_decompressed, {}};
  streamCommand(w, msg, 0, true, !in_frame);
  for (auto& s : scratch_) {
    if (s.capacity() > limits_.max_decompressed) {
      SecureBuffer().swap(s);  // do not keep a large stream buffer around
    }
  }
  return w.result;
}

void MessageWalker::streamCommand(Walk& w, std::span<const uint8_t> msg, int depth,
                                  bool allow_wrappers, bool allow_frame) {
  if (!admit(w, msg, depth)) {
    return;
  }
  const auto type = static_cast<MsgType>(msg[0]);
  if (type == MsgType::Encrypt && allow_frame) {
    encryptFrame(w, msg, depth);
  } else if (type == MsgType::Compress && allow_wrappers) {
    // readStream: decrypt, then decompress; inside there is neither a frame nor a compress.
    LayerInfo layer;
    layer.type = MsgType::Compress;
    layer.depth = depth;
    layer.bytes = msg;
    const auto* plain = decompress(w, msg, depth, limits_.max_stream_decompressed);
    if (plain != nullptr) {
      layer.decompressed_len = plain->size();
      w.visitor.enterLayer(layer);
      streamCommand(w, *plain, depth + 1, false, false);
      w.visitor.leaveLayer(layer);
    }
  } else if (type == MsgType::PushPull) {
    pushPull(w, msg, depth);
  } else if (type == MsgType::User) {
    streamUser(w, msg, depth);
  } else if (type == MsgType::Ping || type == MsgType::AckResp || type == MsgType::Err) {
    leaf(w, msg, depth);
  } else {
    w.error(WalkError::UnsupportedType, msg[0], depth, msg[0]);
  }
}

void MessageWalker::encryptFrame(Walk& w, std::span<const uint8_t> msg, int depth) {
  if (!w.count(limits_.max_messages, msg[0], depth)) {
    return;
  }
  Message m = messageAt(msg, depth);
  if (msg.size() >= kFrameHeaderBytes) {
    m.frame_len = be32(msg.data() + 1);
    m.frame_version = msg.size() > kFrameHeaderBytes ? msg[kFrameHeaderBytes] : -1;
    m.decoded = msg.size() - kFrameHeaderBytes == m.frame_len;
  }
  w.visitor.onMessage(m);
  if (!m.decoded) {
    w.error(WalkError::BadFrame, msg[0], depth, msg.size());
  }
}

void MessageWalker::pushPull(Walk& w, std::span<const uint8_t> msg, int depth) {
  if (!w.count(limits_.max_messages, msg[0], depth)) {
    return;
  }
  Message m = messageAt(msg, depth);
  MsgpackReader r(msg.subspan(1));
  WalkError problem = WalkError::None;
  uint64_t detail = 0;
  uint64_t states = 0;  // node states that are at least valid msgpack
  size_t states_at = 0;
  if (!detail::decodeMessageBody(r, m)) {
    problem = WalkError::BadBody;
  } else if (m.nodes > limits_.max_node_states) {
    problem = WalkError::TooManyNodes;
    detail = m.nodes;
  } else {
    states_at = 1 + r.offset();
    while (states < m.nodes && r.skipValue()) {
      ++states;
    }
    const auto rest = r.rest();
    if (states < m.nodes) {
      problem = WalkError::BadBody;
      detail = states;
    } else if (rest.size() < m.user_state_len) {
      problem = WalkError::TruncatedData;
      detail = m.user_state_len - rest.size();
    }
    m.user_state = rest.first(std::min<uint64_t>(rest.size(), m.user_state_len));
    m.decoded = problem == WalkError::None;
    if (m.decoded) {
      detail::attachSerf(m, m.user_state);
    }
  }
  w.visitor.onMessage(m);
  MsgpackReader nodes(msg.subspan(states_at));
  for (uint64_t i = 0; i < states; ++i) {
    NodeState s;
    s.index = static_cast<uint32_t>(i);
    s.decoded = detail::decodeNodeState(nodes, s);
    w.visitor.onNodeState(s);
    if (!s.decoded) {
      if (problem == WalkError::None) {
        problem = WalkError::BadBody;
        detail = i;
      }
      break;
    }
  }
  if (problem != WalkError::None) {
    w.error(problem, msg[0], depth, detail);
  }
}

void MessageWalker::streamUser(Walk& w, std::span<const uint8_t> msg, int depth) {
  // Stream form: [8][msgpack userMsgHeader{UserMsgLen}][UserMsgLen raw bytes]
  // (docs/spec/gossip-wire.md §1, §6).
  if (!w.count(limits_.max_messages, msg[0], depth)) {
    return;
  }
  Message m = messageAt(msg, depth);
  MsgpackReader r(msg.subspan(1));
  uint64_t len = 0;
  WalkError problem = WalkError::None;
  uint64_t detail = 0;
  if (!detail::decodeUserMsgHeader(r, len)) {
    problem = WalkError::BadBody;
  } else {
    const auto rest = r.rest();
    if (rest.size() < len) {
      problem = WalkError::TruncatedData;
      detail = len - rest.size();
    }
    m.payload = rest.first(std::min<uint64_t>(rest.size(), len));
    m.decoded = problem == WalkError::None;
    if (m.decoded) {
      detail::attachSerf(m, m.payload);
    }
  }
  w.visitor.onMessage(m);
  if (problem != WalkError::None) {
    w.error(problem, msg[0], depth, detail);
  }
}

}  // namespace sidecrypt::filters::gossip
