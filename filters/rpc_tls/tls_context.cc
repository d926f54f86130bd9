#include "filters/rpc_tls/tls_context.h"

#include "filters/common/boringssl.h"

#include <openssl/digest.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/pool.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstdint>
#include <ctime>
#include <optional>
#include <string_view>
#include <system_error>

#include "filters/common/regular_file.h"
#include "filters/rpc_tls/first_byte.h"
#include "filters/rpc_tls/ssl_errors.h"

namespace sidecrypt::filters::rpc_tls {

namespace {

uint16_t protocolVersion(TlsVersion v) {
  switch (v) {
    case TlsVersion::Tls10:
      return TLS1_VERSION;
    case TlsVersion::Tls11:
      return TLS1_1_VERSION;
    case TlsVersion::Tls12:
      return TLS1_2_VERSION;
    case TlsVersion::Tls13:
      return TLS1_3_VERSION;
  }
  return TLS1_2_VERSION;
}

// Never prompt for a passphrase: Consul does not support encrypted keys
// (docs/spec/consul-rpc-tls.md §2.4).
int refusePassphrase(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*userdata*/) {
  return 0;
}

// PEM files are at most this large (a CA bundle of a few hundred certificates is ~250 KiB).
constexpr size_t kMaxPemBytes = size_t{16} << 20;

// A certificate, key or CA file, read whole into locked memory without blocking on the path
// (a FIFO or device is refused): a BIO over it, or an error sentence without the path.
struct PemFile {
  SecretBytes body;
  bssl::UniquePtr<BIO> bio;
};
std::variant<PemFile, std::string> readPem(const std::filesystem::path& file) {
  auto opened = openRegularFile(file);
  if (auto* refused = std::get_if<FileRefused>(&opened)) {
    return refused->error != 0 ? "cannot open: " + refused->text : refused->text;
  }
  auto read = readAll(std::get<RegularFile>(opened), kMaxPemBytes);
  if (auto* err = std::get_if<std::string>(&read)) {
    return *err;
  }
  PemFile pem{std::move(std::get<SecretBytes>(read)), nullptr};
  pem.bio.reset(BIO_new_mem_buf(pem.body.data(), static_cast<ptrdiff_t>(pem.body.size())));
  if (!pem.bio) {
    return "out of memory";
  }
  return pem;
}

// Whether the error queue ends with "no more PEM blocks" (the normal end of a PEM file).
bool onlyEndOfPem() {
  const uint32_t last = ERR_peek_last_error();
  return last == 0 ||
         (ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE);
}

// Adds every PEM certificate in `file` to `store` (and lists it in `inventory`); returns how
// many, or an error message.
std::variant<size_t, std::string> addPemCertificates(const std::filesystem::path& file,
                                                     X509_STORE* store, CertInventory& inventory) {
  auto read = readPem(file);
  if (auto* err = std::get_if<std::string>(&read)) {
    return *err;
  }
  BIO* bio = std::get<PemFile>(read).bio.get();
  size_t count = 0;
  while (bssl::UniquePtr<X509> cert{PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)}) {
    if (X509_STORE_add_cert(store, cert.get()) != 1) {
      return "cannot add certificate: " + drainSslErrors();
    }
    inventory.add(describeCertificate(cert.get(), CertRole::Ca, file.string()));
    ++count;
  }
  // Running out of PEM blocks ends the loop with NO_START_LINE; anything else is a damaged one.
  if (!onlyEndOfPem()) {
    return "damaged PEM certificate: " + drainSslErrors();
  }
  ERR_clear_error();
  if (count == 0) {
    return std::string("no PEM certificate found");
  }
  return count;
}

// The native-TLS server picks in its own preference order, as Go does; with no overlap the
// handshake fails with no_application_protocol (docs/spec/consul-rpc-tls.md §1.4).
int selectConsulAlpn(SSL* /*ssl*/, const uint8_t** out, uint8_t* out_len, const uint8_t* in,
                     unsigned in_len, void* /*arg*/) {
  for (std::string_view mine : kConsulAlpnProtocols) {
    for (unsigned i = 0; i < in_len;) {
      const unsigned len = in[i];
      if (i + 1 + len > in_len) {
        break;
      }
      if (std::string_view(reinterpret_cast<const char*>(in + i + 1), len) == mine) {
        *out = in + i + 1;
        *out_len = static_cast<uint8_t>(len);
        return SSL_TLSEXT_ERR_OK;
      }
      i += 1 + len;
    }
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

}  // namespace

const std::vector<std::string_view>& consulCipherSuites() {
  static const std::vector<std::string_view> kSuites = {
      "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
      "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
      "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
      "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
      "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
      "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
      "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
      "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
      "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
      "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
  };
  return kSuites;
}

TlsContext::TlsContext(const TlsSettings& settings, TlsRole role)
    : settings_(settings),
      role_(role),
      local_server_name_(serverName(settings.datacenter, settings.domain)) {}

TlsContext::~TlsContext() {
  SSL_CTX_free(ctx_);
}

std::variant<TlsContextSharedPtr, std::string> TlsContext::create(const TlsSettings& settings,
                                                                  TlsRole role) {
  std::shared_ptr<TlsContext> ctx(new TlsContext(settings, role));
  std::string error = ctx->build();
  if (!error.empty()) {
    return error;
  }
  return TlsContextSharedPtr(std::move(ctx));
}

x509_store_st* TlsContext::caStore() const {
  return SSL_CTX_get_cert_store(ctx_);
}

std::string TlsContext::build() {
  ERR_clear_error();
  const TlsSettings& s = settings_;
  if (s.cert_file.empty() != s.key_file.empty()) {
    return "cert_file and key_file must be set together";  // docs/spec/consul-rpc-tls.md §2.4
  }
  const bool is_server = role_ != TlsRole::Client;
  if (is_server && s.cert_file.empty()) {
    return "a TLS server needs cert_file and key_file";
  }
  if (role_ == TlsRole::Client && !s.verify_outgoing && !s.verify_server_hostname) {
    // docs/spec/consul-rpc-tls.md §2.3: without verify_outgoing Consul sends plaintext; an
    // unverified TLS client would be a silent downgrade of what the operator asked for.
    return "outgoing TLS needs verify_outgoing (or verify_server_hostname)";
  }
  ctx_ = SSL_CTX_new(TLS_method());
  if (ctx_ == nullptr) {
    return "cannot create a TLS context: " + drainSslErrors();
  }
  // Peer certificates received (and those in sessions and tickets) share one copy per distinct
  // certificate, process-wide: every connection of one peer, or to one server, holds the same
  // bytes. The pool is never freed, so it outlives every context and session.
  static CRYPTO_BUFFER_POOL* const kCertificatePool = CRYPTO_BUFFER_POOL_new();
  if (kCertificatePool != nullptr) {
    SSL_CTX_set0_buffer_pool(ctx_, kCertificatePool);
  }
  for (auto step :
       {&TlsContext::configureProtocol, &TlsContext::loadTrust, &TlsContext::loadIdentity}) {
    std::string error = (this->*step)();
    if (!error.empty()) {
      return error;
    }
  }
  configureVerification();
  checkLeafChain();
  if (verifies_peer_ && has_ca_) {
    computeTrust();
    chain_cache_ = std::make_unique<VerifiedChainCache>();
    SSL_CTX_set_cert_verify_callback(ctx_, verifyPeerChain, this);
    if (role_ != TlsRole::Client) {
      // The session (and a ticket) keeps the SHA-256 of the client's leaf instead of its chain
      // (parsed, ~6 KB per connection); keepLeaf takes what the connection needs of it.
      keeps_only_peer_digest_ = true;
      SSL_CTX_set_retain_only_sha256_of_client_certs(ctx_, 1);
    }
  }
  if (verifies_peer_ && !has_ca_) {
    // Consul's own load-time errors (docs/spec/consul-rpc-tls.md §2.1).
    switch (role_) {
      case TlsRole::Client:
        return "VerifyOutgoing set but no CA certificates were provided";
      case TlsRole::Server:
        return "VerifyIncoming set but no CA certificates were provided";
      case TlsRole::NativeServer:
        return "native TLS (ALPN) always verifies client certificates: set ca_file or ca_path";
    }
  }
  return "";
}

std::string TlsContext::configureProtocol() {
  // docs/spec/toolchain.md §3.4: a fresh SSL_CTX allows TLS 1.0, so the minimum is always set. The
  // maximum stays at BoringSSL's highest (1.3), as Go's does.
  if (SSL_CTX_set_min_proto_version(ctx_, protocolVersion(settings_.tls_min_version)) != 1) {
    return "tls_min_version: " + drainSslErrors();
  }
  if (!settings_.tls_cipher_suites.empty()) {
    if (settings_.tls_min_version == TlsVersion::Tls13) {
      return "tls_cipher_suites: TLS 1.3 cipher suites are not configurable";  // docs/spec/consul-rpc-tls.md
                                                                               // §2.2
    }
    std::string list;
    for (const std::string& name : settings_.tls_cipher_suites) {
      const auto& known = consulCipherSuites();
      if (std::find(known.begin(), known.end(), name) == known.end()) {
        return "tls_cipher_suites: unsupported cipher suite '" + name + "'";
      }
      list += (list.empty() ? "" : ":") + name;
    }
    if (SSL_CTX_set_strict_cipher_list(ctx_, list.c_str()) != 1) {
      return "tls_cipher_suites: " + drainSslErrors();
    }
  }
  if (role_ == TlsRole::NativeServer) {
    SSL_CTX_set_alpn_select_cb(ctx_, selectConsulAlpn, nullptr);
  }
  return configureResumption();
}

namespace {

// The SHA-256 a session keeps of its peer's leaf when its context retains only that
// (SSL_CTX_set_retain_only_sha256_of_client_certs), or nullopt.
std::optional<Sha256> sessionPeerSha256(const SSL_SESSION* session) {
  const uint8_t* sha = nullptr;
  size_t len = 0;
  if (session != nullptr) {
    SSL_SESSION_get0_peer_sha256(session, &sha, &len);
  }
  Sha256 out{};
  if (sha == nullptr || len != out.size()) {
    return std::nullopt;
  }
  std::copy(sha, sha + len, out.begin());
  return out;
}

// Where the callbacks find their TlsContext (on the SSL_CTX) and a client connection's cache key
// (on the SSL).
int contextIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}
int sessionKeyIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}
int chainCheckIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}
const TlsContext* contextOf(const SSL* ssl) {
  return static_cast<const TlsContext*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), contextIndex()));
}

