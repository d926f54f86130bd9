#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "filters/common/buffer.h"
#include "filters/rpc_tls/tls_context.h"

struct ssl_st;
struct bio_st;

namespace sidecrypt::filters::rpc_tls {

// What the peer's certificate proved; filled once the handshake has completed.
struct PeerIdentity {
  bool presented_certificate = false;
  // The handshake's own verification passed (chain, EKU, and the name when one was set).
  // False when this side did not verify (a server without verify_incoming).
  bool verified = false;
  long verify_result = 0;  // SSL_get_verify_result; 65 means "no verification ran"
  std::string common_name;
  std::vector<std::string> dns_names;  // DNS SANs, in certificate order
  // The certificate verifies against the configured CAs as server.<dc>.<domain> (DNS SAN only,
  // never the CN) with the EKU this side requires of the peer: clientAuth on a server (Consul's
  // AuthorizeServerConn, docs/spec/consul-rpc-tls.md §2.5), serverAuth on a client. <dc> is the
  // local datacenter on a server and the destination datacenter on a client.
  bool verifies_as_server = false;
  // The trust anchor the handshake's own verification ended at: the configured CA at the top of
  // the verified chain (SHA-256 of its DER encoding). Only when this side verified the peer.
  bool has_anchor = false;
  std::array<uint8_t, 32> anchor_sha256{};
};

struct ClientOptions {
  // The datacenter being dialled: with verify_server_hostname the peer must be
  // server.<datacenter>.<domain> (SNI and name check). Empty means the local datacenter.
  std::string datacenter;
  // ALPN names to offer (native mode, tests); empty for Consul's 0x03 mode
  // (docs/spec/consul-rpc-tls.md §2.3: no ALPN).
  std::vector<std::string> alpn;
  // Where the connection goes (the proxy passes the destination address): with resumption on,
  // a session is cached and offered per (session_key, expected server name) within the context.
  std::string session_key;
};

// One TLS connection driven entirely through memory: no socket, no clock. The four verbs follow
// Node's TLSWrap: encIn (network -> engine), encOut (engine -> network), clearIn (application
// -> engine), clearOut (engine -> application).
//
// Contract for the caller: after every call, drain encOut() until encPending() is 0 (the
// engine may have handshake messages, alerts or close_notify to send even when a call fails);
// after encIn(), call clearOut() until it returns 0 or less.
//
// Half-close (docs/spec/rpc-peers.md §2.4): shutdownWrite() sends close_notify once and keeps
// reading; a received close_notify makes clearOut() return kEof while clearIn() keeps working.
class TlsEngine {
 public:
  static constexpr ptrdiff_t kEof = -1;     // close_notify received, or transport EOF
  static constexpr ptrdiff_t kFailed = -2;  // see error()
  // Backpressure bounds: encIn() stops accepting once this much ciphertext waits unread, and
  // clearIn() once this much ciphertext waits to be sent (plus TLS record overhead).
  static constexpr size_t kMaxEncInBuffered = size_t{64} * 1024;
  static constexpr size_t kMaxEncOutBuffered = size_t{64} * 1024;
  // clearIn() before the handshake completes is held (up to this much) and sent after it.
  static constexpr size_t kMaxEarlyClear = size_t{64} * 1024;

  // The engine keeps its own reference to the context (a reload may replace the caller's).
  // nullptr when the context's role does not fit; otherwise check failed() right away.
  static std::unique_ptr<TlsEngine> client(TlsContextSharedPtr ctx, const ClientOptions& options);
  static std::unique_ptr<TlsEngine> server(TlsContextSharedPtr ctx);
  ~TlsEngine();
  TlsEngine(const TlsEngine&) = delete;
  TlsEngine& operator=(const TlsEngine&) = delete;

  // Ciphertext from the network. Returns how many bytes were taken; fewer than offered means
  // the engine is full: call clearOut() and offer the rest later. After failed() everything
  // is taken and dropped (nothing more can be decrypted; the caller is closing), and after
  // encInEof() nothing is taken.
  size_t encIn(std::span<const uint8_t> bytes);
  // The transport delivered EOF (TCP FIN). Without a close_notify first, clearOut() reports
  // kEof with peerTruncated() set.
  void encInEof();
  size_t encPending() const;
  // Copies up to out.size() bytes of pending ciphertext into `out`; returns the count.
  size_t encOut(std::span<uint8_t> out);

