#include "filters/stream_driver.h"

#include <utility>

namespace sidecrypt::filters {

const char* describe(CloseReason r) {
  switch (r) {
#define SIDECRYPT_CLOSE_REASON_NAME(e, name) \
  case CloseReason::e:                       \
    return #name;
    SIDECRYPT_CLOSE_REASONS(SIDECRYPT_CLOSE_REASON_NAME)
#undef SIDECRYPT_CLOSE_REASON_NAME
  }
  return "unknown";
}

const char* describe(StreamDriver::Phase p) {
  switch (p) {
    case StreamDriver::Phase::Waiting:
      return "waiting";
    case StreamDriver::Phase::Dialling:
      return "dialling";
    case StreamDriver::Phase::Open:
      return "open";
    case StreamDriver::Phase::Draining:
      return "draining";
  }
  return "unknown";
}

StreamDriver::StreamDriver(StreamFilterPtr filter) : filter_(std::move(filter)) {
  apply(filter_->start());
}

void StreamDriver::apply(StreamVerdict v) {
  end_to_agent_ = end_to_agent_ || v.end_to_agent;
  end_to_peer_ = end_to_peer_ || v.end_to_peer;
  // What the filter wanted stays wanted, even in the call that closes (an outbound RPC whose TLS
  // client cannot start still dials: its refusal is flushed toward the agent).
  // A filter is never ready before it wants its upstream: the relay needs both ends.
  dialled_ = dialled_ || v.dial || v.ready;
  opened_ = opened_ || v.ready;
  if (phase_ == Phase::Draining) {
    return;
  }
  if (v.close) {
    phase_ = Phase::Draining;
    reason_ = v.reason;
    detail_ = std::move(v.detail);
    return;
  }
  phase_ = opened_ ? Phase::Open : dialled_ ? Phase::Dialling : Phase::Waiting;
}

void StreamDriver::step(Side from, Buffer& in, bool eof, StreamIo& io) {
  bool& delivered = from == Side::Agent ? agent_eof_delivered_ : peer_eof_delivered_;
  if (phase_ == Phase::Draining || (in.empty() && (!eof || delivered))) {
    return;
  }
  StreamVerdict v = filter_->onData(from, in, eof, io);
  if (eof) {
    delivered = true;
  }
  apply(std::move(v));
}

void StreamDriver::run(StreamIo io, Buffer& agent_in, bool agent_eof, Buffer& peer_in,
                       bool peer_eof) {
  step(Side::Agent, agent_in, agent_eof, io);
  step(Side::Peer, peer_in, peer_eof, io);
}

}  // namespace sidecrypt::filters