int ticketKeyCallback(SSL* ssl, uint8_t* key_name, uint8_t* iv, EVP_CIPHER_CTX* cipher,
                      HMAC_CTX* hmac, int encrypt) {
  const TlsContext* ctx = contextOf(ssl);
  if (ctx == nullptr || ctx->ticketKeys() == nullptr) {
    return encrypt != 0 ? -1 : 0;
  }
  TicketKeys& keys = *ctx->ticketKeys();
  VerifiedChainCache* leaves = ctx->keepsOnlyPeerDigest() ? ctx->chainCache() : nullptr;
  // A server that keeps only its client's leaf SHA-256 can resume a session only while the
  // leaf's record lives: the ticket names that record (masked), and a ticket whose record is gone
  // (evicted, cleared, past its dates) is not resumed: the client gets a full handshake.
  if (encrypt == 0 && leaves != nullptr &&
      !leaves->hasLeafId(keys.openTag(key_name, iv), std::time(nullptr))) {
    return 0;
  }
  const int rc = keys.operate(key_name, iv, cipher, hmac, encrypt != 0, TicketKeys::Clock::now());
  if (encrypt != 0 && rc == 1 && leaves != nullptr) {
    // During the handshake SSL_get_session is the session the ticket is made from.
    uint64_t id = 0;
    if (const auto leaf = sessionPeerSha256(SSL_get_session(ssl))) {
      id = leaves->leafId(*leaf, ctx->trust(), std::time(nullptr));
    }
    keys.sealTag(key_name, iv, id);  // 0 names nothing: such a ticket is never resumed
  }
  return rc;
}

