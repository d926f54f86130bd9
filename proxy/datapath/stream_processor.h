#pragma once

#include <memory>
#include <string>

#include "filters/common/buffer.h"
#include "filters/filter.h"
#include "filters/gossip/gossip_stream_filter.h"

namespace sidecrypt::proxy {

using filters::Buffer;
using filters::gossip::StreamIo;

using filters::StreamProcessor;  // filters/filter.h
using filters::StreamProcessorPtr;

// Bytes pass unchanged (the "plaintext" rollout stage, or traffic that is already encrypted).
class PassthroughProcessor final : public StreamProcessor {
 public:
  bool onAgentData(Buffer& in, bool, StreamIo& io) override {
    io.to_peer.move(in);
    return true;
  }
  bool onPeerData(Buffer& in, bool, StreamIo& io) override {
    io.to_agent.move(in);
    return true;
  }
  std::string closeReason() const override { return {}; }
  const char* name() const override { return "passthrough"; }
};

// memberlist TCP streams through the gossip filter (one message each way, sealed/opened).
class GossipStreamProcessor final : public StreamProcessor {
 public:
  GossipStreamProcessor(std::unique_ptr<filters::gossip::GossipStreamFilter> f,
                        filters::keyring::KeySetConstSharedPtr keys, bool inbound)
      : filter_(std::move(f)), keys_(std::move(keys)), inbound_(inbound) {}
  bool onAgentData(Buffer& in, bool end_stream, StreamIo& io) override {
    return filter_->onAgentData(in, end_stream, io) == filters::gossip::FilterStatus::Continue;
  }
  bool onPeerData(Buffer& in, bool end_stream, StreamIo& io) override {
    const bool ok =
        filter_->onPeerData(in, end_stream, io) == filters::gossip::FilterStatus::Continue;
    forwarded_ = forwarded_ || !io.to_agent.empty();
    return ok;
  }
  // Inbound: connect to the agent only once the peer's message passed the filter, so refused
  // streams (garbage, plaintext under verify_incoming) never reach the agent at all.
  bool wantsUpstream() const override { return !inbound_ || forwarded_; }
  // Inbound: the peer has proved itself once its message passed. Until then the session bounds
  // the wait (memberlist's TCPTimeout, SessionInfo::ready_deadline_ms), reads in small chunks and
  // counts the partial message against the shared preamble budget.
  bool ready() const override { return !inbound_ || forwarded_; }
  std::string closeReason() const override {
    std::string r = filters::gossip::describe(filter_->closeReason());
    if (*filter_->closeDetail() != '\0') {
      r += std::string(": ") + filter_->closeDetail();
    }
    return r;
  }
  const char* name() const override { return "gossip"; }
  const filters::gossip::GossipStreamFilter& filter() const { return *filter_; }
  // The ring this connection started with (keyIndex() refers to it).
  const filters::keyring::KeySetConstSharedPtr& keys() const { return keys_; }

 private:
  std::unique_ptr<filters::gossip::GossipStreamFilter> filter_;
  filters::keyring::KeySetConstSharedPtr keys_;
  bool inbound_;
  bool forwarded_ = false;
};

}  // namespace sidecrypt::proxy
