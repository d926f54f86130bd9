#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <span>
#include <string>
#include <utility>

#include "filters/common/buffer.h"

// The types every filter shares (docs/architecture.md §2): a datagram filter transforms one UDP
// payload in its slot; a stream filter (StreamFilter) transforms the two byte streams of one
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

// Why a stream ended: one enum from the filter through the session to the logs, the metrics and
// the census (as spiped's PROTO_CONN_* reasons or Envoy's close types). A text detail rides
// beside it for the logs only. Every reason in one list, REASON(Enum, name): `name` is what
// describe() returns and the one spelling of the reason's session counter (the stats log line's
// `tcp closed`, /status `tcp_closed`, /metrics sidecrypt_tcp_sessions_closed_total{reason}).
#define SIDECRYPT_CLOSE_REASONS(REASON)                                         \
  /* Both directions finished, or a bare connect-and-close (a port probe). */   \
  REASON(Done, done)                                                            \
  /* A socket was reset or its pipe broke (ECONNRESET, EPIPE): routine. */      \
  REASON(Reset, reset)                                                          \
  /* The filter refused the bytes (bad frame, TLS failure, Consul's reason). */ \
  REASON(Refused, refused)                                                      \
  /* A side ended inside a message. */                                          \
  REASON(Truncated, truncated)                                                  \
  /* The accepted side ended before its first message was complete. */          \
  REASON(PreambleCut, preamble_cut)                                             \
  /* The preamble was not complete by its deadline. */                          \
  REASON(ReadyDeadline, ready_deadline)                                         \
  /* The upstream connect failed. */                                            \
  REASON(ConnectFailed, connect_failed)                                         \
  /* The upstream connect did not complete in time. */                          \
  REASON(ConnectTimeout, connect_timeout)                                       \
  /* The shared preamble budget closed the greediest session. */                \
  REASON(PreambleBudget, preamble_budget)                                       \
  /* At the open-file limit: closed for a lighter source's connection. */       \
  REASON(DescriptorLimit, descriptor_limit)                                     \
  /* Any other socket error. */                                                 \
  REASON(SocketError, socket_error)                                             \
  /* sidecrypt is stopping. */                                                  \
  REASON(Stopping, stopping)

enum class CloseReason : uint8_t {
#define SIDECRYPT_CLOSE_REASON_ENUM(e, name) e,
  SIDECRYPT_CLOSE_REASONS(SIDECRYPT_CLOSE_REASON_ENUM)
#undef SIDECRYPT_CLOSE_REASON_ENUM
};
// Every reason in list order; a reason's value is its index here.
inline constexpr CloseReason kCloseReasons[] = {
#define SIDECRYPT_CLOSE_REASON_VALUE(e, name) CloseReason::e,
    SIDECRYPT_CLOSE_REASONS(SIDECRYPT_CLOSE_REASON_VALUE)
#undef SIDECRYPT_CLOSE_REASON_VALUE
};
inline constexpr size_t kCloseReasonCount = std::size(kCloseReasons);
const char* describe(CloseReason r);
// Done and Reset are normal ends (counted closed_ok, not logged as refusals, not a failed
// stream in the census); every other reason is an error.
constexpr bool routine(CloseReason r) {
  return r == CloseReason::Done || r == CloseReason::Reset;
}

enum class Side : uint8_t { Agent, Peer };

// What a stream filter wants after one call (it returns this instead of the session polling it).
// Bytes to deliver are already in io.to_agent / io.to_peer; the session writes them out.
struct StreamVerdict {
  bool dial = false;          // connect the upstream now (the session dials once)
  bool ready = false;         // the preamble is complete (steady-state reads, deadline stops)
  bool end_to_agent = false;  // FIN toward the agent once its queued bytes are out
  bool end_to_peer = false;   // FIN toward the peer once its queued bytes are out
  bool close = false;         // flush both outputs (an error reply may be queued), then close
  CloseReason reason = CloseReason::Done;
  std::string detail;  // for the logs: what the filter saw

  static StreamVerdict closeWith(CloseReason r, std::string why) {
    StreamVerdict v;
    v.close = true;
    v.reason = r;
    v.detail = std::move(why);
    return v;
  }
};

// Which filter a StreamFilter is, for the one place that reads what a closed connection turned
// out to be (the proxy's census): a switch on this instead of RTTI. Each kind but Other belongs to
// exactly one final class (its `of()` gives the typed view).
enum class StreamFilterKind : uint8_t {
  Other,   // nothing to read at close (passthrough, test filters)
  Gossip,  // filters/gossip/gossip_stream_processor.h
  Rpc,     // filters/rpc_tls/rpc_processor.h
};

// The contract of a stream filter (docs/architecture.md §2): it sees the bytes one side sent
// (`in`, with end_stream once that side's FIN arrived), consumes what it can (leaving a partial
// unit in `in`), appends its output to io.to_agent / io.to_peer and returns what it wants. Pure:
// no sockets, no clocks; filters/stream_driver.h runs one for a session, a test or a fuzzer.
class StreamFilter {
 public:
  virtual ~StreamFilter() = default;
  // Before any byte: what the filter wants at once (a passthrough dials and is ready).
  virtual StreamVerdict start() = 0;
  virtual StreamVerdict onData(Side from, Buffer& in, bool end_stream, StreamIo& io) = 0;
  virtual const char* name() const = 0;
  virtual StreamFilterKind kind() const { return StreamFilterKind::Other; }
  // A filter whose preamble goes on after the upstream connected (outbound RPC TLS: the remote
  // must finish its side of the handshake): the session closes the connection if the filter is
  // not ready this long after the connect completed. 0: no deadline.
  virtual uint64_t upstreamReadyDeadlineMs() const { return 0; }
};
using StreamFilterPtr = std::unique_ptr<StreamFilter>;

// The FIN rule of a filter that does not map end-of-stream itself: a side's FIN goes to the other
// side once everything before it was consumed; a side that ends inside a message is truncated.
inline void forwardEnd(Side from, const Buffer& in, bool end_stream, StreamVerdict& v) {
  if (!end_stream || v.close) {
    return;
  }
  if (!in.empty()) {
    v = StreamVerdict::closeWith(CloseReason::Truncated, "stream ended inside a message");
    return;
  }
  (from == Side::Agent ? v.end_to_peer : v.end_to_agent) = true;
}

}  // namespace sidecrypt::filters
