// Session resumption (tls.session_resumption): tickets from one server context resume only under
// that context, key rotation keeps one previous key, the client cache is keyed and bounded.
#include <catch2/catch.hpp>

#include "filters/common/boringssl.h"

#include <openssl/bio.h>
#include <openssl/digest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>
#include <thread>

#include "../../test_util.h"
#include "filters/rpc_tls/cert_inventory.h"
#include "filters/rpc_tls/session_cache.h"
#include "filters/rpc_tls/ticket_keys.h"
#include "tls_test_util.h"

using namespace sidecrypt::rpc_tls_test;
using sidecrypt::filters::rpc_tls::SessionCache;

namespace {

// One connection: handshake, a request and an answer (a TLS 1.3 server that asked for a client
// certificate sends its ticket with its first write, docs/spec/toolchain.md §3.8). Returns
// whether both sides resumed (they must agree).
bool connect(const TlsContextSharedPtr& client, const TlsContextSharedPtr& server,
             const std::string& key = "10.0.0.1:8300") {
  ClientOptions options;
  options.session_key = key;
  Pair p(client, server, options);
  p.pump();
  REQUIRE(p.bothReady());
  p.send(p.client, "\x04ping");
  p.send(p.server, "pong");
  p.pump();
  REQUIRE(p.server.received == "\x04ping");
  REQUIRE(p.client.received == "pong");
  CHECK(p.client.engine->resumed() == p.server.engine->resumed());
  // A resumed session still carries what the full handshake verified.
  CHECK(p.server.engine->peer().verified);
  CHECK(p.server.engine->peer().common_name == "client.dc1.consul");
  CHECK(p.client.engine->peer().verified);
  CHECK(p.client.engine->peer().verifies_as_server);
  // The census learns which CA issued each peer's chain from resumed handshakes too (check
  // remove-ca must not miss a peer because it resumed).
  CHECK(p.server.engine->peer().has_anchor);
  CHECK(p.client.engine->peer().has_anchor);
  return p.server.engine->resumed();
}

// The session a client keeps after one full handshake with a server (a reference the caller
// frees).
SSL_SESSION* freshClientSession(std::time_t now) {
  auto client = mustCreate(clientSettings(), TlsRole::Client);
  auto server = mustCreate(serverSettings(), TlsRole::Server);
  connect(client, server, "k");
  SSL_SESSION* session = client->sessionCache()->find("k|server.dc1.consul", now);
  REQUIRE(session != nullptr);
  return session;
}

TlsContextSharedPtr serverMax12() {
  auto ctx = mustCreate(serverSettings(), TlsRole::Server);
  REQUIRE(SSL_CTX_set_max_proto_version(ctx->native(), TLS1_2_VERSION) == 1);
  return ctx;
}

}  // namespace

TEST_CASE("tls_resumption: the second connection resumes, TLS 1.3 and 1.2", "[rpc_tls][resume]") {
  for (bool tls12 : {false, true}) {
    CAPTURE(tls12);
    auto client = mustCreate(clientSettings(), TlsRole::Client);
    auto server = tls12 ? serverMax12() : mustCreate(serverSettings(), TlsRole::Server);
    CHECK_FALSE(connect(client, server));
    CHECK(client->sessionCache()->size() == 1);
    CHECK(connect(client, server));
    CHECK(connect(client, server));
    // Another destination has no session of its own yet.
    CHECK_FALSE(connect(client, server, "10.0.0.2:8300"));
    CHECK(client->sessionCache()->size() == 2);
  }
}

TEST_CASE(
    "tls_resumption: a new server context (reload, new CA or certificate) refuses old tickets",
    "[rpc_tls][resume]") {
  auto client = mustCreate(clientSettings(), TlsRole::Client);
  auto server = mustCreate(serverSettings(), TlsRole::Server);
  CHECK_FALSE(connect(client, server));
  CHECK(connect(client, server));
  // The same files loaded again: new ticket keys, so the client's ticket no longer opens.
  auto reloaded = mustCreate(serverSettings(), TlsRole::Server);
  CHECK_FALSE(connect(client, reloaded));
  CHECK(connect(client, reloaded));  // the new context's own ticket
  // A new client context (a reload on the client side) starts with an empty cache.
  auto client2 = mustCreate(clientSettings(), TlsRole::Client);
  CHECK(client2->sessionCache()->size() == 0);
  CHECK_FALSE(connect(client2, reloaded));
}

