#include "filters/rpc_tls/rpc_processor.h"

#include <cassert>

namespace sidecrypt::filters::rpc_tls {

namespace rt = filters::rpc_tls;

namespace {
constexpr size_t kChunk = size_t{16} * 1024;

// For the length of one call the engine reads ciphertext straight from the session's input
// buffer and writes it straight to the session's output buffer (no copy through its queues).
class AttachedTransport {
 public:
  AttachedTransport(rt::TlsEngine& engine, Buffer* cipher_in, Buffer* cipher_out)
      : engine_(engine) {
    engine_.attachTransport(cipher_in, cipher_out);
  }
  ~AttachedTransport() { engine_.attachTransport(nullptr, nullptr); }
  AttachedTransport(const AttachedTransport&) = delete;
  AttachedTransport& operator=(const AttachedTransport&) = delete;

 private:
  rt::TlsEngine& engine_;
};
}  // namespace

RpcProcessor::RpcProcessor(bool inbound, RpcTlsSetupConstPtr setup,
                           std::string destination_datacenter,
                           std::shared_ptr<rt::RpcTlsStats> stats, std::string session_key)
    : inbound_(inbound),
      setup_(std::move(setup)),
      destination_dc_(std::move(destination_datacenter)),
      session_key_(std::move(session_key)),
      stats_(std::move(stats)),
      decider_(setup_->inbound, setup_->local_server_name) {}

void RpcProcessor::count(rt::RpcTlsCounter c) {
  if (c != nullptr && stats_) {
    ((*stats_).*c).fetch_add(1, std::memory_order_relaxed);
  }
}

bool RpcProcessor::fail(std::string why, CloseReason r) {
  if (reason_.empty()) {
    reason_ = std::move(why);
    close_ = r;
  }
  return false;
}

StreamVerdict RpcProcessor::verdict() const {
  // A TLS engine exists exactly while the connection is TLS (a refusal before it started leaves
  // neither), and a handshake is counted only for one.
  assert((engine_ != nullptr) == tls());
  assert(handshake_ == Handshake::Pending || tls());
  StreamVerdict v;
  v.dial = wantsUpstream();
  v.ready = ready();
  v.end_to_agent = end_to_agent_;
  v.end_to_peer = end_to_peer_;
  return v;
}

StreamVerdict RpcProcessor::onData(Side from, Buffer& in, bool end_stream, StreamIo& io) {
  const bool ok =
      from == Side::Agent ? onAgentData(in, end_stream, io) : onPeerData(in, end_stream, io);
  StreamVerdict v = verdict();
  if (!ok) {
    v.close = true;
    v.reason = close_;
    v.detail = reason_;
  }
  return v;
}

void RpcProcessor::countChainCheck() {
  const rt::ChainCheck& check = engine_->chainCheck();
  if (check.cache_hit) {
    count(&rt::RpcTlsStats::chain_cache_hits);
  }
  if (check.ran) {
    count(&rt::RpcTlsStats::chain_cache_misses);
  }
}

// ---- deciding on the first byte -----------------------------------------------------------

bool RpcProcessor::decideOutbound(Buffer& in, StreamIo& io) {
  const uint8_t first = in.readable()[0];
  const auto d = rt::decideOutbound(setup_->outbound, first);
  count(d.counter);
  type_ = first;
  // docs/spec/consul-rpc-tls.md §1.8 outbound 1: dial only once the agent has spoken.
  agent_spoke_ = true;
  if (d.action != rt::OutboundAction::UpgradeTls) {
    state_ = State::Raw;
    return true;
  }
  if (!setup_->client) {
    return fail("verify_outgoing is on but no TLS client context is loaded");
  }
  rt::ClientOptions options;
  options.datacenter = destination_dc_;
  options.session_key = session_key_;
  engine_ = rt::TlsEngine::client(setup_->client, options);
  if (!engine_) {
    return fail("cannot create a TLS client");
  }
  state_ = State::Handshaking;
  // docs/spec/consul-rpc-tls.md §1.3 step 2: plaintext 0x03.
  io.to_peer.append(static_cast<uint8_t>(rt::RpcType::Tls));
  return true;
}

bool RpcProcessor::decideInbound(Buffer& in, StreamIo& io) {
  const uint8_t first = in.readable()[0];
  auto d = decider_.onFirstByte(first);
  count(d.counter);
  switch (d.action) {
    case rt::InboundAction::ForwardRaw:
      state_ = State::Raw;
      type_ = first;
      return true;
    case rt::InboundAction::TerminateTls:
      in.drain(1);  // the 0x03 itself never reaches the agent
      engine_ = rt::TlsEngine::server(setup_->server);
      break;
    case rt::InboundAction::TerminateNativeTls:
      native_ = true;
      engine_ = rt::TlsEngine::server(setup_->native_server);
      break;
    default:
      return fail(d.reason);
  }
  if (!engine_) {
    return fail("no TLS server context for this connection");
  }
  state_ = State::Handshaking;
  (void)io;
  return true;
}

// ---- the TLS engine -------------------------------------------------------------------------

void RpcProcessor::flushEncrypted(Buffer& to) {
  while (engine_->encPending() > 0) {
    auto span = to.reserve(engine_->encPending());
    to.commit(engine_->encOut(span));
  }
}

// Decrypted bytes toward `to` (the agent); false on a TLS failure.
bool RpcProcessor::drainClear(Buffer& to) {
  while (true) {
    auto span = to.reserve(kChunk);
    const ptrdiff_t n = engine_->clearOut(span);
    if (n > 0) {
      to.commit(static_cast<size_t>(n));
      continue;
    }
    to.commit(0);
    if (n == rt::TlsEngine::kEof) {
      if (!end_to_agent_) {
        end_to_agent_ = true;  // close_notify (or a bare FIN) -> FIN toward the agent
        count(engine_->peerTruncated() ? &rt::RpcTlsStats::truncated_by_peer
                                       : &rt::RpcTlsStats::close_notify_received);
      }
      return true;
    }
    if (n == rt::TlsEngine::kFailed) {
      return false;
    }
    return true;
  }
}

// Agent plaintext into the engine, as much as it takes.
bool RpcProcessor::feedClear(Buffer& in) {
  while (!in.empty()) {
    const size_t took = engine_->clearIn(in.readable());
    if (took == 0) {
      break;  // ciphertext backed up: the rest waits in `in` (backpressure)
    }
    in.drain(took);
  }
  return !engine_->failed();
}

bool RpcProcessor::afterHandshake(StreamIo& io) {
  assert(handshake_ != Handshake::Failed);  // a failed engine never finishes its handshake
  if (handshake_ == Handshake::Pending) {
    handshake_ = Handshake::Succeeded;
    count(&rt::RpcTlsStats::handshakes_ok);
    countChainCheck();
    if (inbound_) {
      count(engine_->resumed() ? &rt::RpcTlsStats::inbound_handshakes_resumed
                               : &rt::RpcTlsStats::inbound_handshakes_full);
    } else {
      count(engine_->resumed() ? &rt::RpcTlsStats::outbound_handshakes_resumed
                               : &rt::RpcTlsStats::outbound_handshakes_full);
    }
  }
  if (!inbound_ || state_ == State::Open) {
    state_ = State::Open;
    return true;
  }
  const rt::PeerCheck check{engine_->peer().verifies_as_server};
  if (native_) {
    auto d = decider_.onAlpn(engine_->alpn(), check);
    count(d.counter);
    if (d.action != rt::InboundAction::InjectAndForward) {
      return fail(d.reason);
    }
    type_ = d.type;
    io.to_agent.append(d.type);
  } else {
    // docs/spec/consul-rpc-tls.md §1.8 inbound 3: the inner type byte, read through TLS, still
    // under the deadline.
    uint8_t inner = 0;
    const ptrdiff_t n = engine_->clearOut(std::span<uint8_t>(&inner, 1));
    if (n == 0) {
      return true;  // not here yet
    }
    if (n < 0) {
      return n == rt::TlsEngine::kEof
                 ? fail("peer closed before sending the inner type byte", CloseReason::PreambleCut)
                 : fail(engine_->error());
    }
    auto d = decider_.onInnerByte(inner, check);
    count(d.counter);
    if (d.action != rt::InboundAction::ForwardClear) {
      return fail(d.reason);
    }
    type_ = inner;
    io.to_agent.append(inner);
  }
  state_ = State::Open;  // the inner type byte (or ALPN) was accepted
  return true;
}

bool RpcProcessor::pumpEngine(StreamIo& io) {
  flushEncrypted(io.to_peer);
  if (engine_->failed()) {
    if (handshake_ == Handshake::Pending) {
      handshake_ = Handshake::Failed;
      count(&rt::RpcTlsStats::handshakes_failed);
      countChainCheck();
    }
    return fail("TLS: " + engine_->error());
  }
  if (!engine_->handshakeDone()) {
    return true;
  }
  if (!afterHandshake(io)) {
    flushEncrypted(io.to_peer);
    return false;
  }
  if (state_ != State::Open) {  // inbound: the inner type byte is not here yet
    return true;
  }
  if (!drainClear(io.to_agent)) {
    flushEncrypted(io.to_peer);
    return fail("TLS: " + engine_->error());
  }
  flushEncrypted(io.to_peer);
  // Close the peer's TCP side only when the TLS session is over in both directions, or the
  // peer's transport already ended (docs/spec/rpc-peers.md §2.4).
  end_to_peer_ = engine_->fullyClosed() || (peer_eof_ && engine_->writeShutdown());
  return true;
}

// ---- the two directions ---------------------------------------------------------------------

bool RpcProcessor::onAgentData(Buffer& in, bool end_stream, StreamIo& io) {
  agent_eof_ = agent_eof_ || end_stream;
  if (state_ == State::Deciding) {
    if (inbound_) {
      // The agent never speaks first on an inbound connection; hold anything until decided.
      return true;
    }
    if (in.empty()) {
      return end_stream
                 ? fail("the agent closed before sending a type byte", CloseReason::PreambleCut)
                 : true;
    }
    if (!decideOutbound(in, io)) {
      return false;
    }
  }
  if (state_ == State::Raw) {
    io.to_peer.move(in);
    end_to_peer_ = agent_eof_;
    return true;
  }
  const AttachedTransport transport(*engine_, nullptr, &io.to_peer);
  if (!feedClear(in)) {
    return fail("TLS: " + engine_->error());
  }
  if (agent_eof_ && in.empty() && !engine_->writeShutdown()) {
    engine_->shutdownWrite();  // agent FIN -> close_notify, keep reading
                               // (docs/spec/consul-rpc-tls.md §1.6)
    count(&rt::RpcTlsStats::close_notify_sent);
  }
  return pumpEngine(io);
}

bool RpcProcessor::onPeerData(Buffer& in, bool end_stream, StreamIo& io) {
  peer_eof_ = peer_eof_ || end_stream;
  if (state_ == State::Deciding) {
    if (!inbound_) {
      return true;  // outbound peers speak after our first bytes; nothing to decide yet
    }
    if (in.empty()) {
      return end_stream
                 ? fail("the peer closed before sending a type byte", CloseReason::PreambleCut)
                 : true;
    }
    if (!decideInbound(in, io)) {
      return false;
    }
  }
  if (state_ == State::Raw) {
    io.to_agent.move(in);
    end_to_agent_ = peer_eof_;
    return true;
  }
  const AttachedTransport transport(*engine_, &in, &io.to_peer);
  engine_->advance();
  if (!pumpEngine(io)) {  // decrypts every whole record `in` holds; a partial one stays inside
    return false;
  }
  if (engine_->peerClosed()) {
    in.clear();  // records after close_notify are never read (Go ignores them too)
  }
  if (peer_eof_ && in.empty()) {
    engine_->encInEof();
  }
  // Plaintext the agent sent before the handshake finished goes out now.
  return pumpEngine(io);
}

}  // namespace sidecrypt::filters::rpc_tls
