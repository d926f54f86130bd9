#include "proxy/datapath/stream_session.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <string>
#include <utility>
#include <vector>

namespace sidecrypt::proxy {

namespace {
// Reads go straight into the side's input buffer, up to this much per read() once the
// processor is ready.
constexpr size_t kReadChunk = size_t{64} * 1024;
// Before that (RPC first byte, TLS handshake, inner type byte) a connection may be one of
// thousands a peer opened and stalled: its first buffer is one small block (a ClientHello, even
// with a post-quantum key share, fits), not 64 KiB that a flood would leave resident. A larger
// flight is read in several rounds of the same loop iteration; the buffer grows as needed.
constexpr size_t kPreambleReadChunk = size_t{4} * 1024;

// Steady-state buffers come from a small per-thread stock (each loop runs on one thread) and go
// back to it as soon as they drain: an idle connection holds no buffer at all, while a busy one
// takes the same few blocks over and over instead of allocating per read. Only blocks of the
// steady-state read size (up to 4x, after a burst grew one) are kept, at most kSpareBuffers of
// them; the rest is freed at once.
constexpr size_t kSpareBuffers = 8;
constexpr size_t kMaxSpareCapacity = 4 * kReadChunk;
thread_local std::vector<Buffer> spare_buffers;

Buffer takeBuffer() {
  if (spare_buffers.empty()) {
    return Buffer(kReadChunk);
  }
  Buffer b = std::move(spare_buffers.back());
  spare_buffers.pop_back();
  return b;
}

// Empties `b` (which holds no bytes): its block goes to the stock or is freed.
void giveBack(Buffer& b) {
  if (b.capacity() >= kReadChunk && b.capacity() <= kMaxSpareCapacity &&
      spare_buffers.size() < kSpareBuffers) {
    spare_buffers.push_back(std::move(b));
  }
  b = Buffer();
}

// A peer that resets or whose pipe broke is routine (ghostunnel treats it so); any other socket
// error is not.
CloseReason socketError(int uv_error) {
  return uv_error == UV_ECONNRESET || uv_error == UV_EPIPE ? CloseReason::Reset
                                                           : CloseReason::SocketError;
}
}  // namespace

StreamSession::StreamSession(uv_loop_t* loop, SessionInfo info, StreamFilterPtr filter,
                             ClosedCallback on_closed)
    : loop_(loop),
      info_(std::move(info)),
      driver_(std::move(filter)),
      on_closed_(std::move(on_closed)) {
  agent_.session = this;
  peer_.session = this;
  Endpoint& a = accepted();
  uv_tcp_init(loop_, &a.tcp);
  a.tcp.data = &a;
  a.initialised = true;
  ++open_handles_;
}

uv_tcp_t* StreamSession::acceptedHandle() {
  return &accepted().tcp;
}

void StreamSession::begin(int upstream_fd, const SocketAddress& connect_to) {
  Endpoint& u = upstream();
  uv_tcp_init(loop_, &u.tcp);
  u.tcp.data = &u;
  u.initialised = true;
  ++open_handles_;
  int rc = uv_tcp_open(&u.tcp, upstream_fd);
  if (rc != 0) {
    ::close(upstream_fd);
    close(CloseReason::SocketError, std::string("uv_tcp_open: ") + uv_strerror(rc));
    return;
  }
  connect_to_ = connect_to;
  if (info_.ready_deadline_ms != 0) {
    const std::string ms = std::to_string(info_.ready_deadline_ms) + " ms";
    startReadyTimer(info_.ready_deadline_ms,
                    info_.kind != "rpc"
                        ? "no complete first message within " + ms + " (memberlist's TCPTimeout)"
                        : "not ready within the handshake deadline (" + ms + ")");
  }
  startReading(accepted());
  maybeConnect();
}

void StreamSession::startTimer(uv_timer_t& t, uint64_t ms, uv_timer_cb on_expiry) {
  uv_timer_init(loop_, &t);
  t.data = this;
  ++open_handles_;
  uv_timer_start(&t, on_expiry, ms, 0);
}

void StreamSession::startReadyTimer(uint64_t ms, std::string reason) {
  if (ready_timer_initialised_) {
    return;
  }
  ready_timeout_reason_ = std::move(reason);
  startTimer(ready_timer_, ms, [](uv_timer_t* h) {
    auto* self = static_cast<StreamSession*>(h->data);
    self->close(CloseReason::ReadyDeadline, self->ready_timeout_reason_);
  });
  ready_timer_initialised_ = true;
}

void StreamSession::maybeConnect() {
  if (phase_ != Phase::Accepted || !driver_.wantsUpstream()) {
    return;
  }
  phase_ = Phase::Dialling;
  Endpoint& u = upstream();
  connect_req_.data = this;
  int rc = uv_tcp_connect(&connect_req_, &u.tcp, connect_to_.sa(), &StreamSession::onConnect);
  if (rc != 0) {
    close(CloseReason::ConnectFailed,
          "connect to " + connect_to_.toString() + ": " + uv_strerror(rc));
    return;
  }
  startTimer(connect_timer_, kConnectTimeoutMs, [](uv_timer_t* h) {
    static_cast<StreamSession*>(h->data)->close(CloseReason::ConnectTimeout,
                                                "connect timed out after 10s");
  });
  connect_timer_initialised_ = true;
}

void StreamSession::onConnect(uv_connect_t* req, int status) {
  auto* self = static_cast<StreamSession*>(req->data);
  if (self->closing()) {
    return;
  }
  if (self->connect_timer_initialised_) {
    uv_timer_stop(&self->connect_timer_);
  }
  if (status != 0) {
    self->close(CloseReason::ConnectFailed, std::string("connect failed: ") + uv_strerror(status));
    return;
  }
  Endpoint& u = self->upstream();
  self->phase_ = Phase::Connected;  // TCP_NODELAY is on from openTcpUpstream, before the connect
  // The upstream's half of the preamble (outbound RPC TLS: the remote's handshake) is bounded
  // from here; the connect itself has its own 10 s bound, which this must not undercut.
  const uint64_t ms = self->driver_.filter().upstreamReadyDeadlineMs();
  if (ms != 0 && !self->driver_.ready()) {
    self->startReadyTimer(ms, "the remote did not finish the handshake within " +
                                  std::to_string(ms) + " ms of the connect");
  }
  self->startReading(u);
  self->pump();
}

void StreamSession::startReading(Endpoint& e) {
  if ((e.read != ReadState::Idle && e.read != ReadState::Paused) || closing()) {
    return;
  }
  e.read = ReadState::Idle;
  if (uv_read_start(reinterpret_cast<uv_stream_t*>(&e.tcp), &StreamSession::onAlloc,
                    &StreamSession::onRead) == 0) {
    e.read = ReadState::Reading;
  }
}

void StreamSession::onAlloc(uv_handle_t* h, size_t /*suggested*/, uv_buf_t* buf) {
  auto* e = static_cast<Endpoint*>(h->data);
  // Read straight into the side's input buffer (no intermediate copy).
  const bool ready = e->session->driver_.ready();
  if (ready && e->in.capacity() == 0) {
    e->in = takeBuffer();
  }
  auto span = e->in.reserve(ready ? kReadChunk : kPreambleReadChunk);
  *buf = uv_buf_init(reinterpret_cast<char*>(span.data()), static_cast<unsigned>(span.size()));
}

void StreamSession::onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* /*buf*/) {
  auto* e = static_cast<Endpoint*>(s->data);
  StreamSession* self = e->session;
  if (nread > 0) {
    e->in.commit(static_cast<size_t>(nread));
    e->bytes_read += static_cast<uint64_t>(nread);
    self->accountPreamble();
    if (self->closing()) {
      return;  // over the shared budget and this was the greediest session
    }
  } else if (nread == UV_EOF) {
    e->in.commit(0);
    uv_read_stop(s);
    e->read = ReadState::Ended;
  } else if (nread < 0) {
    e->in.commit(0);
    self->close(socketError(static_cast<int>(nread)),
                std::string(e == &self->agent_ ? "agent" : "peer") +
                    " read error: " + uv_strerror(static_cast<int>(nread)));
    return;
  } else {
    e->in.commit(0);
    self->releaseIdle(*e);
    return;
  }
  self->pump();
}

