#include "filters/gossip/dskit_stream_processor.h"

#include <string>
#include <utility>

#include "filters/gossip/dskit_packet.h"

namespace sidecrypt::filters::gossip {

DskitStreamProcessor::DskitStreamProcessor(Origin origin,
                                           std::unique_ptr<GossipStreamFilter> stream,
                                           keyring::KeySetConstSharedPtr keys,
                                           std::shared_ptr<GossipDatagramFilter> packets,
                                           DskitLimits limits)
    : origin_(origin),
      dialler_(origin == Origin::Outbound ? Side::Agent : Side::Peer),
      stream_(std::make_unique<GossipStreamProcessor>(std::move(stream), std::move(keys),
                                                      origin == Origin::Inbound)),
      packets_(std::move(packets)),
      limits_(limits) {}

// Outbound: the peer is dialled at once (nothing reaches it before the agent's unit is sealed).
// Inbound: only once something vetted is queued toward the agent.
StreamVerdict DskitStreamProcessor::waiting() const {
  StreamVerdict v;
  v.dial = v.ready = origin_ == Origin::Outbound || forwarded_;
  return v;
}

StreamVerdict DskitStreamProcessor::start() {
  return waiting();
}

StreamVerdict DskitStreamProcessor::onData(Side from, Buffer& in, bool end_stream, StreamIo& io) {
  if (mode_ == Mode::Deciding) {
    if (from != dialler_) {
      // dskit's receiver speaks only after a stream request: bytes before the type byte are not
      // dskit's.
      if (!in.empty()) {
        return StreamVerdict::closeWith(CloseReason::Refused,
                                        "dskit: the dialled side spoke first");
      }
      StreamVerdict v = waiting();
      forwardEnd(from, in, end_stream, v);
      return v;
    }
    if (in.empty()) {
      // A bare connect-and-close (a port probe) is a normal end.
      return end_stream ? StreamVerdict::closeWith(CloseReason::Done, "") : waiting();
    }
    const uint8_t type = in.readable()[0];
    if (type == kDskitStream) {
      mode_ = Mode::Stream;
      in.drain(1);
      if (origin_ == Origin::Outbound) {
        io.to_peer.append(kDskitStream);
      }
    } else if (type == kDskitPacket) {
      mode_ = Mode::Packet;
    } else {
      return StreamVerdict::closeWith(CloseReason::Refused, describe(DskitError::UnknownType));
    }
  }
  if (mode_ == Mode::Stream) {
    return onStream(from, in, end_stream, io);
  }
  if (mode_ == Mode::Packet) {
    return onPacket(from, in, end_stream, io);
  }
  // Done: the packet went on; the receiver has nothing to say.
  StreamVerdict v = waiting();
  if (!in.empty()) {
    return StreamVerdict::closeWith(CloseReason::Refused, "dskit: bytes after a packet");
  }
  forwardEnd(from, in, end_stream, v);
  return v;
}

StreamVerdict DskitStreamProcessor::onStream(Side from, Buffer& in, bool end_stream, StreamIo& io) {
  if (origin_ == Origin::Outbound) {
    return stream_->onData(from, in, end_stream, io);
  }
  // Inbound: the [2] goes to the agent in front of the first bytes the gossip filter lets
  // through, never before (nothing is queued toward an upstream that is not wanted yet).
  StreamIo inner{to_agent_, io.to_peer};
  StreamVerdict v = stream_->onData(from, in, end_stream, inner);
  if (!to_agent_.empty()) {
    if (!forwarded_) {
      io.to_agent.append(kDskitStream);
      forwarded_ = true;
    }
    io.to_agent.move(to_agent_);
  }
  return v;
}

StreamVerdict DskitStreamProcessor::onPacket(Side from, Buffer& in, bool end_stream, StreamIo& io) {
  if (from != dialler_) {
    if (!in.empty()) {
      return StreamVerdict::closeWith(CloseReason::Refused,
                                      "dskit: the receiver of a packet wrote bytes");
    }
    StreamVerdict v = waiting();
    forwardEnd(from, in, end_stream, v);
    return v;
  }
  const DskitParse p = parseDskit(in.readable(), end_stream, limits_);
  if (p.status == DskitStatus::Error) {
    return StreamVerdict::closeWith(
        p.error == DskitError::TooLarge
            ? CloseReason::Refused
            : (end_stream ? CloseReason::Truncated : CloseReason::Refused),
        describe(p.error));
  }
  if (p.status != DskitStatus::Packet) {
    return waiting();  // the packet ends at the dialler's FIN
  }
  DskitPacketResult r =
      origin_ == Origin::Outbound ? sealDskitPacket(*packets_, p) : openDskitPacket(*packets_, p);
  packet_result_ = r.packet;
  in.clear();
  mode_ = Mode::Done;
  if (r.packet.verdict != Verdict::Forward) {
    std::string why = std::string("dskit packet: ") + describe(r.packet.reason);
    if (*r.packet.detail != '\0') {
      why += std::string(": ") + r.packet.detail;
    }
    return StreamVerdict::closeWith(CloseReason::Refused, std::move(why));
  }
  (origin_ == Origin::Outbound ? io.to_peer : io.to_agent).append(r.frame);
  forwarded_ = true;
  StreamVerdict v = waiting();
  (origin_ == Origin::Outbound ? v.end_to_peer : v.end_to_agent) = true;
  return v;
}

}  // namespace sidecrypt::filters::gossip
