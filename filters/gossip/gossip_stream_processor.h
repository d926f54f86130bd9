#pragma once

#include <memory>
#include <string>
#include <utility>

#include "filters/filter.h"
#include "filters/gossip/gossip_stream_filter.h"
#include "filters/keyring/key_set.h"

namespace sidecrypt::filters::gossip {

// memberlist TCP streams through the gossip filter (one message each way, sealed/opened), as a
// StreamFilter.
class GossipStreamProcessor final : public StreamFilter {
 public:
  GossipStreamProcessor(std::unique_ptr<GossipStreamFilter> f, keyring::KeySetConstSharedPtr keys,
                        bool inbound)
      : filter_(std::move(f)), keys_(std::move(keys)), inbound_(inbound) {}

  StreamVerdict start() override { return verdict(); }
  StreamVerdict onData(Side from, Buffer& in, bool end_stream, StreamIo& io) override {
    FilterStatus status = FilterStatus::Continue;
    if (from == Side::Agent) {
      status = filter_->onAgentData(in, end_stream, io);
    } else {
      status = filter_->onPeerData(in, end_stream, io);
      forwarded_ = forwarded_ || !io.to_agent.empty();
    }
    StreamVerdict v = verdict();
    if (status != FilterStatus::Continue) {
      v.close = true;
      v.reason = filter_->closeReason() == StreamCloseReason::Truncated ? CloseReason::Truncated
                                                                        : CloseReason::Refused;
      v.detail = describe(filter_->closeReason());
      if (*filter_->closeDetail() != '\0') {
        v.detail += std::string(": ") + filter_->closeDetail();
      }
      return v;
    }
    forwardEnd(from, in, end_stream, v);
    return v;
  }
  const char* name() const override { return "gossip"; }
  StreamFilterKind kind() const override { return StreamFilterKind::Gossip; }
  // `f` as a gossip stream processor, or nullptr if it is another filter.
  static const GossipStreamProcessor* of(const StreamFilter& f) {
    return f.kind() == StreamFilterKind::Gossip ? static_cast<const GossipStreamProcessor*>(&f)
                                                : nullptr;
  }

  const GossipStreamFilter& filter() const { return *filter_; }
  // The ring this connection started with (keyIndex() refers to it).
  const keyring::KeySetConstSharedPtr& keys() const { return keys_; }

 private:
  // Inbound: connect to the agent only once the peer's message passed the filter, so refused
  // streams (garbage, plaintext under verify_incoming) never reach the agent at all; and the
  // peer has proved itself then. Until then the session bounds the wait (memberlist's
  // TCPTimeout), reads in small chunks and counts the partial message against the shared
  // preamble budget.
  StreamVerdict verdict() const {
    StreamVerdict v;
    v.dial = v.ready = !inbound_ || forwarded_;
    return v;
  }

  std::unique_ptr<GossipStreamFilter> filter_;
  keyring::KeySetConstSharedPtr keys_;
  bool inbound_;
  bool forwarded_ = false;  // inbound: the peer's message reached io.to_agent
};

}  // namespace sidecrypt::filters::gossip
