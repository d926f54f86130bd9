#include "filters/gossip/gossip_stream_filter.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <cstdio>
#include <utility>

namespace sidecrypt::filters::gossip {

namespace {

// memberlist 0.2.2 error texts a peer sees in an errMsg (docs/spec/gossip-wire.md §4.2; HEAD
// lower-cases them, §10).
constexpr std::string_view kNotEncrypted =
    "Encryption is configured but remote state is not encrypted";
constexpr std::string_view kNoEncryption =
    "Remote state is encrypted and encryption is not configured";

constexpr size_t kMaxErrText = 96;

FramerLimits agentLimits(FramerLimits limits) {
  // Whatever the agent sends must still fit one frame once sealed (L <= 20 MiB,
  // docs/spec/gossip-wire.md §5.2).
  limits.max_message_bytes =
      std::min<uint64_t>(limits.max_message_bytes, kMaxFrameBytes - kV0MinSealed);
  return limits;
}

StreamCloseReason closeFor(const FramerResult& res) {
  return isSizeError(res.error) ? StreamCloseReason::TooLarge : StreamCloseReason::Malformed;
}

}  // namespace

const char* describe(StreamCloseReason r) {
  switch (r) {
    case StreamCloseReason::None:
      return "none";
    case StreamCloseReason::Malformed:
      return "malformed stream message";
    case StreamCloseReason::AuthFailed:
      return "no installed key could decrypt the frame";
    case StreamCloseReason::PlaintextRejected:
      return "plaintext stream refused (verify_incoming)";
    case StreamCloseReason::EncryptedWithoutKeys:
      return "encrypted stream but no keys";
    case StreamCloseReason::TooLarge:
      return "stream message over a size limit";
    case StreamCloseReason::CrashShape:
      return "message shape that crashes memberlist 0.2.2";
    case StreamCloseReason::LabelMismatch:
      return "unacceptable stream label";
    case StreamCloseReason::UnexpectedBytes:
      return "bytes after the stream's one message";
    case StreamCloseReason::Truncated:
      return "stream ended inside a message";
    case StreamCloseReason::Internal:
      return "internal seal failure";
  }
  return "unknown";
}

GossipStreamFilter::GossipStreamFilter(Origin origin, keyring::KeySetConstSharedPtr keys,
                                       std::shared_ptr<const GossipPolicy> policy,
                                       std::shared_ptr<GossipStreamStats> stats,
                                       NonceSource& nonces)
    : origin_(origin),
      keys_(std::move(keys)),
      policy_(std::move(policy)),
      stats_(std::move(stats)),
      nonces_(nonces),
      agent_{StreamFramer(FramerGrammar{}, agentLimits(policy_->stream_limits))},
      // The label header comes only from the dialler (docs/spec/gossip-wire.md §3.6): the peer on
      // Inbound connections.
      peer_{StreamFramer(FramerGrammar{.allow_label = origin == Origin::Inbound},
                         policy_->stream_limits)},
      inner_(FramerGrammar{.allow_encrypted = false}, policy_->stream_limits),
      inspector_(policy_->stream_limits) {}

FilterStatus GossipStreamFilter::close(StreamCloseReason reason, const char* detail) {
  if (close_reason_ == StreamCloseReason::None) {
    close_reason_ = reason;
    close_detail_ = detail;
  }
  return FilterStatus::Close;
}

// Shared start of both directions: refuse bytes after the one message, feed the framer, and
// turn an end of stream inside a message into Truncated. Returns Continue with res.status ==
// Frame/Error/NeedMore for the caller to act on; anything else is final.
FilterStatus GossipStreamFilter::preamble(Direction& d, Buffer& in, bool end_stream,
                                          GossipStreamCounters& c, FramerResult& res) {
  if (close_reason_ != StreamCloseReason::None) {
    return FilterStatus::Close;
  }
  if (d.state == MessageState::Done) {
    if (in.empty()) {
      return FilterStatus::Continue;
    }
    ++c.unexpected_bytes;
    return close(StreamCloseReason::UnexpectedBytes, "a second message on a memberlist stream");
  }
  res = d.framer.feed(in.readable().subspan(d.scanned));
  d.scanned += res.consumed;
  if (res.status == FramerStatus::NeedMore && end_stream && !in.empty()) {
    ++c.truncated;
    return close(StreamCloseReason::Truncated, "stream ended inside a message");
  }
  return FilterStatus::Continue;
}

FilterStatus GossipStreamFilter::framerError(const FramerResult& res, GossipStreamCounters& c,
                                             StreamIo& io) {
  if (isSizeError(res.error)) {
    ++c.oversize;
  } else {
    ++c.malformed;
  }
  if (res.error == FramerError::FrameTooLarge && &c == &stats_->peer_to_agent) {
    // decryptRemoteState checks L before reading the body and answers (docs/spec/gossip-wire.md
    // §5.2).
    std::array<char, kMaxErrText> text{};
    const int n =
        std::snprintf(text.data(), text.size(), "Remote node state is larger than limit (%llu)",
                      static_cast<unsigned long long>(res.detail));
    replyError(std::string_view(text.data(), static_cast<size_t>(std::max(n, 0))), io);
  }
  return close(closeFor(res), describe(res.error));
}

FilterStatus GossipStreamFilter::onAgentData(Buffer& in, bool end_stream, StreamIo& io) {
  auto& c = stats_->agent_to_peer;
  FramerResult res;
  if (preamble(agent_, in, end_stream, c, res) == FilterStatus::Close) {
    return FilterStatus::Close;
  }
  if (agent_.state == MessageState::Done || res.status == FramerStatus::NeedMore) {
    return FilterStatus::Continue;
  }
  if (res.status == FramerStatus::Error) {
    return framerError(res, c, io);
  }
  forwardAgentMessage(in.peek(res.length), res.type, io);
  in.drain(res.length);
  agent_.state = MessageState::Done;
  agent_.scanned = 0;
  if (close_reason_ != StreamCloseReason::None) {
    return FilterStatus::Close;
  }
  if (!in.empty()) {
    ++c.unexpected_bytes;
    return close(StreamCloseReason::UnexpectedBytes, "a second message on a memberlist stream");
  }
  return FilterStatus::Continue;
}

void GossipStreamFilter::forwardAgentMessage(std::span<const uint8_t> msg, uint8_t type,
                                             StreamIo& io) {
  auto& c = stats_->agent_to_peer;
  const GossipPolicy& p = *policy_;
  if (type == kEncryptMsg) {
    io.to_peer.append(msg);  // a natively encrypting agent: already sealed, pass as is
    ++c.passthrough_sealed;
    return;
  }
  if (tap_) {
    tap_(true, msg);
  }
  if (origin_ == Origin::Outbound && !p.label.empty()) {
    // HEAD: the dialler writes the label header once, before the message (docs/spec/gossip-wire.md
    // §5.1).
    const size_t n = labelHeaderLength(p.label);
    io.to_peer.commit(writeLabelHeader(p.label, io.to_peer.reserve(n)));
  }
  if (!encrypting() || !p.verify_outgoing) {
    io.to_peer.append(msg);  // docs/spec/gossip-wire.md §4.3: outgoing off sends plaintext
    ++c.plaintext_forwarded;
    return;
  }
  // docs/spec/gossip-wire.md §5.2: the whole message as one frame, primary key, AAD = header (+
  // label).
  const size_t n = frameLength(p.seal_version, msg.size());
  if (sealFrame(keys_->primary(), p.seal_version, nonces_, msg, p.label, io.to_peer.reserve(n)) !=
      n) {
    close(StreamCloseReason::Internal, "sealing failed");
    return;
  }
  io.to_peer.commit(n);
  ++c.sealed;
}

FilterStatus GossipStreamFilter::onPeerData(Buffer& in, bool end_stream, StreamIo& io) {
  auto& c = stats_->peer_to_agent;
  FramerResult res;
  if (preamble(peer_, in, end_stream, c, res) == FilterStatus::Close) {
    return FilterStatus::Close;
  }
  if (peer_.state == MessageState::Done) {
    return FilterStatus::Continue;
  }
  if (peer_.state == MessageState::Reading && peer_.framer.messageType() >= 0) {
    if (firstByteChecks(in, io) == FilterStatus::Close) {
      return FilterStatus::Close;
    }
    peer_.state = MessageState::Vetted;
  }
  if (res.status == FramerStatus::NeedMore) {
    return FilterStatus::Continue;
  }
  if (res.status == FramerStatus::Error) {
    return framerError(res, c, io);
  }
  // Nothing of the peer's reaches the agent before its first byte passed the checks.
  assert(peer_.state == MessageState::Vetted);
  const auto msg = in.peek(res.length).subspan(res.label_length);
  const FilterStatus st =
      res.type == kEncryptMsg ? openPeerFrame(msg, io) : acceptPeerPlaintext(msg, io);
  in.drain(res.length);
  peer_.state = MessageState::Done;
  peer_.scanned = 0;
  if (st == FilterStatus::Close) {
    return st;
  }
  if (!in.empty()) {
    ++c.unexpected_bytes;
    return close(StreamCloseReason::UnexpectedBytes, "a second message on a memberlist stream");
  }
  return FilterStatus::Continue;
}

// memberlist readStream's decisions on the first message byte (docs/spec/gossip-wire.md §4.2),
// taken as soon as it is known: the real node answers before reading the rest, and so do we.
FilterStatus GossipStreamFilter::firstByteChecks(const Buffer& in, StreamIo& io) {
  auto& c = stats_->peer_to_agent;
  const GossipPolicy& p = *policy_;
  if (origin_ == Origin::Inbound) {
    // HEAD handleConn (docs/spec/gossip-wire.md §3.6). Unlike HEAD, skip_inbound_label_check still
    // accepts a matching header: during a migration a proxy sees both forms.
    const LabelHeader h = parseLabelHeader(in.readable());
    std::string_view got = p.skip_inbound_label_check ? std::string_view(p.label) : "";
    if (h.status == LabelHeader::Status::Present) {
      got = std::string_view(reinterpret_cast<const char*>(h.label.data()), h.label.size());
    }
    if (got != p.label) {
      ++c.label_mismatch;
      return close(StreamCloseReason::LabelMismatch, "discarding stream with unacceptable label");
    }
  }
  if (peer_.framer.messageType() == kEncryptMsg) {
    if (!encrypting()) {
      ++c.open_failed;
      replyError(kNoEncryption, io);
      return close(StreamCloseReason::EncryptedWithoutKeys, "encrypted stream, no keys");
    }
    return FilterStatus::Continue;
  }
  if (encrypting()) {
    if (p.verify_incoming) {
      ++c.plaintext_refused;
      replyError(kNotEncrypted, io);
      return close(StreamCloseReason::PlaintextRejected, "plaintext stream (verify_incoming)");
    }
    shadow_refused_ = true;  // verify_incoming=true would have refused this stream
  }
  return FilterStatus::Continue;
}

FilterStatus GossipStreamFilter::openPeerFrame(std::span<const uint8_t> frame, StreamIo& io) {
  auto& c = stats_->peer_to_agent;
  // Out of place, straight into the agent's buffer; committed only once vetted.
  const std::span<uint8_t> out = io.to_agent.reserve(frame.size());
  const OpenResult o = openFrame(*keys_, frame, policy_->label, out);
  if (!o.ok()) {
    ++c.open_failed;
    if (o.error == OpenError::BadPadding) {
      ++c.crash_shape_dropped;  // 0.2.2 panics in pkcs7decode (docs/spec/gossip-wire.md §3.3): no
                                // reply, just close
      return close(StreamCloseReason::CrashShape, "v0 padding invalid (0.2.2 panics)");
    }
    std::array<char, kMaxErrText> text{};
    const size_t n = formatOpenError(o, frame.size() - kFrameHeaderBytes, text);
    replyError(std::string_view(text.data(), n), io);
    return close(StreamCloseReason::AuthFailed, describe(o.error));
  }
  ++openedCounter(c, static_cast<size_t>(o.key_index));
  key_index_ = o.key_index;
  const std::span<const uint8_t> plain = out.first(o.length);
  // The opened plaintext is one complete message (docs/spec/gossip-wire.md §5.2); frame it again so
  // the HEAD caps and the crash-shape checks apply inside the encryption as well.
  inner_.reset();
  const FramerResult r = inner_.feed(plain);
  if (r.status == FramerStatus::Error) {
    ++(isSizeError(r.error) ? c.oversize : c.malformed);
    return close(closeFor(r), describe(r.error));
  }
  if (r.status == FramerStatus::NeedMore) {
    if (plain.empty()) {
      ++c.crash_shape_dropped;  // readStream indexes plain[0]
      return close(StreamCloseReason::CrashShape, "frame opens to an empty message");
    }
    ++c.malformed;
    return close(StreamCloseReason::Malformed, "truncated message inside the frame");
  }
  if (inspected(inspector_.inspect(plain.first(r.length))) == FilterStatus::Close) {
    return FilterStatus::Close;
  }
  if (tap_) {
    tap_(false, plain.first(r.length));
  }
  io.to_agent.commit(r.length);
  return FilterStatus::Continue;
}

FilterStatus GossipStreamFilter::acceptPeerPlaintext(std::span<const uint8_t> msg, StreamIo& io) {
  auto& c = stats_->peer_to_agent;
  if (inspected(inspector_.inspect(msg)) == FilterStatus::Close) {
    return FilterStatus::Close;
  }
  if (tap_) {
    tap_(false, msg);
  }
  io.to_agent.append(msg);
  ++c.plaintext_forwarded;
  if (shadow_refused_) {
    ++c.shadow_refused;
  }
  return FilterStatus::Continue;
}

FilterStatus GossipStreamFilter::inspected(const InspectResult& r) {
  if (r.ok() || !policy_->drop_crash_shapes) {
    return FilterStatus::Continue;
  }
  auto& c = stats_->peer_to_agent;
  switch (r.verdict) {
    case InspectVerdict::CrashShape:
      ++c.crash_shape_dropped;
      return close(StreamCloseReason::CrashShape, r.reason);
    case InspectVerdict::TooLarge:
      ++c.oversize;
      return close(StreamCloseReason::TooLarge, r.reason);
    default:
      ++c.malformed;
      return close(StreamCloseReason::Malformed, r.reason);
  }
}

void GossipStreamFilter::replyError(std::string_view text, StreamIo& io) {
  std::array<uint8_t, kErrMsgOverhead + kMaxErrText> plain{};
  const size_t n = encodeErrMsg(text.substr(0, kMaxErrText), plain);
  const std::span<const uint8_t> msg(plain.data(), n);
  ++stats_->peer_to_agent.error_replies;
  if (origin_ == Origin::Outbound) {
    io.to_agent.append(msg);  // our plaintext agent dialled: tell it why, in its own terms
    return;
  }
  // handleConn answers through the normal send path: sealed when it encrypts
  // (docs/spec/gossip-wire.md §4.2).
  const GossipPolicy& p = *policy_;
  if (!encrypting() || !p.verify_outgoing) {
    io.to_peer.append(msg);
    return;
  }
  const size_t len = frameLength(p.seal_version, n);
  if (sealFrame(keys_->primary(), p.seal_version, nonces_, msg, p.label, io.to_peer.reserve(len)) ==
      len) {
    io.to_peer.commit(len);
  }
}

}  // namespace sidecrypt::filters::gossip
