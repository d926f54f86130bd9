#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>

#include "filters/common/buffer.h"
#include "filters/common/direction.h"
#include "filters/filter.h"
#include "filters/stream_driver.h"
#include "proxy/net/address.h"

namespace sidecrypt::proxy {

using filters::Buffer;
using filters::CloseReason;
using filters::StreamDriver;
using filters::StreamFilter;
using filters::StreamFilterPtr;

using Origin = filters::Direction;  // who dialled: a peer, or our agent

struct SessionInfo {
  uint64_t id = 0;
  Origin origin = Origin::Outbound;
  std::string kind;                // "gossip", "rpc", "dskit"
  SocketAddress agent;             // the agent's end
  SocketAddress peer;              // the remote end
  uint64_t ready_deadline_ms = 0;  // 0: none; else close if the processor is not ready by then
};

// Memory that sessions hold for peers' unfinished first messages (the accepted side's input
// buffer while the processor is not ready: a gossip message still arriving, a TLS flight), summed
// over every session. Past `limit` the owner's on_over runs and closes sessions until the total
// is back under it; each session's own share is bounded by its processor's message caps.
struct PreambleBudget {
  size_t limit = 0;  // 0: none
  size_t used = 0;
  std::function<void()> on_over;
};

// One proxied TCP connection: the agent's socket and the peer's socket with a StreamFilter
// between them (docs/architecture.md §3). Reads straight into per-side buffers, which a side holds
// only while they hold bytes (small ones until the processor is ready, so stalled handshakes cost
// little memory; then blocks lent by a per-thread stock, so idle connections cost none and busy
// ones allocate none); one write in flight per socket; reading from a side stops while the other
// side has more than kHighWater bytes queued (backpressure) and resumes below kLowWater.
// Half-close: a side's FIN reaches the processor as end_stream, and once it consumed everything the
// other side gets a FIN after its queued bytes. No idle timeout (yamux, blocking queries and raft
// streams are long-lived); only the upstream connect and the preamble
// (SessionInfo::ready_deadline_ms from the accept, UpstreamReadyDeadline from the connect) are
// bounded. A connection whose accepted side ended (FIN) while the processor still did not want its
// upstream is closed at once: no byte can arrive that would ever make it connect. close() is the
// one teardown path; the object deletes itself after libuv closed both handles.
class StreamSession {
 public:
  static constexpr size_t kHighWater = 1 << 20;
  static constexpr size_t kLowWater = 256 << 10;
  static constexpr uint64_t kConnectTimeoutMs = 10'000;  // Consul's dial timeout

  // The session's own life (its filter's is StreamDriver::Phase). Moves forward only.
  enum class Phase : uint8_t {
    Accepted,   // reading the accepted side; the upstream is not dialled (the filter wants it not)
    Dialling,   // the upstream connect is in flight: nothing is written to the upstream yet
    Connected,  // both sockets connected
    Closing,    // close() ran; the object deletes itself once libuv closed the handles
  };

  // `detail` says in words what `reason` says in type (empty for a plain end).
  using ClosedCallback =
      std::function<void(StreamSession&, CloseReason reason, const std::string& detail)>;

  StreamSession(uv_loop_t* loop, SessionInfo info, StreamFilterPtr filter,
                ClosedCallback on_closed);
  StreamSession(const StreamSession&) = delete;
  StreamSession& operator=(const StreamSession&) = delete;

  // The handle the listener accepts into (already uv_tcp_init'ed by the session).
  uv_tcp_t* acceptedHandle();
  // Starts the session: takes `upstream_fd` (an unconnected socket from sockets.h) and connects
  // it to `connect_to` as soon as the processor wants its upstream; reading the accepted side
  // starts at once.
  void begin(int upstream_fd, const SocketAddress& connect_to);
  void close(CloseReason reason, std::string detail = {});
  // Counts this session's preamble buffer against `budget` (which must outlive the session).
  void setPreambleBudget(PreambleBudget* budget) { budget_ = budget; }
  // Called once, when the processor first says it is ready (a worker loop tells loop 0).
  void setReadyHook(std::function<void(const StreamSession&)> hook) { on_ready_ = std::move(hook); }
  size_t preambleBytes() const { return preamble_held_; }
  size_t preamblePeak() const { return preamble_peak_; }  // the most it ever held
  // Frees the calling thread's stock of spare steady-state buffers (tests measure without it).
  static void dropSpareBuffers();
  Phase phase() const { return phase_; }
  bool closing() const { return phase_ == Phase::Closing; }

