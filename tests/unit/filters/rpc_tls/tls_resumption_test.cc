// Session resumption (tls.session_resumption): tickets from one server context resume only under
// that context, key rotation keeps one previous key, the client cache is keyed and bounded.
#include <catch2/catch.hpp>

#include "filters/common/boringssl.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <ctime>

#include "filters/rpc_tls/cert_inventory.h"
#include "filters/rpc_tls/session_cache.h"
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
  auto client = mustCreate(clientSettings(), TlsRole::Client);
  auto server = mustCreate(serverSettings(), TlsRole::Server);
  connect(client, server, "k");
  const std::time_t now = std::time(nullptr);
  SSL_SESSION* session = client->sessionCache()->find("k|server.dc1.consul", now);
  REQUIRE(session != nullptr);
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
  auto client = mustCreate(clientSettings(), TlsRole::Client);
  auto server = mustCreate(serverSettings(), TlsRole::Server);
  connect(client, server, "k");
  const std::time_t now = std::time(nullptr);
  SSL_SESSION* session = client->sessionCache()->find("k|server.dc1.consul", now);
  REQUIRE(session != nullptr);
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