// A client's new session (TLS 1.2: at the end of the handshake; TLS 1.3: per NewSessionTicket).
// Returning 1 keeps the reference BoringSSL handed over.
int newClientSession(SSL* ssl, SSL_SESSION* session) {
  const TlsContext* ctx = contextOf(ssl);
  const auto* slot = static_cast<const ClientSessionSlot*>(SSL_get_ex_data(ssl, sessionKeyIndex()));
  if (ctx == nullptr || ctx->sessionCache() == nullptr || slot == nullptr ||
      SSL_SESSION_is_resumable(session) != 1) {
    return 0;
  }
  // A ticket received on a resumed connection carries the chain verified back then.
  const std::time_t verified_at =
      SSL_session_reused(ssl) == 1 ? slot->offered_verified_at : std::time(nullptr);
  ctx->sessionCache()->store(slot->key, session, verified_at);
  return 1;
}

// The session ID context: sessions of one role never resume under another.
constexpr std::string_view kSessionContext[] = {"sidecrypt-rpc-client", "sidecrypt-rpc-0x03",
                                                "sidecrypt-rpc-native"};

}  // namespace

std::string TlsContext::configureResumption() {
  // Session-ID caches stay off on both sides: a server resumes only from tickets sealed with this
  // context's keys (docs/spec/toolchain.md §3.8: SSL_OP_NO_TICKET plus SSL_SESS_CACHE_OFF stops
  // both kinds of resumption), a client only from its own SessionCache.
  SSL_CTX_set_session_cache_mode(ctx_, SSL_SESS_CACHE_OFF);
  if (!settings_.session_resumption) {
    // As Consul itself (docs/spec/consul-rpc-tls.md §2.3): no tickets, nothing cached.
    if (role_ != TlsRole::Client) {
      SSL_CTX_set_options(ctx_, SSL_OP_NO_TICKET);
    }
    return "";
  }
  if (SSL_CTX_set_ex_data(ctx_, contextIndex(), this) != 1) {
    return "cannot configure session resumption: " + drainSslErrors();
  }
  const auto& sid = kSessionContext[static_cast<size_t>(role_)];
  if (SSL_CTX_set_session_id_context(ctx_, reinterpret_cast<const uint8_t*>(sid.data()),
                                     sid.size()) != 1) {
    return "cannot configure session resumption: " + drainSslErrors();
  }
  if (role_ == TlsRole::Client) {
    // SSL_SESS_CACHE_CLIENT only turns the new-session callback on (BoringSSL keeps no client
    // cache of its own).
    session_cache_ = std::make_unique<SessionCache>();
    SSL_CTX_set_session_cache_mode(ctx_, SSL_SESS_CACHE_CLIENT);
    SSL_CTX_sess_set_new_cb(ctx_, newClientSession);
    return "";
  }
  // BoringSSL resumes TLS 1.3 only as PSK with (EC)DHE (psk_dhe_ke), never psk_ke alone, so a
  // resumed session still gets forward secrecy. One ticket per connection is enough: clients
  // keep the newest.
  ticket_keys_ = std::make_unique<TicketKeys>();
  SSL_CTX_set_tlsext_ticket_key_cb(ctx_, ticketKeyCallback);
  SSL_CTX_set_num_tickets(ctx_, 1);
  // A ticket outlives neither its key (two rotation periods) nor these lifetimes.
  const auto lifetime = static_cast<uint32_t>(TicketKeys::kDefaultPeriod.count());
  SSL_CTX_set_timeout(ctx_, lifetime);
  SSL_CTX_set_session_psk_dhe_timeout(ctx_, lifetime);
  return "";
}