TEST_CASE("tls_resumption: tickets survive one key rotation, not two", "[rpc_tls][resume]") {
  auto client = mustCreate(clientSettings(), TlsRole::Client);
  auto server = mustCreate(serverSettings(), TlsRole::Server);
  CHECK_FALSE(connect(client, server));
  server->ticketKeys()->rotate();
  CHECK(connect(client, server));  // previous key: accepted and renewed under the current one
  server->ticketKeys()->rotate();
  CHECK(connect(client, server));  // the renewed ticket is under the previous key now
  server->ticketKeys()->rotate();
  server->ticketKeys()->rotate();
  CHECK_FALSE(connect(client, server));  // two rotations later: full handshake
}

TEST_CASE("tls_resumption: session_resumption = false issues and offers nothing",
          "[rpc_tls][resume]") {
  auto off = [](sidecrypt::filters::rpc_tls::TlsSettings s) {
    s.session_resumption = false;
    return s;
  };
  auto client_off = mustCreate(off(clientSettings()), TlsRole::Client);
  auto server_off = mustCreate(off(serverSettings()), TlsRole::Server);
  CHECK(client_off->sessionCache() == nullptr);
  CHECK(server_off->ticketKeys() == nullptr);
  auto client = mustCreate(clientSettings(), TlsRole::Client);
  auto server = mustCreate(serverSettings(), TlsRole::Server);
  for (int i = 0; i < 2; ++i) {
    CHECK_FALSE(connect(client_off, server));
    CHECK_FALSE(connect(client, server_off));
  }
  CHECK(client->sessionCache()->size() == 0);  // server_off sent no ticket
}

TEST_CASE("tls_resumption: the client session cache is bounded, least recently used first",
          "[rpc_tls][resume]") {
  const std::time_t now = std::time(nullptr);
  SSL_SESSION* session = freshClientSession(now);
  SessionCache cache(2);
  for (const char* key : {"a", "b", "c"}) {
    SSL_SESSION_up_ref(session);
    cache.store(key, session, now);
    if (std::string(key) == "b") {
      SSL_SESSION_free(cache.find("a", now));  // "a" becomes the most recently used
    }
  }
  CHECK(cache.size() == 2);
  CHECK(cache.find("b", now) == nullptr);  // evicted
  SSL_SESSION* a = cache.find("a", now);
  CHECK(a == session);
  SSL_SESSION_free(a);
  // An hour after the full handshake the chain is verified again: not offered any more.
  CHECK(cache.find("c", now + SessionCache::kMaxVerifiedAge) == nullptr);
  CHECK(cache.size() == 1);
  // Nor past the session's lifetime or its server certificate's.
  SSL_SESSION_up_ref(session);
  cache.store("d", session, now + 400L * 24 * 3600);
  CHECK(cache.find("d", now + 400L * 24 * 3600) == nullptr);
  SSL_SESSION_free(session);
}

TEST_CASE("tls_resumption: a session is not offered once its server certificate has expired",
          "[rpc_tls][resume]") {
  const std::time_t now = std::time(nullptr);
  SSL_SESSION* session = freshClientSession(now);
  // The test server's certificate ends in 2126; the session is made to outlive it (the
  // session's own lifetime must not be what ends it here), and each lookup is within
  // kMaxVerifiedAge of the (pretended) last verification.
  const auto not_after = static_cast<std::time_t>(sidecrypt::filters::rpc_tls::asn1UnixTime(
      X509_get0_notAfter(SSL_SESSION_get0_peer(session))));
  REQUIRE(not_after > now);
  REQUIRE(SSL_SESSION_set_timeout(session, 0xffffffffU) == 1);
  REQUIRE(static_cast<std::time_t>(SSL_SESSION_get_time(session) +
                                   SSL_SESSION_get_timeout(session)) > not_after + 10);
  SessionCache cache(4);
  SSL_SESSION_up_ref(session);
  cache.store("before", session, not_after - 10);
  SSL_SESSION* offered = cache.find("before", not_after - 1);
  CHECK(offered == session);
  SSL_SESSION_free(offered);
  SSL_SESSION_up_ref(session);
  cache.store("after", session, not_after - 10);
  CHECK(cache.find("after", not_after) == nullptr);
  CHECK(cache.find("after", not_after + 5) == nullptr);
  SSL_SESSION_free(session);
}

