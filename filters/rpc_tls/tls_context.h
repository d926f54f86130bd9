#pragma once

#include <cstdint>
#include <ctime>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "filters/rpc_tls/cert_inventory.h"
#include "filters/rpc_tls/session_cache.h"
#include "filters/rpc_tls/ticket_keys.h"
#include "filters/rpc_tls/tls_version.h"
#include "filters/rpc_tls/verified_chains.h"

// Forward declarations only: users of this header need no BoringSSL include path order.
struct ssl_ctx_st;
struct ssl_st;
struct x509_store_st;
struct x509_store_ctx_st;
struct x509_st;

namespace sidecrypt::filters::rpc_tls {

// Consul's internal-RPC TLS settings (docs/spec/consul-rpc-tls.md §2.1), as plain data. proxy/ maps
// its own config onto this; nothing here reads TOML.
struct TlsSettings {
  // ca_file wins over ca_path when both are set (docs/spec/consul-rpc-tls.md §2.4).
  std::filesystem::path ca_file;
  std::filesystem::path ca_path;    // walked recursively; every file must hold a PEM certificate
  std::filesystem::path cert_file;  // leaf first, then intermediates
  std::filesystem::path key_file;   // SEC1, PKCS#8 or PKCS#1; unencrypted
  bool verify_incoming = false;
  bool verify_outgoing = false;
  // Implies verify_outgoing (docs/spec/consul-rpc-tls.md §2.1).
  bool verify_server_hostname = false;
  TlsVersion tls_min_version = TlsVersion::Tls12;
  std::vector<std::string> tls_cipher_suites;  // Consul's IANA names; TLS <= 1.2 only
  std::string datacenter = "dc1";              // the local datacenter
  std::string domain = "consul";
  // TLS 1.3 PSK with (EC)DHE and TLS 1.2 tickets: servers issue and accept tickets under keys of
  // their own context; clients keep a session per destination (docs/configuration.md).
  bool session_resumption = true;
};

enum class TlsRole : uint8_t {
  Client,        // outbound 0x03 upgrade (docs/spec/consul-rpc-tls.md §2.3)
  Server,        // inbound 0x03 upgrade (docs/spec/consul-rpc-tls.md §2.2): client certs only with
                 // verify_incoming
  NativeServer,  // inbound native TLS (docs/spec/consul-rpc-tls.md §1.4): ALPN list, always
                 // requires a client certificate
};

// Consul's ten accepted tls_cipher_suites names (docs/spec/consul-rpc-tls.md §2.2).
const std::vector<std::string_view>& consulCipherSuites();

// A client connection's place in its context's SessionCache.
struct ClientSessionSlot {
  std::string key;                      // destination address and expected server name
  std::time_t offered_verified_at = 0;  // of the session offered, if any
};

// What the verification of a peer's chain found for one connection (TlsEngine owns one; the
// context's verify callback and recallChain fill it).
struct ChainCheck {
  // The DNS SAN the leaf must carry (a client with verify_server_hostname); "" for none. Checked
  // on every handshake, whether or not the chain came from the cache.
  std::string host;
  bool verified = false;   // chain, CA, EKU and dates hold under this context
  bool cache_hit = false;  // taken from the context's VerifiedChainCache
  bool ran = false;        // a full X.509 path verification ran (a cache miss)
  Sha256 anchor{};         // the configured CA the chain ends at, when verified
  // Server contexts keep only the SHA-256 of the client's leaf in their sessions
  // (TlsContext::keepsOnlyPeerDigest): what the connection needs of that certificate is taken
  // when its chain is verified, or for a resumed session from the context's verified leaves.
  bool leaf_known = false;
  Sha256 leaf_sha256{};
  VerifiedLeaf leaf;
};

class TlsContext;
using TlsContextSharedPtr = std::shared_ptr<const TlsContext>;

// One SSL_CTX built from TlsSettings for one role. Immutable once built; shared by every
// connection started while it is current (a reload builds a new one, docs/spec/consul-rpc-tls.md
// §2.6). The SSL_CTX holds the private key; nothing here ever formats key material into a message.
class TlsContext {
 public:
  // Errors are returned as text that names the offending file or setting, e.g.
  // "ca_file /etc/consul/ca.pem: no PEM certificate found".
  static std::variant<TlsContextSharedPtr, std::string> create(const TlsSettings& settings,
                                                               TlsRole role);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  TlsRole role() const { return role_; }
  const TlsSettings& settings() const { return settings_; }
  // Client: verify_outgoing or verify_server_hostname. Server: verify_incoming (Native: always).
  bool verifiesPeer() const { return verifies_peer_; }
  // A server that verifies its clients: its sessions (and tickets) keep only the SHA-256 of the
  // client's leaf, not the certificate chain (about 7 KB less per connection); the leaf's facts
  // are in the connection's ChainCheck and the context's verified leaves instead.
  bool keepsOnlyPeerDigest() const { return keeps_only_peer_digest_; }
  bool hasCertificate() const { return has_certificate_; }
  bool hasCa() const { return has_ca_; }
  // server.<local dc>.<domain>
  const std::string& localServerName() const { return local_server_name_; }
  // Every certificate this context loaded (cert_file's chain, then the CAs), parsed from the same
  // bytes the SSL_CTX holds; the leaf says which configured CA it chains to.
  const CertInventory& certificates() const { return certificates_; }

