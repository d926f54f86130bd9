#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "filters/common/buffer.h"

// The types every filter shares (docs/architecture.md §2): a datagram filter transforms one UDP
// payload in its slot; a stream filter (StreamProcessor) transforms the two byte streams of one
// TCP connection. Filters never touch sockets or the event loop; the proxy's StreamSession and
// UdpRelay own those and run the filters.
namespace sidecrypt::filters {

// One UDP payload inside a packet slot with headroom and tailroom (docs/architecture.md §3), so a
// filter can grow it in place: sealing writes [version][nonce] into the headroom and the tag into
// the tailroom. A non-owning view: the proxy owns the slots.
struct Datagram {
  std::span<uint8_t> slot;  // the whole slot
  size_t offset = 0;        // payload start within the slot (= headroom)
  size_t length = 0;        // payload bytes

  static Datagram inSlot(std::span<uint8_t> slot, size_t headroom, size_t length) {
    return Datagram{slot, headroom, length};
  }
  std::span<uint8_t> data() const { return slot.subspan(offset, length); }
  size_t headroom() const { return offset; }
  size_t tailroom() const { return slot.size() - offset - length; }
  // Callers check headroom()/tailroom()/length first; these never validate.
  void prepend(size_t n) {
    offset -= n;
    length += n;
  }
  void extend(size_t n) { length += n; }
  void trimFront(size_t n) {
    offset += n;
    length -= n;
  }
  void trimBack(size_t n) { length -= n; }
};

enum class FilterStatus : uint8_t { Continue, Close };

// Where a stream filter's output goes (docs/architecture.md §2).
struct StreamIo {
  Buffer& to_agent;
  Buffer& to_peer;
};

// What a TCP session runs between its two sockets. Bytes from the agent go to the peer and back;
// a processor consumes what it can from `in` (leaving a partial unit there) and appends its output
// to io.to_peer / io.to_agent. Returning false closes the session after the outputs are flushed
// (a processor may have queued an error reply); closeReason() says why.
class StreamProcessor {
 public:
  virtual ~StreamProcessor() = default;
  virtual bool onAgentData(Buffer& in, bool end_stream, StreamIo& io) = 0;
  virtual bool onPeerData(Buffer& in, bool end_stream, StreamIo& io) = 0;
  virtual std::string closeReason() const = 0;
  virtual const char* name() const = 0;
  // Whether the session should connect its upstream socket yet. An RPC processor waits for the
  // agent's first byte (so a remote's 5 s deadline is not spent on our agent) or for a peer's
  // accepted inner type byte (so refused connections never reach the agent).
  virtual bool wantsUpstream() const { return true; }
  // Whether the protocol preamble (TLS handshake, type byte) is complete; the session closes
  // connections that are not ready by their deadline (Consul's rpc_handshake_timeout).
  virtual bool ready() const { return true; }
  // By default a side's FIN is forwarded to the other side once everything before it was
  // consumed. A processor that maps end-of-stream itself (TLS: FIN <-> close_notify) returns
  // true here and says when each side should get its FIN.
  virtual bool handlesEof() const { return false; }
  virtual bool endToAgent() const { return false; }
  virtual bool endToPeer() const { return false; }
};
using StreamProcessorPtr = std::unique_ptr<StreamProcessor>;

// Implemented (besides StreamProcessor) by a processor whose preamble goes on after the upstream
// connected: outbound RPC TLS, where the remote must finish its side of the handshake. The session
// closes the connection if the processor is not ready this long after the connect completed.
class UpstreamReadyDeadline {
 public:
  virtual uint64_t upstreamReadyDeadlineMs() const = 0;  // 0: no deadline

 protected:
  UpstreamReadyDeadline() = default;
  UpstreamReadyDeadline(const UpstreamReadyDeadline&) = default;
  UpstreamReadyDeadline& operator=(const UpstreamReadyDeadline&) = default;
  ~UpstreamReadyDeadline() = default;
};

}  // namespace sidecrypt::filters
