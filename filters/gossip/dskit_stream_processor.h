#pragma once

#include <cstdint>
#include <memory>

#include "filters/common/buffer.h"
#include "filters/filter.h"
#include "filters/gossip/dskit_frame.h"
#include "filters/gossip/gossip_datagram_filter.h"
#include "filters/gossip/gossip_stream_processor.h"

namespace sidecrypt::filters::gossip {

// One TCP connection of dskit's memberlist transport (docs/spec/dskit-transport.md), as a
// StreamFilter. The dialler's first byte decides:
//   - 2, a stream: the byte is passed on and the rest is a memberlist stream, run through the
//     gossip stream filter (`stream`, made here by the caller's factory) exactly as on a Consul
//     gossip port (docs/spec/gossip-wire.md §5);
//   - 1, a packet: the whole connection is read up to the dialler's FIN (bounded by `limits`),
//     its payload sealed (agent dialled) or opened (peer dialled) through `packets`, the shared
//     datagram filter of the pool, and the frame sent on with a FIN (dskit_packet.h);
//   - anything else is refused, as dskit itself closes it (0x16 is dskit's own TLS: not ours).
// Inbound, nothing reaches the agent before the peer's packet opened or its stream message passed
// the gossip filter; the upstream is dialled only then.
class DskitStreamProcessor final : public StreamFilter {
 public:
  DskitStreamProcessor(Origin origin, std::unique_ptr<GossipStreamFilter> stream,
                       keyring::KeySetConstSharedPtr keys,
                       std::shared_ptr<GossipDatagramFilter> packets, DskitLimits limits = {});

  StreamVerdict start() override;
  StreamVerdict onData(Side from, Buffer& in, bool end_stream, StreamIo& io) override;
  const char* name() const override { return "dskit"; }

  enum class Mode : uint8_t { Deciding, Stream, Packet, Done };
  Mode mode() const { return mode_; }
  // The datagram filter's verdict on the packet, once one was handled.
  const PacketResult& packetResult() const { return packet_result_; }

 private:
  StreamVerdict onStream(Side from, Buffer& in, bool end_stream, StreamIo& io);
  StreamVerdict onPacket(Side from, Buffer& in, bool end_stream, StreamIo& io);
  StreamVerdict waiting() const;

  Origin origin_;
  Side dialler_;
  std::unique_ptr<GossipStreamProcessor> stream_;
  std::shared_ptr<GossipDatagramFilter> packets_;
  DskitLimits limits_;
  Mode mode_ = Mode::Deciding;
  bool forwarded_ = false;  // inbound: something reached the agent (the upstream is wanted)
  Buffer to_agent_;         // the gossip filter's output toward the agent, before the [2]
  PacketResult packet_result_;
};

}  // namespace sidecrypt::filters::gossip