void TlsContext::prepareClientSession(ssl_st* ssl, ClientSessionSlot* slot) const {
  if (!session_cache_ || slot == nullptr) {
    return;
  }
  SSL_set_ex_data(ssl, sessionKeyIndex(), slot);
  if (SSL_SESSION* session =
          session_cache_->find(slot->key, std::time(nullptr), &slot->offered_verified_at)) {
    SSL_set_session(ssl, session);  // takes its own reference
    SSL_SESSION_free(session);
  }
}

std::string TlsContext::loadTrust() {
  X509_STORE* store = SSL_CTX_get_cert_store(ctx_);
  const TlsSettings& s = settings_;
  // docs/spec/consul-rpc-tls.md §2.4: ca_file wins, ca_path is then ignored.
  if (!s.ca_file.empty()) {
    auto added = addPemCertificates(s.ca_file, store, certificates_);
    if (const auto* error = std::get_if<std::string>(&added)) {
      return "ca_file " + s.ca_file.string() + ": " + *error;
    }
    has_ca_ = true;
    return "";
  }
  if (s.ca_path.empty()) {
    return "";
  }
  std::error_code ec;
  std::vector<std::filesystem::path> files;
  for (std::filesystem::recursive_directory_iterator it(s.ca_path, ec), end; !ec && it != end;
       it.increment(ec)) {
    if (!it->is_directory(ec)) {
      files.push_back(it->path());
    }
  }
  if (ec) {
    return "ca_path " + s.ca_path.string() + ": " + ec.message();
  }
  if (files.empty()) {
    return "ca_path " + s.ca_path.string() + ": no CA certificates found";
  }
  std::sort(files.begin(), files.end());  // deterministic: the first bad file is reported
  for (const auto& file : files) {
    auto added = addPemCertificates(file, store, certificates_);
    if (const auto* error = std::get_if<std::string>(&added)) {
      return "ca_path " + s.ca_path.string() + ": " + file.string() + ": " + *error;
    }
  }
  has_ca_ = true;
  return "";
}

