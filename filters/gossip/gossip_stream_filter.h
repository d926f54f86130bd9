#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>

#include "filters/common/buffer.h"
#include "filters/filter.h"
#include "filters/gossip/gossip_codec.h"
#include "filters/gossip/gossip_policy.h"
#include "filters/gossip/message_inspector.h"
#include "filters/gossip/stream_framer.h"
#include "filters/keyring/key_set.h"

namespace sidecrypt::filters::gossip {

using filters::FilterStatus;  // filters/filter.h

// Close: flush io.to_agent / io.to_peer (they may hold an errMsg reply), then close both sides.
enum class StreamCloseReason : uint8_t {
  None,
  Malformed,   // not a valid stream message (docs/spec/gossip-wire.md §6 step 5), bad msgpack, bad
               // label header
  AuthFailed,  // an encrypted frame did not open with any key
  PlaintextRejected,     // plaintext while verify_incoming is on (docs/spec/gossip-wire.md §4.2)
  EncryptedWithoutKeys,  // an encrypted frame but no keys (docs/spec/gossip-wire.md §4.2)
  TooLarge,         // over a HEAD cap or the configured maximum (docs/spec/gossip-wire.md §5.3)
  CrashShape,       // would panic a 0.2.2 agent (docs/spec/gossip-wire.md §9)
  LabelMismatch,    // missing/different label (docs/spec/gossip-wire.md §3.6)
  UnexpectedBytes,  // a second message in one direction (docs/spec/gossip-wire.md §5.1)
  Truncated,        // the stream ended inside a message
  Internal,         // sealing failed (should not happen)
};
const char* describe(StreamCloseReason r);

using filters::StreamIo;  // filters/filter.h

// The gossip TCP filter for one connection (docs/spec/gossip-wire.md §4.2, §5, §6). memberlist
// streams carry exactly one message each way, so each direction frames one whole plaintext message
// and seals it as one frame, or opens one frame and yields its plaintext. Output depends only on
// the bytes, never on how reads split them. Allocates per connection only (buffers grow once).
class GossipStreamFilter {
 public:
  GossipStreamFilter(Origin origin, keyring::KeySetConstSharedPtr keys,
                     std::shared_ptr<const GossipPolicy> policy,
                     std::shared_ptr<GossipStreamStats> stats,
                     NonceSource& nonces = systemNonceSource());

  // Bytes from the agent toward the peer. Consumes a complete message from `in` (leaves a
  // partial one there), writes the sealed frame (or plaintext) to io.to_peer.
  FilterStatus onAgentData(Buffer& in, bool end_stream, StreamIo& io);
  // Bytes from the peer toward the agent: opens a frame or vets plaintext into io.to_agent; a
  // refused request on an Inbound connection gets memberlist's errMsg in io.to_peer.
  FilterStatus onPeerData(Buffer& in, bool end_stream, StreamIo& io);

  // Sees each complete plaintext message as it passes (from_agent: before sealing; from the
  // peer: after opening and vetting), for observers in the proxy (membership, key queries).
  using MessageTap = std::function<void(bool from_agent, std::span<const uint8_t> msg)>;
  void setMessageTap(MessageTap tap) { tap_ = std::move(tap); }

  StreamCloseReason closeReason() const { return close_reason_; }
  const char* closeDetail() const { return close_detail_; }
  // Ring index that opened the peer's frame (-1: none yet / plaintext).
  int keyIndex() const { return key_index_; }
  // verify_incoming is off and the peer's plaintext was accepted only because of that.
  bool shadowRefused() const { return shadow_refused_; }

 private:
  // One direction's one message (a memberlist stream carries exactly one each way). Moves
  // forward only; a close leaves it where it was (close_reason_ says the filter is closed).
  enum class MessageState : uint8_t {
    Reading,  // the message is arriving (the peer's: its first byte is not vetted yet)
    Vetted,   // the peer's only: its first byte passed the label/encryption checks
    Done,     // the message was handled; any byte after it is refused
  };
  struct Direction {
    StreamFramer framer;
    size_t scanned = 0;  // bytes of `in` already fed to the framer
    MessageState state = MessageState::Reading;
  };

  bool encrypting() const { return keys_ && !keys_->empty(); }
  FilterStatus close(StreamCloseReason reason, const char* detail);
  FilterStatus preamble(Direction& d, Buffer& in, bool end_stream, GossipStreamCounters& c,
                        FramerResult& res);
  FilterStatus framerError(const FramerResult& res, GossipStreamCounters& c, StreamIo& io);
  void forwardAgentMessage(std::span<const uint8_t> msg, uint8_t type, StreamIo& io);
  FilterStatus firstByteChecks(const Buffer& in, StreamIo& io);
  FilterStatus openPeerFrame(std::span<const uint8_t> frame, StreamIo& io);
  FilterStatus acceptPeerPlaintext(std::span<const uint8_t> msg, StreamIo& io);
  FilterStatus inspected(const InspectResult& r);
  // memberlist's errMsg for a refused request: toward the peer (sealed if we seal) on Inbound,
  // toward the agent in plaintext on Outbound (so it logs "remote error: ..." not "EOF").
  void replyError(std::string_view text, StreamIo& io);

  Origin origin_;
  keyring::KeySetConstSharedPtr keys_;
  std::shared_ptr<const GossipPolicy> policy_;
  std::shared_ptr<GossipStreamStats> stats_;
  NonceSource& nonces_;
  Direction agent_;
  Direction peer_;
  StreamFramer inner_;  // re-frames decrypted plaintext so the caps apply inside frames too
  StreamInspector inspector_;
  bool shadow_refused_ = false;
  int key_index_ = -1;
  MessageTap tap_;
  StreamCloseReason close_reason_ = StreamCloseReason::None;
  const char* close_detail_ = "";
};

}  // namespace sidecrypt::filters::gossip
