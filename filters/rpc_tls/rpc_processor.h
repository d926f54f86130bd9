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
class RpcProcessor final : public StreamProcessor, public UpstreamReadyDeadline {
 public:
  RpcProcessor(bool inbound, RpcTlsSetupConstPtr setup, std::string destination_datacenter,
               std::shared_ptr<RpcTlsStats> stats);

  bool onAgentData(Buffer& in, bool end_stream, StreamIo& io) override;
  bool onPeerData(Buffer& in, bool end_stream, StreamIo& io) override;
  std::string closeReason() const override { return reason_; }
  const char* name() const override { return "rpc"; }
  bool wantsUpstream() const override { return wants_upstream_; }
  bool ready() const override { return ready_; }
  bool handlesEof() const override { return true; }
  bool endToAgent() const override { return end_to_agent_; }
  bool endToPeer() const override { return end_to_peer_; }
  // Outbound TLS: a remote that stalls its handshake would otherwise hold the agent's
  // connection (and the agent's RPC) forever; Consul's own server side gives up after the same
  // limit.
  uint64_t upstreamReadyDeadlineMs() const override {
    return !inbound_ && mode_ == Mode::Tls ? setup_->handshake_timeout_ms : 0;
  }

  // For the census and logs: what the connection turned out to be.
  bool tls() const { return engine_ != nullptr; }
  const TlsEngine* engine() const { return engine_.get(); }
  uint8_t typeByte() const { return type_; }

 private:
  enum class Mode : uint8_t { Deciding, Raw, Tls };

  bool fail(std::string why);
  void count(RpcTlsCounter c);
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
  std::shared_ptr<RpcTlsStats> stats_;
  InboundDecider decider_;
  TlsEnginePtr engine_;
  Mode mode_ = Mode::Deciding;
  bool native_ = false;         // inbound native-ALPN TLS (no inner byte)
  bool inner_decided_ = false;  // inbound 0x03: the inner type byte was accepted
  bool handshake_counted_ = false;
  bool wants_upstream_ = false;
  bool ready_ = false;
  bool agent_eof_ = false;
  bool peer_eof_ = false;
  bool end_to_agent_ = false;
  bool end_to_peer_ = false;
  uint8_t type_ = 0;
  std::string reason_;
};

}  // namespace sidecrypt::filters::rpc_tls