std::string TlsContext::loadIdentity() {
  const TlsSettings& s = settings_;
  if (s.cert_file.empty()) {
    return "";
  }
  if (auto err = useCertificateChain(s.cert_file); !err.empty()) {
    return "cert_file " + s.cert_file.string() + ": " + err;
  }
  // The key file is read into locked memory and parsed from there: no copy in a std::string.
  auto read = readPem(s.key_file);
  if (auto* err = std::get_if<std::string>(&read)) {
    return "key_file " + s.key_file.string() + ": " + *err;
  }
  bssl::UniquePtr<EVP_PKEY> key(PEM_read_bio_PrivateKey(std::get<PemFile>(read).bio.get(), nullptr,
                                                        refusePassphrase, nullptr));
  if (!key) {
    return "key_file " + s.key_file.string() +
           ": no usable private key (PEM SEC1, PKCS#8 or PKCS#1, unencrypted): " + drainSslErrors();
  }
  if (SSL_CTX_use_PrivateKey(ctx_, key.get()) != 1 || SSL_CTX_check_private_key(ctx_) != 1) {
    ERR_clear_error();
    return "key_file " + s.key_file.string() + " does not match cert_file " + s.cert_file.string();
  }
  has_certificate_ = true;
  return "";
}

std::string TlsContext::useCertificateChain(const std::filesystem::path& file) {
  // What SSL_CTX_use_certificate_chain_file does, over a file read without blocking: the first
  // certificate is the leaf, the rest its chain.
  auto read = readPem(file);
  if (auto* err = std::get_if<std::string>(&read)) {
    return *err;
  }
  BIO* bio = std::get<PemFile>(read).bio.get();
  bssl::UniquePtr<X509> leaf(PEM_read_bio_X509_AUX(bio, nullptr, nullptr, nullptr));
  if (!leaf || SSL_CTX_use_certificate(ctx_, leaf.get()) != 1) {
    return drainSslErrors();
  }
  SSL_CTX_clear_chain_certs(ctx_);
  CertInventory chain;
  chain.add(describeCertificate(leaf.get(), CertRole::Leaf, file.string()));
  while (bssl::UniquePtr<X509> cert{PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)}) {
    if (SSL_CTX_add1_chain_cert(ctx_, cert.get()) != 1) {
      return drainSslErrors();
    }
    chain.add(describeCertificate(cert.get(), CertRole::Intermediate, file.string()));
  }
  if (!onlyEndOfPem()) {
    return "damaged PEM certificate: " + drainSslErrors();
  }
  ERR_clear_error();
  // cert_file first in the inventory, then the CAs loaded before it.
  for (auto& c : certificates_.certs) {
    chain.add(std::move(c));
  }
  certificates_ = std::move(chain);
  return "";
}

