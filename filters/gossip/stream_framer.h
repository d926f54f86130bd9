#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "filters/gossip/gossip_codec.h"
#include "filters/gossip/msgpack.h"

namespace sidecrypt::filters::gossip {

// Caps on one plaintext stream message. Defaults are memberlist HEAD's (docs/spec/gossip-wire.md
// §5.3, §10): 0.2.2 has none and dies on a hostile Nodes/UserStateLen/UserMsgLen (§9).
struct FramerLimits {
  uint64_t max_message_bytes = kFrameHeaderBytes + kMaxFrameBytes + 2 + kMaxLabelBytes;
  uint64_t max_nodes = uint64_t{1024} * 1024;
  uint64_t max_user_state_bytes = uint64_t{20} * 1024 * 1024;
  uint64_t max_user_msg_bytes = uint64_t{20} * 1024 * 1024;
  uint32_t max_frame_bytes = kMaxFrameBytes;
  uint32_t max_depth = 32;
};

// Which stream grammar applies (docs/spec/gossip-wire.md §6). The outermost message of a connection
// may be any of ping/ack/err/pushpull/user/compress/encrypted, optionally after one label header
// (dialled side only). Inside a decrypted frame there is no second frame; inside a decompressed
// message there is neither a frame nor another compress (memberlist readStream handles one of each,
// in order).
struct FramerGrammar {
  bool allow_label = false;
  bool allow_encrypted = true;
  bool allow_compress = true;
};

enum class FramerStatus : uint8_t { NeedMore, Frame, Error };

enum class FramerError : uint8_t {
  None,
  InvalidType,        // not a stream message type here (docs/spec/gossip-wire.md §6 step 5)
  EmptyLabel,         // [244][0]
  Msgpack,            // malformed msgpack (see msgpackError())
  HeaderNotMap,       // push/pull or user header is not a map
  HeaderTooLarge,     // header map larger than kMaxHeaderBytes
  BadHeaderValue,     // Nodes/UserStateLen/UserMsgLen is not an integer
  NegativeLength,     // ... or is negative
  TooManyNodes,       // Nodes > max_nodes
  UserStateTooLarge,  // UserStateLen > max_user_state_bytes
  UserMsgTooLarge,    // UserMsgLen > max_user_msg_bytes
  FrameTooLarge,      // encrypted frame L > max_frame_bytes ("Remote node state is larger...")
  MessageTooLarge,    // the message would exceed max_message_bytes
};
const char* describe(FramerError e);
// True for the errors that are size caps (counted as "oversize" rather than "malformed").
bool isSizeError(FramerError e);

struct FramerResult {
  FramerStatus status = FramerStatus::NeedMore;
  size_t consumed = 0;      // bytes of the span passed to feed() that were used
  size_t length = 0;        // Frame: total message bytes, label header included
  size_t label_length = 0;  // Frame: bytes of the leading [244][n][label] (0 if none)
  uint8_t type = 0;         // Frame: the message type byte (after the label)
  FramerError error = FramerError::None;
  uint64_t detail = 0;  // Error: the offending value (e.g. the frame length L)
};

// Incremental framer for one memberlist stream message (docs/spec/gossip-wire.md §6). It is fed
// only new bytes and never looks back, so feeding a stream one byte at a time gives exactly the
// result of feeding it whole, in O(bytes). After Frame or Error the result is sticky until reset().
class StreamFramer {
 public:
  static constexpr size_t kMaxHeaderBytes = 1024;  // real headers are ~30 bytes

  explicit StreamFramer(FramerGrammar grammar = {}, FramerLimits limits = {});
  FramerResult feed(std::span<const uint8_t> data);
  void reset();

  // The message type once read (after any label header), else -1. Lets a filter apply the
  // first-byte decisions of memberlist readStream (docs/spec/gossip-wire.md §4.2) before the
  // message is complete.
  int messageType() const { return type_; }
  size_t position() const { return pos_; }
  const char* msgpackError() const { return skipper_.error(); }

 private:
  enum class Phase : uint8_t {
    Start,
    LabelLen,
    LabelBody,
    Type,
    FrameLen,
    Value,
    Header,
    Nodes,
    Raw,
    Done,
    Failed
  };

  void step(std::span<const uint8_t> data, size_t& used);
  void onType(uint8_t t);
  void stepSkip(std::span<const uint8_t> data, size_t& used);
  void onValueDone();
  void parseHeader();
  void startRaw(uint64_t n);
  void finish();
  void fail(FramerError e, uint64_t detail = 0);
  uint64_t budget() const;

  FramerGrammar grammar_;
  FramerLimits limits_;
  MsgpackSkipper skipper_;
  Phase phase_ = Phase::Start;
  uint64_t pos_ = 0;
  uint64_t left_ = 0;  // LabelBody/Raw: bytes to go; Nodes: node states to go
  uint64_t user_bytes_ = 0;
  size_t label_length_ = 0;
  int type_ = -1;
  FramerError error_ = FramerError::None;
  uint64_t detail_ = 0;
  size_t header_len_ = 0;
  std::array<uint8_t, kMaxHeaderBytes> header_{};
};

}  // namespace sidecrypt::filters::gossip