void StreamSession::accountPreamble() {
  if (budget_ == nullptr) {
    return;
  }
  const size_t held = !closing() && !driver_.ready() ? accepted().in.capacity() : 0;
  budget_->used = budget_->used - preamble_held_ + held;
  preamble_held_ = held;
  preamble_peak_ = std::max(preamble_peak_, held);
  if (held != 0 && budget_->limit != 0 && budget_->used > budget_->limit && budget_->on_over) {
    budget_->on_over();
  }
}

void StreamSession::releaseIdle(Endpoint& e) {
  // A side holds a buffer only while it has bytes in it. Before the processor is ready, a
  // connection waiting on its peer then costs only the session and the TLS state (a flood of
  // stalled connections; the processor took what arrived, the TLS engine keeps its own copy), and
  // after, an idle connection costs no buffer either (issue 18: idle memory per connection).
  // Steady-state blocks go back to the per-thread stock, so a busy connection allocates none.
  for (Buffer* b : {&e.in, &e.out, &e.inflight}) {
    if (b->empty() && b->capacity() != 0) {
      giveBack(*b);
    }
  }
}

void StreamSession::dropSpareBuffers() {
  std::vector<Buffer>().swap(spare_buffers);
}

void StreamSession::lendBuffers() {
  // The filter writes into the output buffers: a steady-state block from the stock rather than
  // one grown from a few KiB record by record.
  for (Endpoint* e : {&agent_, &peer_}) {
    if (e->out.capacity() == 0) {
      e->out = takeBuffer();
    }
  }
}