namespace {

// Chain building only: expiry and not-yet-valid are reported on their own (CertState), so a
// leaf that chains but has expired still says which CA it chains to.
int ignoreValidityDates(int ok, X509_STORE_CTX* store_ctx) {
  const int err = X509_STORE_CTX_get_error(store_ctx);
  if (err == X509_V_ERR_CERT_HAS_EXPIRED || err == X509_V_ERR_CERT_NOT_YET_VALID) {
    return 1;
  }
  return ok;
}

}  // namespace

void TlsContext::checkLeafChain() {
  auto leaf = std::find_if(certificates_.certs.begin(), certificates_.certs.end(),
                           [](const CertificateInfo& c) { return c.role == CertRole::Leaf; });
  X509* cert = SSL_CTX_get0_certificate(ctx_);
  if (!has_ca_ || leaf == certificates_.certs.end() || cert == nullptr) {
    return;
  }
  STACK_OF(X509)* chain = nullptr;
  SSL_CTX_get0_chain_certs(ctx_, &chain);
  bssl::UniquePtr<X509_STORE_CTX> store_ctx(X509_STORE_CTX_new());
  if (!store_ctx ||
      X509_STORE_CTX_init(store_ctx.get(), SSL_CTX_get_cert_store(ctx_), cert, chain) != 1) {
    leaf->chain_error = "cannot check the chain: " + drainSslErrors();
    return;
  }
  X509_STORE_CTX_set_verify_cb(store_ctx.get(), ignoreValidityDates);
  if (X509_verify_cert(store_ctx.get()) == 1) {
    STACK_OF(X509)* built = X509_STORE_CTX_get0_chain(store_ctx.get());
    const size_t n = built != nullptr ? sk_X509_num(built) : 0;
    if (n > 0) {
      leaf->chains_to = describeCertificate(sk_X509_value(built, n - 1), CertRole::Ca, "").sha256;
    }
  } else {
    leaf->chain_error = X509_verify_cert_error_string(X509_STORE_CTX_get_error(store_ctx.get()));
  }
  ERR_clear_error();
}

void TlsContext::configureVerification() {
  switch (role_) {
    case TlsRole::Client:
      // Chain (and EKU serverAuth) always; the name only with verify_server_hostname, set per
      // connection by TlsEngine because it depends on the destination datacenter
      // (docs/spec/consul-rpc-tls.md §2.3).
      verifies_peer_ = true;
      SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
      break;
    case TlsRole::Server:
      // docs/spec/consul-rpc-tls.md §2.2: without verify_incoming no CertificateRequest is sent at
      // all.
      verifies_peer_ = settings_.verify_incoming;
      SSL_CTX_set_verify(
          ctx_,
          verifies_peer_ ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_NONE,
          nullptr);
      break;
    case TlsRole::NativeServer:
      verifies_peer_ = true;  // docs/spec/consul-rpc-tls.md §1.4: always requires and verifies a
                              // client certificate
      SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
      break;
  }
}

// ---- verified peer chains (docs/architecture.md §4, "Verified chains") ----------------------

namespace {

// What a chain that X509_verify_cert just accepted establishes: its anchor (the top of the built
// chain) and the time within which every certificate of it is valid.
std::optional<VerifiedChain> builtChain(X509_STORE_CTX* store_ctx) {
  STACK_OF(X509)* chain = X509_STORE_CTX_get0_chain(store_ctx);
  const size_t n = chain != nullptr ? sk_X509_num(chain) : 0;
  if (n == 0) {
    return std::nullopt;
  }
  VerifiedChain v;
  unsigned len = 0;
  if (X509_digest(sk_X509_value(chain, n - 1), EVP_sha256(), v.anchor.data(), &len) != 1 ||
      len != v.anchor.size()) {
    return std::nullopt;
  }
  v.not_before = INT64_MIN;
  v.not_after = INT64_MAX;
  for (size_t i = 0; i < n; ++i) {
    X509* cert = sk_X509_value(chain, i);
    v.not_before = std::max(v.not_before, asn1UnixTime(X509_get0_notBefore(cert)));
    v.not_after = std::min(v.not_after, asn1UnixTime(X509_get0_notAfter(cert)));
  }
  return v;
}

// Runs X509_verify_cert on an initialised `store_ctx` and records the outcome in `check` (and the
// cache when it passed and the chain's digest is known).
int verifyAndRemember(X509_STORE_CTX* store_ctx, VerifiedChainCache& cache, const Sha256& trust,
                      const std::optional<Sha256>& digest, ChainCheck& check) {
  check.ran = true;
  const int ok = X509_verify_cert(store_ctx);
  if (ok != 1) {
    return ok;
  }
  if (auto built = builtChain(store_ctx)) {
    check.verified = true;
    check.anchor = built->anchor;
    check.leaf.chain = *built;
    if (digest) {
      cache.store(*digest, trust, *built);
    }
  }
  return ok;
}

}  // namespace