  // Zero-copy transport for a caller that keeps its own byte queues (the proxy's sockets): while
  // attached, the engine reads ciphertext straight from `cipher_in`, draining what it consumed,
  // and appends what it sends straight to `cipher_out`, instead of copying both through its own
  // queues (bytes those already hold come first). Either may be nullptr. Call advance() after
  // adding to `cipher_in`, then clearOut() as after encIn(); encPending() stays 0 while a sink
  // is attached. Detach (attachTransport(nullptr, nullptr)) before the buffers go away.
  void attachTransport(Buffer* cipher_in, Buffer* cipher_out);
  // Moves the handshake on with the ciphertext available so far.
  void advance() { advanceHandshake(); }

  // Plaintext to send. Returns how many bytes were taken (0 when ciphertext is backed up, after
  // shutdownWrite(), or after a failure).
  size_t clearIn(std::span<const uint8_t> bytes);
  // Plaintext received: > 0 bytes written to `out`; 0 = nothing yet; kEof; kFailed.
  ptrdiff_t clearOut(std::span<uint8_t> out);

  // The plaintext side reached EOF (agent FIN): queue close_notify after everything clearIn()
  // accepted. Once only; before the handshake completes it is deferred until it does (Go only
  // sends close_notify after a completed handshake).
  void shutdownWrite();

  bool isClient() const { return is_client_; }
  bool handshakeDone() const { return handshake_done_; }
  // The handshake resumed a session (TLS 1.3 PSK with (EC)DHE, or a TLS 1.2 ticket).
  bool resumed() const;
  bool failed() const { return failed_; }
  const std::string& error() const { return error_; }  // human-readable, set when failed()
  bool writeShutdown() const { return shutdown_sent_; }
  bool peerClosed() const { return peer_closed_; }   // close_notify received
  bool peerTruncated() const { return truncated_; }  // transport EOF without close_notify
  // Both close_notify alerts exchanged and nothing left to send: the socket may be closed.
  bool fullyClosed() const;

  const PeerIdentity& peer() const { return peer_; }
  // How the peer's chain was verified (cache hit, a full verification, or neither).
  const ChainCheck& chainCheck() const { return chain_check_; }
  std::string alpn() const;     // negotiated ALPN, "" if none
  std::string version() const;  // "TLSv1.3" ...
  std::string cipher() const;   // IANA name of the negotiated suite
  std::string sni() const;      // server: the name the client sent, "" if none
  const std::string& expectedServerName() const { return expected_server_name_; }

 private:
  TlsEngine(TlsContextSharedPtr ctx, bool is_client);
  bool init(const ClientOptions* options);
  bool advanceHandshake();
  void onHandshakeDone();
  bool writeClear(std::span<const uint8_t> bytes);
  void sendCloseNotify();
  void fail(std::string why);
  void fillPeerIdentity();

  TlsContextSharedPtr ctx_;
  bool is_client_;
  ssl_st* ssl_ = nullptr;
  bio_st* rbio_ = nullptr;  // owned by ssl_
  bio_st* wbio_ = nullptr;  // owned by ssl_
  std::vector<uint8_t> early_clear_;
  std::string expected_server_name_;
  ClientSessionSlot session_slot_;  // client, resumption on (outlives ssl_)
  ChainCheck chain_check_;          // when this side verifies its peer (outlives ssl_)
  std::string error_;
  PeerIdentity peer_;
  bool handshake_done_ = false;
  bool failed_ = false;
  bool shutdown_requested_ = false;
  bool shutdown_sent_ = false;
  bool peer_closed_ = false;
  bool truncated_ = false;
  bool transport_eof_ = false;
};

using TlsEnginePtr = std::unique_ptr<TlsEngine>;

}  // namespace sidecrypt::filters::rpc_tls