  // The underlying objects, for TlsEngine (and tests that must build an odd peer, e.g. a
  // TLS 1.1-only one). The context keeps ownership.
  ssl_ctx_st* native() const { return ctx_; }
  x509_store_st* caStore() const;

  // Resumption state (null when session_resumption is off): a server's ticket keys, a client's
  // sessions. Both belong to this context only, so nothing crosses a reload.
  TicketKeys* ticketKeys() const { return ticket_keys_.get(); }
  SessionCache* sessionCache() const { return session_cache_.get(); }
  // Client: offers the session cached for `slot->key` on `ssl`, and files the sessions the server
  // gives this connection under it. `slot` must outlive `ssl`.
  void prepareClientSession(ssl_st* ssl, ClientSessionSlot* slot) const;

  // Verified peer chains (null when this context verifies no peer). The handshake's own chain
  // verification goes through it once `check` is attached to `ssl` (it must outlive `ssl`).
  VerifiedChainCache* chainCache() const { return chain_cache_.get(); }
  // What the cache's entries are keyed by besides the chain: this context's CA set and the
  // purpose its role requires of a peer (the same files give the same value).
  const Sha256& trust() const { return trust_; }
  void attachChainCheck(ssl_st* ssl, ChainCheck* check) const;
  // A resumed session's chain (verified by this context when the session was made): from the
  // cache, or verified once more when the cache no longer holds it. Fills `check` (the name in
  // check->host is not checked here). With keepsOnlyPeerDigest() the session has no chain to
  // verify again: the facts come from the verified leaves by the session's leaf SHA-256, and
  // check->leaf_known stays false when they are gone (evicted, or past the chain's dates).
  void recallChain(ssl_st* ssl, ChainCheck* check) const;

 private:
  TlsContext(const TlsSettings& settings, TlsRole role);
  std::string build();
  std::string loadTrust();
  std::string loadIdentity();
  std::string useCertificateChain(const std::filesystem::path& file);
  std::string configureProtocol();
  std::string configureResumption();
  void configureVerification();
  void checkLeafChain();
  void computeTrust();
  static int verifyPeerChain(x509_store_ctx_st* store_ctx, void* arg);
  void keepLeaf(ssl_st* ssl, x509_st* leaf, ChainCheck& check) const;

  TlsSettings settings_;
  TlsRole role_;
  ssl_ctx_st* ctx_ = nullptr;
  bool verifies_peer_ = false;
  bool keeps_only_peer_digest_ = false;
  bool has_certificate_ = false;
  bool has_ca_ = false;
  std::string local_server_name_;
  CertInventory certificates_;
  std::unique_ptr<TicketKeys> ticket_keys_;
  std::unique_ptr<SessionCache> session_cache_;
  std::unique_ptr<VerifiedChainCache> chain_cache_;
  Sha256 trust_{};  // the CA set and the purpose a peer chain is verified under
};

}  // namespace sidecrypt::filters::rpc_tls