void TlsContext::computeTrust() {
  // The CA set (every configured CA's fingerprint, sorted) and the purpose this role requires of
  // its peer: what a chain's verification depends on besides the chain itself.
  std::vector<std::string> cas;
  for (const auto& c : certificates_.certs) {
    if (c.role == CertRole::Ca) {
      cas.push_back(c.sha256);
    }
  }
  std::sort(cas.begin(), cas.end());
  cas.erase(std::unique(cas.begin(), cas.end()), cas.end());
  SHA256_CTX sha;
  SHA256_Init(&sha);
  constexpr std::string_view kLabel = "sidecrypt verified chain v1";
  SHA256_Update(&sha, kLabel.data(), kLabel.size());
  const auto role = static_cast<uint8_t>(role_);
  SHA256_Update(&sha, &role, 1);
  for (const auto& ca : cas) {
    SHA256_Update(&sha, ca.data(), ca.size() + 1);  // with its terminating NUL as a separator
  }
  SHA256_Final(trust_.data(), &sha);
}

void TlsContext::attachChainCheck(ssl_st* ssl, ChainCheck* check) const {
  if (chain_cache_) {
    SSL_set_ex_data(ssl, chainCheckIndex(), check);
  }
}

// The handshake's chain verification (SSL_CTX_set_cert_verify_callback): BoringSSL has set up
// `store_ctx` with this context's CAs, the peer's chain, the purpose and the connection's
// parameters (the host name with verify_server_hostname). A chain this context already verified
// skips X509_verify_cert; the name is still checked. The CertificateVerify signature is checked
// by the handshake after this, with the leaf's key, whatever happens here.
int TlsContext::verifyPeerChain(X509_STORE_CTX* store_ctx, void* arg) {
  const auto* self = static_cast<const TlsContext*>(arg);
  auto* ssl = static_cast<SSL*>(
      X509_STORE_CTX_get_ex_data(store_ctx, SSL_get_ex_data_X509_STORE_CTX_idx()));
  auto* check =
      ssl != nullptr ? static_cast<ChainCheck*>(SSL_get_ex_data(ssl, chainCheckIndex())) : nullptr;
  X509* leaf = X509_STORE_CTX_get0_cert(store_ctx);
  if (check == nullptr || !self->chain_cache_ || leaf == nullptr) {
    return X509_verify_cert(store_ctx);
  }
  const auto digest = peerChainDigest(leaf, X509_STORE_CTX_get0_untrusted(store_ctx));
  if (digest) {
    if (auto hit = self->chain_cache_->find(*digest, self->trust_, std::time(nullptr))) {
      check->cache_hit = true;
      if (!check->host.empty() &&
          X509_check_host(leaf, check->host.data(), check->host.size(),
                          X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, nullptr) != 1) {
        X509_STORE_CTX_set_error(store_ctx, X509_V_ERR_HOSTNAME_MISMATCH);
        return 0;
      }
      check->verified = true;
      check->anchor = hit->anchor;
      check->leaf.chain = *hit;
      X509_STORE_CTX_set_error(store_ctx, X509_V_OK);
      if (self->keeps_only_peer_digest_) {
        self->keepLeaf(ssl, leaf, *check);
      }
      return 1;
    }
  }
  ERR_clear_error();
  const int ok = verifyAndRemember(store_ctx, *self->chain_cache_, self->trust_, digest, *check);
  if (ok == 1 && check->verified && self->keeps_only_peer_digest_) {
    self->keepLeaf(ssl, leaf, *check);
  }
  return ok;
}

