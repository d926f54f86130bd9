#include "filters/rpc_tls/tls_engine.h"

#include "filters/common/boringssl.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <climits>
#include <ctime>

#include "filters/rpc_tls/cert_inventory.h"
#include "filters/rpc_tls/first_byte.h"
#include "filters/rpc_tls/queue_bio.h"
#include "filters/rpc_tls/ssl_errors.h"

namespace sidecrypt::filters::rpc_tls {

namespace {

int clampInt(size_t n) {
  return static_cast<int>(std::min<size_t>(n, INT_MAX));
}

}  // namespace

TlsEngine::TlsEngine(TlsContextSharedPtr ctx, bool is_client)
    : ctx_(std::move(ctx)), is_client_(is_client) {}

TlsEngine::~TlsEngine() {
  SSL_free(ssl_);  // frees both BIOs too
}

std::unique_ptr<TlsEngine> TlsEngine::client(TlsContextSharedPtr ctx,
                                             const ClientOptions& options) {
  if (!ctx || ctx->role() != TlsRole::Client) {
    return nullptr;
  }
  std::unique_ptr<TlsEngine> engine(new TlsEngine(std::move(ctx), true));
  if (engine->init(&options)) {
    engine->advanceHandshake();  // the ClientHello is ready in encOut() right away
  }
  return engine;
}

std::unique_ptr<TlsEngine> TlsEngine::server(TlsContextSharedPtr ctx) {
  if (!ctx || ctx->role() == TlsRole::Client) {
    return nullptr;
  }
  std::unique_ptr<TlsEngine> engine(new TlsEngine(std::move(ctx), false));
  engine->init(nullptr);
  return engine;
}

bool TlsEngine::init(const ClientOptions* options) {
  ssl_ = SSL_new(ctx_->native());
  rbio_ = newQueueBio();
  wbio_ = newQueueBio();
  if (ssl_ == nullptr || rbio_ == nullptr || wbio_ == nullptr) {
    BIO_free(rbio_);
    BIO_free(wbio_);
    rbio_ = wbio_ = nullptr;
    fail("cannot create a TLS connection: " + drainSslErrors());
    return false;
  }
  SSL_set_bio(ssl_, rbio_, wbio_);  // takes one reference of each (docs/spec/toolchain.md §3.9)
  // Once the handshake is over, BoringSSL frees the connection's copy of the configuration
  // (certificate, verify parameters, cipher lists): nothing reads it afterwards (renegotiation is
  // never allowed), and an idle connection keeps about 0.8 KB less.
  SSL_set_shed_handshake_config(ssl_, 1);
  if (ctx_->verifiesPeer()) {
    ctx_->attachChainCheck(ssl_, &chain_check_);
  }
  const TlsSettings& s = ctx_->settings();
  if (!is_client_) {
    SSL_set_accept_state(ssl_);
    expected_server_name_ = ctx_->localServerName();
    return true;
  }
  SSL_set_connect_state(ssl_);
  expected_server_name_ =
      serverName(options->datacenter.empty() ? s.datacenter : options->datacenter, s.domain);
  if (s.verify_server_hostname) {
    // docs/spec/consul-rpc-tls.md §2.3: SNI and a DNS-SAN-only name check (Go ignores the CN;
    // BoringSSL falls back to it unless told not to, docs/spec/toolchain.md §3.5). SSL_set1_host
    // avoids the namelen pitfall.
    if (SSL_set_tlsext_host_name(ssl_, expected_server_name_.c_str()) != 1 ||
        SSL_set1_host(ssl_, expected_server_name_.c_str()) != 1) {
      fail("cannot set server name " + expected_server_name_ + ": " + drainSslErrors());
      return false;
    }
    SSL_set_hostflags(ssl_, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT);
    chain_check_.host = expected_server_name_;  // checked on a cached chain too
  }
  if (ctx_->sessionCache() != nullptr) {
    session_slot_.key = options->session_key + "|" + expected_server_name_;
    ctx_->prepareClientSession(ssl_, &session_slot_);
  }
  if (!options->alpn.empty()) {
    std::vector<uint8_t> wire;
    for (const std::string& name : options->alpn) {
      wire.push_back(static_cast<uint8_t>(name.size()));
      wire.insert(wire.end(), name.begin(), name.end());
    }
    if (SSL_set_alpn_protos(ssl_, wire.data(), wire.size()) != 0) {  // 0 is success
      fail("invalid ALPN list");
      return false;
    }
  }
  return true;
}

void TlsEngine::fail(std::string why) {
  if (!failed_) {
    failed_ = true;
    error_ = why.empty() ? "TLS failure" : std::move(why);
  }
}

bool TlsEngine::advanceHandshake() {
  if (handshake_done_ || failed_ || ssl_ == nullptr) {
    return handshake_done_;
  }
  const int rc = SSL_do_handshake(ssl_);
  if (rc == 1) {
    onHandshakeDone();
    return true;
  }
  // docs/spec/toolchain.md §3.3: read the error before any other SSL_* call.
  const int err = SSL_get_error(ssl_, rc);
  if (err == SSL_ERROR_WANT_READ) {
    return false;
  }
  std::string why = drainSslErrors(SSL_get_verify_result(ssl_));
  if (why.empty()) {
    why = transport_eof_ ? "connection closed during the TLS handshake"
                         : "TLS handshake failed (error " + std::to_string(err) + ")";
  }
  fail("handshake failed: " + why);
  return false;
}

void TlsEngine::onHandshakeDone() {
  handshake_done_ = true;
  if (resumed() && ctx_->verifiesPeer()) {
    // The session's certificate was verified when it was made, by this same context (tickets and
    // cached sessions never cross contexts); only time can have changed. Go does not resume with
    // an expired peer certificate either; the peer's next attempt is a full handshake. (A server's
    // tickets also end at the client chain's earliest notAfter: TlsContext::keepLeaf.)
    // A resumed handshake runs no verification: what the full one established (chain, anchor;
    // on a server also the client's names and expiry) comes from the context's verified chains.
    if (ctx_->keepsOnlyPeerDigest()) {
      ctx_->recallChain(ssl_, &chain_check_);
      if (!chain_check_.leaf_known || std::time(nullptr) > chain_check_.leaf.leaf_not_after) {
        fillPeerIdentity();
        fail(
            "resumed session: the peer's certificate has expired or its verified chain is no "
            "longer known");
        return;
      }
    } else {
      bssl::UniquePtr<X509> leaf(SSL_get_peer_certificate(ssl_));
      if (!leaf || X509_cmp_current_time(X509_get0_notAfter(leaf.get())) <= 0) {
        fillPeerIdentity();
        fail("resumed session: the peer's certificate has expired");
        return;
      }
      ctx_->recallChain(ssl_, &chain_check_);
    }
  }
  fillPeerIdentity();
  if (!early_clear_.empty()) {
    std::vector<uint8_t> held;
    held.swap(early_clear_);
    if (!writeClear(held)) {
      return;
    }
  }
  if (shutdown_requested_) {
    sendCloseNotify();
  }
}

void TlsEngine::fillPeerIdentity() {
  bssl::UniquePtr<X509> leaf(SSL_get_peer_certificate(ssl_));
  // A server's session keeps no client certificate (TlsContext::keepsOnlyPeerDigest): then its
  // facts were taken when the chain was verified, or from the verified leaves when resumed.
  const bool kept = !leaf && chain_check_.leaf_known;
  peer_.presented_certificate = leaf != nullptr || kept;
  peer_.verify_result = SSL_get_verify_result(ssl_);
  peer_.verified =
      ctx_->verifiesPeer() && peer_.presented_certificate && peer_.verify_result == X509_V_OK;
  if (!peer_.presented_certificate) {
    return;
  }
  // Moved, not copied: an idle connection holds the names once.
  peer_.common_name = kept ? std::move(chain_check_.leaf.common_name) : certCommonName(leaf.get());
  peer_.dns_names = kept ? std::move(chain_check_.leaf.dns_names) : certDnsNames(leaf.get());
  // The chain as this context verified it (the handshake's own verification, a cached one, or
  // for a resumed session the one it was made with): CAs, and the EKU the peer's role needs
  // (clientAuth on a server, serverAuth on a client).
  peer_.has_anchor = chain_check_.verified;
  peer_.anchor_sha256 = chain_check_.anchor;
  // docs/spec/consul-rpc-tls.md §2.5: as AuthorizeServerConn, that chain and the name
  // server.<dc>.<domain> as a DNS SAN, never the CN.
  peer_.verifies_as_server =
      chain_check_.verified &&
      (kept
           ? chain_check_.leaf.names_server
           : X509_check_host(leaf.get(), expected_server_name_.data(), expected_server_name_.size(),
                             X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, nullptr) == 1);
  ERR_clear_error();
}

size_t TlsEngine::encIn(std::span<const uint8_t> bytes) {
  if (failed_ || ssl_ == nullptr) {
    return bytes.size();  // nothing more can be decrypted; the caller is closing
  }
  if (transport_eof_) {
    return 0;
  }
  const size_t buffered = queueBioPending(rbio_);
  const size_t room = buffered < kMaxEncInBuffered ? kMaxEncInBuffered - buffered : 0;
  const size_t n = std::min(room, bytes.size());
  if (n > 0 && !queueBioWrite(rbio_, bytes.first(n))) {
    fail("cannot buffer ciphertext: " + drainSslErrors());
    return bytes.size();
  }
  advanceHandshake();
  return n;
}

void TlsEngine::encInEof() {
  if (transport_eof_ || ssl_ == nullptr) {
    return;
  }
  transport_eof_ = true;
  queueBioSetEof(rbio_);  // an empty read BIO now means EOF, not "retry"
  advanceHandshake();
}

size_t TlsEngine::encPending() const {
  return wbio_ != nullptr ? queueBioPending(wbio_) : 0;
}

size_t TlsEngine::encOut(std::span<uint8_t> out) {
  if (wbio_ == nullptr || out.empty()) {
    return 0;
  }
  return queueBioRead(wbio_, out);
}

void TlsEngine::attachTransport(Buffer* cipher_in, Buffer* cipher_out) {
  if (rbio_ == nullptr || wbio_ == nullptr) {
    return;
  }
  queueBioAttachSource(rbio_, cipher_in);
  queueBioAttachSink(wbio_, cipher_out);
}

size_t TlsEngine::clearIn(std::span<const uint8_t> bytes) {
  if (failed_ || shutdown_requested_ || ssl_ == nullptr) {
    return 0;
  }
  if (!handshake_done_) {
    const size_t n = std::min(kMaxEarlyClear - early_clear_.size(), bytes.size());
    early_clear_.insert(early_clear_.end(), bytes.begin(),
                        bytes.begin() + static_cast<ptrdiff_t>(n));
    return n;
  }
  const size_t pending = encPending();
  const size_t room = pending < kMaxEncOutBuffered ? kMaxEncOutBuffered - pending : 0;
  const size_t n = std::min(room, bytes.size());
  if (n == 0 || !writeClear(bytes.first(n))) {
    return 0;
  }
  return n;
}

bool TlsEngine::writeClear(std::span<const uint8_t> bytes) {
  // A memory BIO never blocks, so SSL_write takes everything at once (several records).
  while (!bytes.empty()) {
    const int rc = SSL_write(ssl_, bytes.data(), clampInt(bytes.size()));
    if (rc <= 0) {
      const int err = SSL_get_error(ssl_, rc);
      std::string why = drainSslErrors();
      fail("write failed: " + (why.empty() ? "error " + std::to_string(err) : why));
      return false;
    }
    bytes = bytes.subspan(static_cast<size_t>(rc));
  }
  return true;
}

ptrdiff_t TlsEngine::clearOut(std::span<uint8_t> out) {
  if (failed_) {
    return kFailed;
  }
  if (peer_closed_ || truncated_) {
    return kEof;
  }
  if (!advanceHandshake()) {
    return failed_ ? kFailed : 0;
  }
  if (out.empty()) {
    return 0;
  }
  const int rc = SSL_read(ssl_, out.data(), clampInt(out.size()));
  if (rc > 0) {
    return rc;
  }
  const int err = SSL_get_error(ssl_, rc);  // docs/spec/toolchain.md §3.3: immediately
  switch (err) {
    case SSL_ERROR_WANT_READ:
      return 0;
    case SSL_ERROR_ZERO_RETURN:
      // docs/spec/rpc-peers.md §2.1: close_notify; this side may keep writing.
      peer_closed_ = true;
      return kEof;
    case SSL_ERROR_SYSCALL:
      if (transport_eof_ && ERR_peek_error() == 0) {
        // docs/spec/rpc-peers.md §2.3: a bare FIN. Consul always sends close_notify, so this is an
        // abort or a foreign client; the caller decides whether to pass the FIN on.
        truncated_ = true;
        return kEof;
      }
      break;
    default:
      break;
  }
  std::string why = drainSslErrors(SSL_get_verify_result(ssl_));
  fail("read failed: " + (why.empty() ? "error " + std::to_string(err) : why));
  return kFailed;
}

void TlsEngine::shutdownWrite() {
  if (shutdown_requested_ || failed_ || ssl_ == nullptr) {
    return;
  }
  shutdown_requested_ = true;
  if (handshake_done_) {
    sendCloseNotify();
  }
}

void TlsEngine::sendCloseNotify() {
  // docs/spec/rpc-peers.md §2.2: SSL_shutdown once (0, or 1 if the peer closed first), then keep
  // reading; never call it again to wait, BoringSSL treats data arriving then as fatal.
  const int rc = SSL_shutdown(ssl_);
  if (rc < 0) {
    const int err = SSL_get_error(ssl_, rc);
    std::string why = drainSslErrors();
    fail("shutdown failed: " + (why.empty() ? "error " + std::to_string(err) : why));
    return;
  }
  shutdown_sent_ = true;
}

bool TlsEngine::resumed() const {
  return handshake_done_ && ssl_ != nullptr && SSL_session_reused(ssl_) == 1;
}

bool TlsEngine::fullyClosed() const {
  return shutdown_sent_ && peer_closed_ && encPending() == 0;
}

std::string TlsEngine::alpn() const {
  const uint8_t* data = nullptr;
  unsigned len = 0;
  if (ssl_ != nullptr) {
    SSL_get0_alpn_selected(ssl_, &data, &len);
  }
  return data != nullptr ? std::string(reinterpret_cast<const char*>(data), len) : "";
}

std::string TlsEngine::version() const {
  return handshake_done_ ? SSL_get_version(ssl_) : "";
}

std::string TlsEngine::cipher() const {
  const SSL_CIPHER* c = handshake_done_ ? SSL_get_current_cipher(ssl_) : nullptr;
  return c != nullptr ? SSL_CIPHER_standard_name(c) : "";
}

std::string TlsEngine::sni() const {
  const char* name =
      ssl_ != nullptr ? SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name) : nullptr;
  return name != nullptr ? name : "";
}

}  // namespace sidecrypt::filters::rpc_tls