// ---- a server keeps only the SHA-256 of its client's leaf (issue 18 item 4) -----------------

namespace {

using sidecrypt::filters::rpc_tls::Sha256;
using sidecrypt::filters::rpc_tls::VerifiedLeaf;

bssl::UniquePtr<X509> readPemCert(const std::filesystem::path& file) {
  bssl::UniquePtr<BIO> bio(BIO_new_file(file.c_str(), "r"));
  REQUIRE(bio);
  bssl::UniquePtr<X509> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  REQUIRE(cert);
  return cert;
}

Sha256 sha256Of(X509* cert) {
  Sha256 out{};
  unsigned len = 0;
  REQUIRE(X509_digest(cert, EVP_sha256(), out.data(), &len) == 1);
  return out;
}

// The test client certificate again, valid until `not_after` (unix seconds), signed by the CA.
std::string clientCertUntil(int64_t not_after) {
  auto cert = readPemCert(certs() / "dc1-client-consul-0.pem");
  bssl::UniquePtr<BIO> key_bio(BIO_new_file((certs() / "consul-agent-ca-key.pem").c_str(), "r"));
  REQUIRE(key_bio);
  bssl::UniquePtr<EVP_PKEY> ca_key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  REQUIRE(ca_key);
  REQUIRE(ASN1_TIME_set(X509_getm_notAfter(cert.get()), static_cast<time_t>(not_after)) != nullptr);
  REQUIRE(X509_sign(cert.get(), ca_key.get(), EVP_sha256()) > 0);
  bssl::UniquePtr<BIO> out(BIO_new(BIO_s_mem()));
  REQUIRE(PEM_write_bio_X509(out.get(), cert.get()) == 1);
  const uint8_t* data = nullptr;
  size_t len = 0;
  REQUIRE(BIO_mem_contents(out.get(), &data, &len) == 1);
  return {reinterpret_cast<const char*>(data), len};
}

struct Seen {
  bool ok;
  bool resumed;
  std::string server_error;
};
Seen tryConnect(const TlsContextSharedPtr& client, const TlsContextSharedPtr& server) {
  ClientOptions options;
  options.session_key = "10.0.0.1:8300";
  Pair p(client, server, options);
  p.pump();
  if (p.bothReady()) {
    p.send(p.server, "x");  // carries a TLS 1.3 ticket
    p.pump();
  }
  return Seen{p.bothReady() && !p.server.engine->failed(), p.server.engine->resumed(),
              p.server.engine->error()};
}

}  // namespace

TEST_CASE("tls_resumption: a server keeps its client's names and chain without the certificate",
          "[rpc_tls][resume]") {
  for (bool tls12 : {false, true}) {
    CAPTURE(tls12);
    // The server's own certificate as a client one (it has clientAuth and names the server).
    TlsSettings c = clientSettings();
    c.cert_file = serverSettings().cert_file;
    c.key_file = serverSettings().key_file;
    auto client = mustCreate(c, TlsRole::Client);
    auto server = tls12 ? serverMax12() : mustCreate(serverSettings(), TlsRole::Server);
    REQUIRE(server->keepsOnlyPeerDigest());
    CHECK_FALSE(client->keepsOnlyPeerDigest());
    for (int i = 0; i < 3; ++i) {
      CAPTURE(i);
      ClientOptions options;
      options.session_key = "10.0.0.1:8300";
      Pair p(client, server, options);
      p.pump();
      REQUIRE(p.bothReady());
      p.send(p.server, "x");
      p.pump();
      CHECK(p.server.engine->resumed() == (i > 0));
      const auto& peer = p.server.engine->peer();
      CHECK(peer.presented_certificate);
      CHECK(peer.verified);
      CHECK(peer.common_name == "server.dc1.consul");
      CHECK(std::find(peer.dns_names.begin(), peer.dns_names.end(), "server.dc1.consul") !=
            peer.dns_names.end());
      CHECK(peer.verifies_as_server);  // the raft gate on a resumed connection
      CHECK(peer.has_anchor);
    }
    CHECK(server->chainCache()->leafCount() == 1);
  }
}