void StreamSession::runFilter() {
  if (driver_.draining()) {
    return;
  }
  if (driver_.ready()) {
    lendBuffers();
  }
  driver_.run({agent_.out, peer_.out}, agent_.in, agent_.read == ReadState::Ended, peer_.in,
              peer_.read == ReadState::Ended);
  if (driver_.draining()) {
    // Flush what the filter queued (an error reply), then close both sides.
    wantFin(agent_);
    wantFin(peer_);
    return;
  }
  if (driver_.endToAgent()) {
    wantFin(agent_);
  }
  if (driver_.endToPeer()) {
    wantFin(peer_);
  }
  // Invariant: until the filter wants its upstream, nothing is queued toward it (while waiting
  // or dialling inbound, nothing reaches the agent before the peer's first message passed).
  assert(driver_.wantsUpstream() || upstream().out.empty());
}

void StreamSession::pump() {
  if (closing()) {
    return;
  }
  runFilter();
  if (ready_timer_initialised_ && driver_.ready()) {
    uv_timer_stop(&ready_timer_);
  }
  if (!ready_reported_ && driver_.ready()) {
    ready_reported_ = true;
    if (on_ready_) {
      on_ready_(*this);
    }
  }
  maybeConnect();
  flush(agent_);
  flush(peer_);
  applyBackpressure();
  releaseIdle(agent_);
  releaseIdle(peer_);
  accountPreamble();
  maybeFinish();
}

void StreamSession::flush(Endpoint& e) {
  if (closing() || !connected(e) || !e.inflight.empty()) {
    return;
  }
  if (!e.out.empty()) {
    // Most writes complete at once (the socket buffer has room): no request, no callback, no
    // extra loop iteration per message. Only what the kernel did not take waits for POLLOUT.
    auto pending = e.out.readable();
    uv_buf_t now = uv_buf_init(const_cast<char*>(reinterpret_cast<const char*>(pending.data())),
                               static_cast<unsigned>(pending.size()));
    const int n = uv_try_write(reinterpret_cast<uv_stream_t*>(&e.tcp), &now, 1);
    if (n > 0) {
      e.out.drain(static_cast<size_t>(n));
    } else if (n != UV_EAGAIN) {
      close(socketError(n),
            std::string(&e == &agent_ ? "agent" : "peer") + " write error: " + uv_strerror(n));
      return;
    }
  }
  if (!e.out.empty()) {
    // The write request owns its bytes until the callback (libuv's write_req idiom).
    e.inflight.move(e.out);
    auto bytes = e.inflight.readable();
    uv_buf_t buf = uv_buf_init(const_cast<char*>(reinterpret_cast<const char*>(bytes.data())),
                               static_cast<unsigned>(bytes.size()));
    e.wreq.data = &e;
    int rc =
        uv_write(&e.wreq, reinterpret_cast<uv_stream_t*>(&e.tcp), &buf, 1, &StreamSession::onWrite);
    if (rc != 0) {
      close(socketError(rc), std::string("write: ") + uv_strerror(rc));
    }
    return;
  }
  if (e.fin == FinState::Wanted) {
    e.fin = FinState::Sent;
    e.sreq.data = &e;
    if (uv_shutdown(&e.sreq, reinterpret_cast<uv_stream_t*>(&e.tcp), &StreamSession::onShutdown) !=
        0) {
      e.fin = FinState::Done;
    }
  }
}

