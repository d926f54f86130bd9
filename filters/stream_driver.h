#pragma once

#include <cstdint>
#include <string>

#include "filters/common/buffer.h"
#include "filters/filter.h"

namespace sidecrypt::filters {

// Runs one StreamFilter for one connection and folds what it returns into named states: the one
// loop that StreamSession, the unit tests and the fuzzers share (docs/architecture.md §2). Pure:
// the caller owns the four buffers and the sockets; the driver only says what they should do.
class StreamDriver {
 public:
  // A connection's life as its filter sees it. Phases only move forward.
  enum class Phase : uint8_t {
    Waiting,   // the filter does not want its upstream yet (an RPC first byte, an inbound message)
    Dialling,  // it wants the upstream; its preamble is not complete (a TLS handshake)
    Open,      // ready: the steady-state relay
    Draining,  // the filter closed: flush both outputs, then close both sides
  };

  explicit StreamDriver(StreamFilterPtr filter);

  // One round, as the session runs it after every read, write and connect: the agent's input,
  // then the peer's. A side's FIN reaches the filter once (again only if bytes are left).
  void run(StreamIo io, Buffer& agent_in, bool agent_eof, Buffer& peer_in, bool peer_eof);

  Phase phase() const { return phase_; }
  bool wantsUpstream() const { return dialled_; }
  // Whether the preamble completed (still true while draining a connection that was open).
  bool ready() const { return opened_; }
  bool draining() const { return phase_ == Phase::Draining; }
  bool endToAgent() const { return end_to_agent_; }
  bool endToPeer() const { return end_to_peer_; }
  bool endDelivered(Side s) const {
    return s == Side::Agent ? agent_eof_delivered_ : peer_eof_delivered_;
  }
  CloseReason reason() const { return reason_; }
  const std::string& detail() const { return detail_; }

  StreamFilter& filter() { return *filter_; }
  const StreamFilter& filter() const { return *filter_; }

 private:
  void apply(StreamVerdict v);
  void step(Side from, Buffer& in, bool eof, StreamIo& io);

  StreamFilterPtr filter_;
  Phase phase_ = Phase::Waiting;
  bool dialled_ = false;  // reached Dialling (Draining keeps it)
  bool opened_ = false;   // reached Open (Draining keeps it)
  bool agent_eof_delivered_ = false;
  bool peer_eof_delivered_ = false;
  bool end_to_agent_ = false;
  bool end_to_peer_ = false;
  CloseReason reason_ = CloseReason::Done;
  std::string detail_;
};

const char* describe(StreamDriver::Phase p);

}  // namespace sidecrypt::filters
