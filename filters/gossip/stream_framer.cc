#include "filters/gossip/stream_framer.h"

#include <algorithm>
#include <cstring>
#include <string_view>

namespace sidecrypt::filters::gossip {

namespace {

constexpr uint8_t kPingMsg = 0;
constexpr uint8_t kAckRespMsg = 2;
constexpr uint8_t kPushPullMsg = 6;
constexpr uint8_t kUserMsg = 8;

}  // namespace

const char* describe(FramerError e) {
  switch (e) {
    case FramerError::None:
      return "ok";
    case FramerError::InvalidType:
      return "not a memberlist stream message type";
    case FramerError::EmptyLabel:
      return "empty label header";
    case FramerError::Msgpack:
      return "malformed msgpack";
    case FramerError::HeaderNotMap:
      return "message header is not a msgpack map";
    case FramerError::HeaderTooLarge:
      return "message header map too large";
    case FramerError::BadHeaderValue:
      return "Nodes/UserStateLen/UserMsgLen is not an integer";
    case FramerError::NegativeLength:
      return "negative Nodes/UserStateLen/UserMsgLen";
    case FramerError::TooManyNodes:
      return "push/pull Nodes over the limit (1048576)";
    case FramerError::UserStateTooLarge:
      return "push/pull UserStateLen over the limit";
    case FramerError::UserMsgTooLarge:
      return "user message UserMsgLen over the limit";
    case FramerError::FrameTooLarge:
      return "encrypted frame length over the limit (20 MiB)";
    case FramerError::MessageTooLarge:
      return "message larger than the configured maximum";
  }
  return "unknown";
}

bool isSizeError(FramerError e) {
  switch (e) {
    case FramerError::TooManyNodes:
    case FramerError::UserStateTooLarge:
    case FramerError::UserMsgTooLarge:
    case FramerError::FrameTooLarge:
    case FramerError::MessageTooLarge:
    case FramerError::HeaderTooLarge:
      return true;
    default:
      return false;
  }
}

StreamFramer::StreamFramer(FramerGrammar grammar, FramerLimits limits)
    : grammar_(grammar), limits_(limits), skipper_(limits.max_depth) {}

void StreamFramer::reset() {
  phase_ = Phase::Start;
  pos_ = 0;
  left_ = 0;
  user_bytes_ = 0;
  label_length_ = 0;
  type_ = -1;
  error_ = FramerError::None;
  detail_ = 0;
  header_len_ = 0;
}

uint64_t StreamFramer::budget() const {
  return limits_.max_message_bytes > pos_ ? limits_.max_message_bytes - pos_ : 0;
}

void StreamFramer::fail(FramerError e, uint64_t detail) {
  phase_ = Phase::Failed;
  error_ = e;
  detail_ = detail;
}

void StreamFramer::finish() {
  phase_ = Phase::Done;
}

void StreamFramer::startRaw(uint64_t n) {
  if (n > budget()) {
    fail(FramerError::MessageTooLarge, pos_ + n);
    return;
  }
  left_ = n;
  phase_ = Phase::Raw;
  if (n == 0) {
    finish();
  }
}

void StreamFramer::onType(uint8_t t) {
  type_ = t;
  switch (t) {
    case kPingMsg:
    case kAckRespMsg:
    case kErrMsg:
      phase_ = Phase::Value;
      break;
    case kCompressMsg:
      if (!grammar_.allow_compress) {
        fail(FramerError::InvalidType, t);
        return;
      }
      phase_ = Phase::Value;
      break;
    case kPushPullMsg:
    case kUserMsg:
      phase_ = Phase::Header;
      header_len_ = 0;
      break;
    case kEncryptMsg:
      if (!grammar_.allow_encrypted) {
        fail(FramerError::InvalidType, t);
        return;
      }
      phase_ = Phase::FrameLen;
      header_len_ = 0;
      return;
    default:
      fail(FramerError::InvalidType, t);
      return;
  }
  skipper_.reset(budget());
}

void StreamFramer::parseHeader() {
  // docs/spec/gossip-wire.md §6 steps 3-4: iterate the map; read Nodes/UserStateLen (push/pull) or
  // UserMsgLen (user) as integers; nil or absent means 0; skip everything else. Last duplicate
  // wins, as in Go.
  MsgpackReader r(std::span<const uint8_t>(header_.data(), header_len_));
  uint64_t entries = 0;
  if (!r.readMapHeader(entries)) {
    fail(FramerError::HeaderNotMap);
    return;
  }
  int64_t nodes = 0;
  int64_t user = 0;
  for (uint64_t i = 0; i < entries; ++i) {
    std::string_view key;
    if (!r.readKey(key)) {
      fail(FramerError::Msgpack);
      return;
    }
    int64_t* target = nullptr;
    if (type_ == kPushPullMsg && key == "Nodes") {
      target = &nodes;
    } else if ((type_ == kPushPullMsg && key == "UserStateLen") ||
               (type_ == kUserMsg && key == "UserMsgLen")) {
      target = &user;
    }
    if (target == nullptr ? !r.skipValue() : !r.readInt(*target)) {
      fail(target == nullptr ? FramerError::Msgpack : FramerError::BadHeaderValue);
      return;
    }
  }
  if (nodes < 0 || user < 0) {
    fail(FramerError::NegativeLength, static_cast<uint64_t>(nodes < 0 ? nodes : user));
    return;
  }
  const auto n = static_cast<uint64_t>(nodes);
  const auto u = static_cast<uint64_t>(user);
  if (n > limits_.max_nodes) {
    fail(FramerError::TooManyNodes, n);
    return;
  }
  const uint64_t user_cap =
      type_ == kPushPullMsg ? limits_.max_user_state_bytes : limits_.max_user_msg_bytes;
  if (u > user_cap) {
    fail(type_ == kPushPullMsg ? FramerError::UserStateTooLarge : FramerError::UserMsgTooLarge, u);
    return;
  }
  // Every node state is at least one byte: refuse early what can never fit.
  if (n + u > budget()) {
    fail(FramerError::MessageTooLarge, pos_ + n + u);
    return;
  }
  user_bytes_ = u;
  if (n > 0) {
    left_ = n;
    phase_ = Phase::Nodes;
    skipper_.reset(budget());
  } else {
    startRaw(u);
  }
}

void StreamFramer::onValueDone() {
  switch (phase_) {
    case Phase::Value:
      finish();
      break;
    case Phase::Header:
      parseHeader();
      break;
    case Phase::Nodes:
      if (--left_ == 0) {
        startRaw(user_bytes_);
      } else {
        skipper_.reset(budget());
      }
      break;
    default:
      break;
  }
}

void StreamFramer::stepSkip(std::span<const uint8_t> data, size_t& used) {
  if (phase_ == Phase::Header) {
    // The skipper sees at most the header's remaining room, so a header that does not fit fails
    // at the same byte however the stream was cut (found by the framer fuzz target).
    const size_t room = header_.size() - header_len_;
    if (room == 0) {
      fail(FramerError::HeaderTooLarge, header_len_ + 1);
      return;
    }
    data = data.first(std::min(data.size(), room));
  }
  size_t n = 0;
  const MpStatus st = skipper_.feed(data, n);
  if (phase_ == Phase::Header) {
    std::memcpy(header_.data() + header_len_, data.data(), n);
    header_len_ += n;
  }
  used += n;
  pos_ += n;
  if (st == MpStatus::Error) {
    fail(skipper_.overLimit() ? FramerError::MessageTooLarge : FramerError::Msgpack, pos_);
    return;
  }
  if (st == MpStatus::Done) {
    onValueDone();
  }
}

void StreamFramer::step(std::span<const uint8_t> data, size_t& used) {
  const uint8_t b = data[0];
  switch (phase_) {
    case Phase::Start:
      if (b == kHasLabelMsg && grammar_.allow_label) {
        phase_ = Phase::LabelLen;
      } else {
        phase_ = Phase::Type;
        return;  // re-dispatch the same byte as the type
      }
      break;
    case Phase::LabelLen:
      if (b == 0) {
        fail(FramerError::EmptyLabel);
        return;
      }
      left_ = b;
      phase_ = Phase::LabelBody;
      break;
    case Phase::Type:
      onType(b);
      if (phase_ == Phase::Failed) {
        return;
      }
      break;
    case Phase::FrameLen:
      header_[header_len_++] = b;
      if (header_len_ == 4) {
        const uint32_t len = (uint32_t{header_[0]} << 24) | (uint32_t{header_[1]} << 16) |
                             (uint32_t{header_[2]} << 8) | header_[3];
        if (len > limits_.max_frame_bytes) {
          fail(FramerError::FrameTooLarge, len);
          return;
        }
        ++used;
        ++pos_;
        startRaw(len);
        return;
      }
      break;
    default:
      return;
  }
  ++used;
  ++pos_;
}

FramerResult StreamFramer::feed(std::span<const uint8_t> data) {
  size_t used = 0;
  while (used < data.size() && phase_ != Phase::Done && phase_ != Phase::Failed) {
    if (phase_ == Phase::Value || phase_ == Phase::Header || phase_ == Phase::Nodes) {
      stepSkip(data.subspan(used), used);
    } else if (phase_ == Phase::LabelBody || phase_ == Phase::Raw) {
      const uint64_t n = std::min<uint64_t>(left_, data.size() - used);
      used += n;
      pos_ += n;
      left_ -= n;
      if (left_ == 0) {
        if (phase_ == Phase::Raw) {
          finish();
        } else {
          label_length_ = pos_;
          phase_ = Phase::Type;
        }
      }
    } else {
      step(data.subspan(used), used);
    }
  }
  FramerResult r;
  r.consumed = used;
  if (phase_ == Phase::Done) {
    r.status = FramerStatus::Frame;
    r.length = pos_;
    r.label_length = label_length_;
    r.type = static_cast<uint8_t>(type_);
  } else if (phase_ == Phase::Failed) {
    r.status = FramerStatus::Error;
    r.error = error_;
    r.detail = detail_;
  }
  return r;
}

}  // namespace sidecrypt::filters::gossip