void StreamSession::onWrite(uv_write_t* req, int status) {
  auto* e = static_cast<Endpoint*>(req->data);
  StreamSession* self = e->session;
  e->inflight.clear();
  if (self->closing()) {
    return;
  }
  if (status != 0) {
    self->close(socketError(status), std::string(e == &self->agent_ ? "agent" : "peer") +
                                         " write error: " + uv_strerror(status));
    return;
  }
  self->pump();
}

void StreamSession::onShutdown(uv_shutdown_t* req, int /*status*/) {
  auto* e = static_cast<Endpoint*>(req->data);
  e->fin = FinState::Done;
  if (!e->session->closing()) {
    e->session->maybeFinish();
  }
}

void StreamSession::applyBackpressure() {
  for (Endpoint* from : {&agent_, &peer_}) {
    Endpoint& to = other(*from);
    const size_t queued = to.out.size() + to.inflight.size();
    if (from->read == ReadState::Reading && queued > kHighWater) {
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&from->tcp));
      from->read = ReadState::Paused;
    } else if (from->read == ReadState::Paused && queued < kLowWater) {
      startReading(*from);
    }
  }
}

void StreamSession::maybeFinish() {
  if (closing()) {
    return;
  }
  const bool flushed =
      agent_.out.empty() && agent_.inflight.empty() && peer_.out.empty() && peer_.inflight.empty();
  auto finished = [this](const Endpoint& e) { return e.fin == FinState::Done || !connected(e); };
  if (driver_.draining() && flushed && finished(agent_) && finished(peer_)) {
    close(driver_.reason(), driver_.detail());
    return;
  }
  // The accepted side ended before the processor wanted its upstream (a FIN before the first
  // byte, or before an inbound gossip message or RPC preamble was complete): nothing more can
  // arrive, so nothing would ever connect or close the session. A bare connect-and-close (a
  // port probe) is not an error; a preamble cut short is.
  Endpoint& a = accepted();
  const filters::Side side = &a == &agent_ ? filters::Side::Agent : filters::Side::Peer;
  if (!driver_.draining() && phase_ == Phase::Accepted && driver_.endDelivered(side) &&
      a.out.empty() && a.inflight.empty() && !driver_.wantsUpstream()) {
    if (a.bytes_read == 0) {
      close(CloseReason::Done);
    } else {
      close(CloseReason::PreambleCut, std::string("the ") + (&a == &peer_ ? "peer" : "agent") +
                                          " closed before its first message was complete");
    }
    return;
  }
  // Both directions finished: each side sent its FIN and received the other's.
  if (agent_.read == ReadState::Ended && peer_.read == ReadState::Ended &&
      agent_.fin == FinState::Done && peer_.fin == FinState::Done) {
    close(CloseReason::Done);
  }
}

void StreamSession::close(CloseReason reason, std::string detail) {
  if (closing()) {
    return;
  }
  phase_ = Phase::Closing;
  close_reason_ = reason;
  close_detail_ = std::move(detail);
  // Nothing reads the input any more (uv_close stops reading): free it now, not a loop turn
  // later, so a burst of budget closes does not briefly hold twice the budget.
  agent_.in = Buffer();
  peer_.in = Buffer();
  accountPreamble();  // closing: gives this session's share back
  auto closeHandle = [this](uv_handle_t* h) {
    h->data = this;
    uv_close(h, [](uv_handle_t* handle) {
      static_cast<StreamSession*>(handle->data)->onHandleClosed();
    });
  };
  for (auto [timer, initialised] : {std::pair{&connect_timer_, connect_timer_initialised_},
                                    std::pair{&ready_timer_, ready_timer_initialised_}}) {
    if (initialised) {
      uv_timer_stop(timer);
      closeHandle(reinterpret_cast<uv_handle_t*>(timer));
    }
  }
  for (Endpoint* e : {&agent_, &peer_}) {
    if (e->initialised) {
      closeHandle(reinterpret_cast<uv_handle_t*>(&e->tcp));
    }
  }
}

void StreamSession::onHandleClosed() {
  if (--open_handles_ > 0) {
    return;
  }
  if (on_closed_) {
    on_closed_(*this, close_reason_, close_detail_);
  }
  delete this;
}

}  // namespace sidecrypt::proxy
