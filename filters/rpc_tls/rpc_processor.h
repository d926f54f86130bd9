#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "filters/filter.h"
#include "filters/rpc_tls/first_byte.h"
#include "filters/rpc_tls/rpc_tls_setup.h"
#include "filters/rpc_tls/rpc_tls_stats.h"
#include "filters/rpc_tls/tls_context.h"
#include "filters/rpc_tls/tls_engine.h"

namespace sidecrypt::filters::rpc_tls {

// Consul's RPC port (8300) for one connection, in either direction (docs/spec/consul-rpc-tls.md
// §1.8). Outbound: the agent's first byte decides (before dialling): relay raw, or write 0x03, run
// a TLS client and send the agent's bytes (its type byte first) inside TLS. Inbound: the peer's
// first byte decides: relay raw (accept-both stage), terminate 0x03 TLS and hand the inner type
// byte and the decrypted stream to the agent, terminate native ALPN TLS, or close with Consul's
// reason. Half-close maps FIN <-> close_notify both ways (docs/spec/rpc-peers.md §2.4).
class RpcProcessor final : public StreamFilter {
 public:
  // The connection's protocol state. Moves forward only; a refusal leaves it where it was (the
  // census reads what the connection had become) and the driver drains the session.
  enum class State : uint8_t {
    Deciding,     // no first byte yet (outbound: the agent's; inbound: the peer's)
    Raw,          // relayed unchanged both ways (ready)
    Handshaking,  // TLS; inbound also until the inner type byte (or ALPN) was accepted
    Open,         // TLS, handshake done and (inbound) the type decided: ready
  };

  // `session_key` (outbound): the destination, which keys the TLS session offered for resumption.
  RpcProcessor(bool inbound, RpcTlsSetupConstPtr setup, std::string destination_datacenter,
               std::shared_ptr<RpcTlsStats> stats, std::string session_key = "");

  StreamVerdict start() override { return verdict(); }
  StreamVerdict onData(Side from, Buffer& in, bool end_stream, StreamIo& io) override;
  const char* name() const override { return "rpc"; }
  StreamFilterKind kind() const override { return StreamFilterKind::Rpc; }
  // `f` as an RPC processor, or nullptr if it is another filter.
  static const RpcProcessor* of(const StreamFilter& f) {
    return f.kind() == StreamFilterKind::Rpc ? static_cast<const RpcProcessor*>(&f) : nullptr;
  }
  // Outbound TLS: a remote that stalls its handshake would otherwise hold the agent's
  // connection (and the agent's RPC) forever; Consul's own server side gives up after the same
  // limit.
  uint64_t upstreamReadyDeadlineMs() const override {
    return !inbound_ && tls() ? setup_->handshake_timeout_ms : 0;
  }

  State state() const { return state_; }
  bool ready() const { return state_ == State::Raw || state_ == State::Open; }
  // Outbound: dial once the agent has spoken (docs/spec/consul-rpc-tls.md §1.8 outbound 1).
  // Inbound: only once the peer's type byte was accepted, so refused connections never reach
  // the agent.
  bool wantsUpstream() const { return inbound_ ? ready() : agent_spoke_; }
  bool endToAgent() const { return end_to_agent_; }
  bool endToPeer() const { return end_to_peer_; }
  const std::string& closeReason() const { return reason_; }

  // For the census and logs: what the connection turned out to be.
  bool tls() const { return state_ == State::Handshaking || state_ == State::Open; }
  const TlsEngine* engine() const { return engine_.get(); }
  uint8_t typeByte() const { return type_; }

 private:
  StreamVerdict verdict() const;
  bool onAgentData(Buffer& in, bool end_stream, StreamIo& io);
  bool onPeerData(Buffer& in, bool end_stream, StreamIo& io);
  bool fail(std::string why, CloseReason r = CloseReason::Refused);
  void count(RpcTlsCounter c);
  void countChainCheck();
  bool decideOutbound(Buffer& in, StreamIo& io);
  bool decideInbound(Buffer& in, StreamIo& io);
  bool pumpEngine(StreamIo& io);
  bool afterHandshake(StreamIo& io);
  void flushEncrypted(Buffer& to);
  bool drainClear(Buffer& to);
  bool feedClear(Buffer& in);

  bool inbound_;
  RpcTlsSetupConstPtr setup_;
  std::string destination_dc_;
  std::string session_key_;
  std::shared_ptr<RpcTlsStats> stats_;
  InboundDecider decider_;
  TlsEnginePtr engine_;
  State state_ = State::Deciding;
  bool agent_spoke_ = false;  // outbound: the agent's first byte arrived
  bool native_ = false;       // inbound native-ALPN TLS (no inner byte)
  // The TLS handshake's outcome as counted (handshakes_ok / handshakes_failed), once. Moves from
  // Pending only, to one of the other two.
  enum class Handshake : uint8_t { Pending, Succeeded, Failed };
  Handshake handshake_ = Handshake::Pending;
  bool agent_eof_ = false;  // FINs in, and FINs wanted out
  bool peer_eof_ = false;
  bool end_to_agent_ = false;
  bool end_to_peer_ = false;
  uint8_t type_ = 0;
  CloseReason close_ = CloseReason::Done;
  std::string reason_;
};

}  // namespace sidecrypt::filters::rpc_tls