TEST_CASE("tls_resumption: a server's tickets end at the client certificate's expiry",
          "[rpc_tls][resume]") {
  sidecrypt::test::TempDir dir;
  const int64_t not_after = std::time(nullptr) + 2;
  sidecrypt::test::writeFile(dir / "short.pem", clientCertUntil(not_after));
  TlsSettings c = clientSettings();
  c.cert_file = dir / "short.pem";
  auto client = mustCreate(c, TlsRole::Client);
  auto server = mustCreate(serverSettings(), TlsRole::Server);
  auto first = tryConnect(client, server);
  REQUIRE(first.ok);
  CHECK_FALSE(first.resumed);
  // The ticket's lifetime is what is left of the certificate, not the 12 hours of the keys.
  SSL_SESSION* session =
      client->sessionCache()->find("10.0.0.1:8300|server.dc1.consul", std::time(nullptr));
  REQUIRE(session != nullptr);
  CHECK(SSL_SESSION_get_timeout(session) <= 3);  // the ticket lifetime the server sent
  SSL_SESSION_free(session);
  auto second = tryConnect(client, server);
  CHECK(second.ok);
  CHECK(second.resumed);
  // Past notAfter: BoringSSL no longer accepts the ticket, the full handshake verifies the chain
  // and refuses the expired certificate.
  while (std::time(nullptr) <= not_after + 1) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto late = tryConnect(client, server);
  CHECK_FALSE(late.ok);
  CHECK_FALSE(late.resumed);
  CHECK_THAT(late.server_error, Catch::Contains("expired"));
}

TEST_CASE("tls_resumption: a resumed session whose client leaf has expired is refused",
          "[rpc_tls][resume]") {
  // The record a resumed session takes its client's facts from says the leaf has expired (its
  // chain's dates, and so the ticket's lifetime, still hold): refused after the handshake.
  auto client = mustCreate(clientSettings(), TlsRole::Client);
  auto server = mustCreate(serverSettings(), TlsRole::Server);
  REQUIRE(tryConnect(client, server).ok);
  auto leaf = readPemCert(certs() / "dc1-client-consul-0.pem");
  const Sha256 sha = sha256Of(leaf.get());
  auto kept = server->chainCache()->findLeaf(sha, server->trust(), std::time(nullptr));
  REQUIRE(kept);
  CHECK(kept->common_name == "client.dc1.consul");
  CHECK_FALSE(kept->names_server);
  VerifiedLeaf expired = *kept;
  expired.leaf_not_after = std::time(nullptr) - 1;
  server->chainCache()->storeLeaf(sha, server->trust(), expired);
  auto seen = tryConnect(client, server);
  CHECK_FALSE(seen.ok);
  CHECK(seen.resumed);
  CHECK_THAT(seen.server_error, Catch::Contains("resumed session"));
  // Without the record at all (evicted, cleared) the ticket is not resumed: a full handshake.
  server->chainCache()->clear();
  auto gone = tryConnect(client, server);
  CHECK(gone.ok);
  CHECK_FALSE(gone.resumed);
  CHECK(tryConnect(client, server).resumed);  // under the ticket that full handshake gave
}

TEST_CASE("tls_resumption: a ticket names its client's record, unlinkably", "[rpc_tls][resume]") {
  sidecrypt::filters::rpc_tls::TicketKeys keys;
  uint8_t name1[16] = {}, name2[16] = {}, iv1[16], iv2[16];
  std::fill(std::begin(iv1), std::end(iv1), uint8_t{1});
  std::fill(std::begin(iv2), std::end(iv2), uint8_t{2});
  keys.sealTag(name1, iv1, 42);
  keys.sealTag(name2, iv2, 42);
  CHECK(keys.openTag(name1, iv1) == 42);
  CHECK(keys.openTag(name2, iv2) == 42);
  // The same record in two tickets: different bytes on the wire.
  CHECK(std::memcmp(name1 + 8, name2 + 8, 8) != 0);
  // Another context's keys read something else.
  sidecrypt::filters::rpc_tls::TicketKeys other;
  CHECK(other.openTag(name1, iv1) != 42);
}