  const SessionInfo& info() const { return info_; }
  const StreamFilter& filter() const { return driver_.filter(); }
  const StreamDriver& driver() const { return driver_; }
  uint64_t bytesFromAgent() const { return agent_.bytes_read; }
  uint64_t bytesFromPeer() const { return peer_.bytes_read; }

 private:
  enum class ReadState : uint8_t {
    Idle,     // not reading (the upstream before its connect completed)
    Reading,  // uv_read_start is active
    Paused,   // stopped by backpressure: the other side has too much queued
    Ended,    // its FIN arrived
  };
  enum class FinState : uint8_t { None, Wanted, Sent, Done };

  struct Endpoint {
    StreamSession* session = nullptr;
    uv_tcp_t tcp{};
    uv_write_t wreq{};
    uv_shutdown_t sreq{};
    Buffer in;
    Buffer out;
    Buffer inflight;
    bool initialised = false;  // its handle was uv_tcp_init'ed (and must be closed)
    ReadState read = ReadState::Idle;
    FinState fin = FinState::None;  // our FIN toward this side
    uint64_t bytes_read = 0;
  };

  ~StreamSession() = default;
  Endpoint& accepted() { return info_.origin == Origin::Outbound ? agent_ : peer_; }
  Endpoint& upstream() { return info_.origin == Origin::Outbound ? peer_ : agent_; }
  Endpoint& other(Endpoint& e) { return &e == &agent_ ? peer_ : agent_; }
  bool connected(const Endpoint& e) const {
    return &e == &acceptedConst() || phase_ == Phase::Connected;
  }
  const Endpoint& acceptedConst() const {
    return info_.origin == Origin::Outbound ? agent_ : peer_;
  }
  static void wantFin(Endpoint& e) {
    if (e.fin == FinState::None) {
      e.fin = FinState::Wanted;
    }
  }

  void startReading(Endpoint& e);
  void maybeConnect();
  void startTimer(uv_timer_t& t, uint64_t ms, uv_timer_cb on_expiry);
  void startReadyTimer(uint64_t ms, std::string reason);
  void pump();
  void runFilter();
  void flush(Endpoint& e);
  void applyBackpressure();
  void releaseIdle(Endpoint& e);
  void lendBuffers();
  void maybeFinish();
  void accountPreamble();
  void onHandleClosed();

  static void onAlloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void onWrite(uv_write_t* req, int status);
  static void onShutdown(uv_shutdown_t* req, int status);
  static void onConnect(uv_connect_t* req, int status);

  uv_loop_t* loop_;
  SessionInfo info_;
  StreamDriver driver_;
  ClosedCallback on_closed_;
  std::function<void(const StreamSession&)> on_ready_;
  bool ready_reported_ = false;
  Endpoint agent_;
  Endpoint peer_;
  uv_connect_t connect_req_{};
  uv_timer_t connect_timer_{};
  uv_timer_t ready_timer_{};
  bool connect_timer_initialised_ = false;
  bool ready_timer_initialised_ = false;
  Phase phase_ = Phase::Accepted;
  SocketAddress connect_to_;
  int open_handles_ = 0;
  PreambleBudget* budget_ = nullptr;
  size_t preamble_held_ = 0;  // this session's share of budget_->used
  size_t preamble_peak_ = 0;
  CloseReason close_reason_ = CloseReason::Done;
  std::string close_detail_;
  std::string ready_timeout_reason_;
};

}  // namespace sidecrypt::proxy