// A server's session keeps only the SHA-256 of the client's leaf: take what the connection needs
// of the certificate now (names, whether it names this server, its expiry), file it under that
// SHA-256 for the resumptions of this session, and end the session (so every ticket made from
// it) at the chain's earliest notAfter, so that BoringSSL itself refuses to resume it after that
// and the client gets a full handshake, which verifies the chain again.
void TlsContext::keepLeaf(ssl_st* ssl, x509_st* leaf, ChainCheck& check) const {
  SSL_SESSION* session = SSL_get_session(ssl);  // during the handshake: the one being made
  unsigned len = 0;
  if (const auto kept = sessionPeerSha256(session)) {
    check.leaf_sha256 = *kept;
  } else if (X509_digest(leaf, EVP_sha256(), check.leaf_sha256.data(), &len) != 1 ||
             len != check.leaf_sha256.size()) {
    ERR_clear_error();
    return;
  }
  check.leaf.leaf_not_after = asn1UnixTime(X509_get0_notAfter(leaf));
  check.leaf.common_name = certCommonName(leaf);
  check.leaf.dns_names = certDnsNames(leaf);
  check.leaf.names_server =
      X509_check_host(leaf, local_server_name_.data(), local_server_name_.size(),
                      X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, nullptr) == 1;
  ERR_clear_error();
  check.leaf_known = true;
  if (ticket_keys_ == nullptr || session == nullptr) {
    return;  // no resumption: nothing to file, no ticket to bound
  }
  chain_cache_->storeLeaf(check.leaf_sha256, trust_, check.leaf);
  const auto made = static_cast<int64_t>(SSL_SESSION_get_time(session));
  const int64_t left = check.leaf.chain.not_after + 1 - made;  // notAfter is still valid
  if (left < static_cast<int64_t>(SSL_SESSION_get_timeout(session))) {
    SSL_SESSION_set_timeout(session, static_cast<uint32_t>(std::max<int64_t>(left, 1)));
  }
}

void TlsContext::recallChain(ssl_st* ssl, ChainCheck* check) const {
  if (keeps_only_peer_digest_) {
    const auto kept = sessionPeerSha256(SSL_get_session(ssl));
    if (!chain_cache_ || check == nullptr || !kept) {
      return;
    }
    check->leaf_sha256 = *kept;
    if (auto hit = chain_cache_->findLeaf(check->leaf_sha256, trust_, std::time(nullptr))) {
      check->cache_hit = true;
      check->verified = true;
      check->anchor = hit->chain.anchor;
      check->leaf = std::move(*hit);
      check->leaf_known = true;
    }
    return;
  }
  // As in the handshake: the session's chain as the peer sent it, the leaf first.
  STACK_OF(X509)* presented = SSL_get_peer_full_cert_chain(ssl);
  X509* leaf =
      presented != nullptr && sk_X509_num(presented) > 0 ? sk_X509_value(presented, 0) : nullptr;
  if (!chain_cache_ || check == nullptr || leaf == nullptr) {
    return;
  }
  const auto digest = peerChainDigest(leaf, presented);
  if (digest) {
    if (auto hit = chain_cache_->find(*digest, trust_, std::time(nullptr))) {
      check->cache_hit = true;
      check->verified = true;
      check->anchor = hit->anchor;
      return;
    }
  }
  // Not cached (evicted, or its time is over): verify once more, as the handshake did.
  bssl::UniquePtr<X509_STORE_CTX> store_ctx(X509_STORE_CTX_new());
  if (store_ctx && X509_STORE_CTX_init(store_ctx.get(), caStore(), leaf, presented) == 1 &&
      X509_STORE_CTX_set_default(store_ctx.get(),
                                 role_ == TlsRole::Client ? "ssl_server" : "ssl_client") == 1) {
    verifyAndRemember(store_ctx.get(), *chain_cache_, trust_, digest, *check);
  }
  ERR_clear_error();
}

}  // namespace sidecrypt::filters::rpc_tls
