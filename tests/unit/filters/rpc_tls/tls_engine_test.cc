#include "filters/rpc_tls/tls_engine.h"

#include <catch2/catch.hpp>

#include "filters/common/boringssl.h"

#include <openssl/digest.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <array>
#include <filesystem>
#include <string>
#include <utility>

#include "tls_test_util.h"

using namespace sidecrypt::rpc_tls_test;
using sidecrypt::filters::rpc_tls::TlsVersion;

namespace {

// Consul's shape: client with verify_server_hostname, server with verify_incoming.
Pair consulPair(const ClientOptions& options = {}) {
  return Pair(mustCreate(clientSettings(), TlsRole::Client),
              mustCreate(serverSettings(), TlsRole::Server), options);
}

TlsSettings withServerCert(TlsSettings s, const std::string& stem) {
  s.cert_file = negative(stem + ".pem");
  s.key_file = negative(stem + "-key.pem");
  return s;
}

}  // namespace

TEST_CASE("tls_engine: server.dc1.consul passes verify_server_hostname, data flows both ways",
          "[rpc_tls]") {
  Pair p = consulPair();
  CHECK(p.client.engine->encPending() > 0);  // the ClientHello is ready before any input
  p.pump();
  REQUIRE(p.bothReady());
  CHECK(p.client.engine->version() == "TLSv1.3");
  CHECK(p.client.engine->expectedServerName() == "server.dc1.consul");
  const auto& server_seen = p.client.engine->peer();
  CHECK(server_seen.verified);
  CHECK(server_seen.verifies_as_server);
  CHECK(server_seen.dns_names == std::vector<std::string>{"server.dc1.consul", "localhost"});
  const auto& client_seen = p.server.engine->peer();
  CHECK(client_seen.verified);
  CHECK(client_seen.common_name == "client.dc1.consul");
  CHECK_FALSE(client_seen.verifies_as_server);  // a client certificate is not a server's
                                                // (docs/spec/consul-rpc-tls.md §2.5)

  p.send(p.client, "\x04hello");
  p.send(p.server, "world");
  p.pump();
  CHECK(p.server.received == "\x04hello");
  CHECK(p.client.received == "world");
}

TEST_CASE("tls_engine: the client sends SNI only with verify_server_hostname", "[rpc_tls]") {
  for (bool vsh : {true, false}) {
    CAPTURE(vsh);
    Pair p(mustCreate(clientSettings(vsh), TlsRole::Client),
           mustCreate(serverSettings(), TlsRole::Server));
    p.pump();
    REQUIRE(p.bothReady());
    CHECK(p.server.engine->sni() == (vsh ? "server.dc1.consul" : ""));
  }
}

TEST_CASE("tls_engine: server.dc2.consul expected from a dc1 server fails: hostname mismatch",
          "[rpc_tls]") {
  Pair p = consulPair(ClientOptions{"dc2", {}, ""});
  CHECK(p.client.engine->expectedServerName() == "server.dc2.consul");
  p.pump();
  CHECK(p.client.engine->failed());
  CHECK_THAT(p.client.engine->error(),
             Catch::Contains("certificate verify failed: hostname mismatch"));
  CHECK_FALSE(p.server.engine->handshakeDone());
  CHECK(p.server.engine->failed());  // the client's alert reached the server
}

TEST_CASE("tls_engine: a server certificate for the wrong datacenter is refused", "[rpc_tls]") {
  Pair p(mustCreate(clientSettings(), TlsRole::Client),
         mustCreate(withServerCert(serverSettings(), "wrong-dc-server"), TlsRole::Server));
  p.pump();
  CHECK(p.client.engine->failed());
  CHECK_THAT(p.client.engine->error(), Catch::Contains("hostname mismatch"));
}

TEST_CASE("tls_engine: a CN-only server certificate is refused under verify_server_hostname",
          "[rpc_tls]") {
  auto server = mustCreate(withServerCert(serverSettings(), "cn-only-server"), TlsRole::Server);
  {
    Pair p(mustCreate(clientSettings(true), TlsRole::Client), server);
    p.pump();
    CHECK(p.client.engine->failed());
    CHECK_THAT(p.client.engine->error(), Catch::Contains("hostname mismatch"));
  }
  {
    // Chain-only verification (verify_outgoing without the hostname) accepts it, as Consul does.
    Pair p(mustCreate(clientSettings(false), TlsRole::Client), server);
    p.pump();
    CHECK(p.bothReady());
    CHECK_FALSE(p.client.engine->peer().verifies_as_server);  // the CN never counts
  }
}

TEST_CASE("tls_engine: a server from another CA is refused", "[rpc_tls]") {
  Pair p(mustCreate(clientSettings(), TlsRole::Client),
         mustCreate(withServerCert(serverSettings(), "other-server"), TlsRole::Server));
  p.pump();
  CHECK(p.client.engine->failed());
  CHECK_THAT(p.client.engine->error(),
             Catch::Contains("certificate verify failed: unable to get local issuer certificate"));
}

TEST_CASE("tls_engine: a client certificate from another CA is refused under verify_incoming",
          "[rpc_tls]") {
  TlsSettings c = clientSettings();
  c.cert_file = negative("other-client.pem");
  c.key_file = negative("other-client-key.pem");
  Pair p(mustCreate(c, TlsRole::Client), mustCreate(serverSettings(), TlsRole::Server));
  p.pump();
  CHECK(p.server.engine->failed());
  CHECK_THAT(p.server.engine->error(), Catch::Contains("certificate verify failed"));
  // TLS 1.3: the client finished its handshake before the server judged its certificate.
  CHECK(p.client.engine->failed());
  CHECK_THAT(p.client.engine->error(), Catch::Contains("peer sent alert"));
}

TEST_CASE("tls_engine: TLS 1.1-only peers are refused by the default minimum of 1.2", "[rpc_tls]") {
  SECTION("TLS 1.1-only client against a default server") {
    TlsSettings c = clientSettings();
    c.tls_min_version = TlsVersion::Tls10;
    auto client = mustCreate(c, TlsRole::Client);
    REQUIRE(SSL_CTX_set_max_proto_version(client->native(), TLS1_1_VERSION) == 1);
    Pair p(client, mustCreate(serverSettings(), TlsRole::Server));
    p.pump();
    CHECK(p.server.engine->failed());
    CHECK_THAT(p.server.engine->error(), Catch::Contains("unsupported protocol"));
    CHECK(p.client.engine->failed());
    CHECK_THAT(p.client.engine->error(), Catch::Contains("protocol version"));
  }
  SECTION("default client against a TLS 1.1-only server") {
    TlsSettings s = serverSettings();
    s.tls_min_version = TlsVersion::Tls10;
    auto server = mustCreate(s, TlsRole::Server);
    REQUIRE(SSL_CTX_set_max_proto_version(server->native(), TLS1_1_VERSION) == 1);
    Pair p(mustCreate(clientSettings(), TlsRole::Client), server);
    p.pump();
    CHECK(p.client.engine->failed());
    CHECK_FALSE(p.client.engine->handshakeDone());
  }
  SECTION("the same TLS 1.1-only client passes when the server allows TLS 1.0 (control)") {
    TlsSettings c = clientSettings();
    c.tls_min_version = TlsVersion::Tls10;
    auto client = mustCreate(c, TlsRole::Client);
    REQUIRE(SSL_CTX_set_max_proto_version(client->native(), TLS1_1_VERSION) == 1);
    TlsSettings s = serverSettings();
    s.tls_min_version = TlsVersion::Tls10;
    Pair p(client, mustCreate(s, TlsRole::Server));
    p.pump();
    CHECK(p.bothReady());
    CHECK(p.client.engine->version() == "TLSv1.1");
  }
}

TEST_CASE("tls_engine: a missing client certificate under verify_incoming is refused",
          "[rpc_tls]") {
  TlsSettings c = clientSettings();
  c.cert_file.clear();
  c.key_file.clear();
  SECTION("TLS 1.3: the client learns it on its next read") {
    Pair p(mustCreate(c, TlsRole::Client), mustCreate(serverSettings(), TlsRole::Server));
    // Only the first two flights: the client's handshake completes before the server decides.
    p.transfer(p.client, p.server);
    p.transfer(p.server, p.client);
    CHECK(p.client.engine->handshakeDone());
    CHECK_FALSE(p.client.engine->failed());
    p.pump();
    CHECK(p.server.engine->failed());
    CHECK_THAT(p.server.engine->error(), Catch::Contains("peer did not return a certificate"));
    CHECK(p.client.failed);
    CHECK_THAT(p.client.engine->error(), Catch::Contains("peer sent alert: certificate required"));
  }
  SECTION("TLS 1.2: the handshake itself fails") {
    auto client = mustCreate(c, TlsRole::Client);
    REQUIRE(SSL_CTX_set_max_proto_version(client->native(), TLS1_2_VERSION) == 1);
    Pair p(client, mustCreate(serverSettings(), TlsRole::Server));
    p.pump();
    CHECK_FALSE(p.client.engine->handshakeDone());
    CHECK(p.client.engine->failed());
    CHECK(p.server.engine->failed());
  }
  SECTION("without verify_incoming no certificate is requested (control)") {
    Pair p(mustCreate(c, TlsRole::Client), mustCreate(serverSettings(false), TlsRole::Server));
    p.pump();
    CHECK(p.bothReady());
    CHECK_FALSE(p.server.engine->peer().presented_certificate);
  }
}

TEST_CASE("tls_engine: without verify_incoming a client certificate is never requested",
          "[rpc_tls]") {
  Pair p(mustCreate(clientSettings(), TlsRole::Client),
         mustCreate(serverSettings(false), TlsRole::Server));
  p.pump();
  REQUIRE(p.bothReady());
  // docs/spec/consul-rpc-tls.md §2.2: no CertificateRequest, so the client never sent the
  // certificate it has.
  CHECK_FALSE(p.server.engine->peer().presented_certificate);
  CHECK_FALSE(p.server.engine->peer().verified);
}

TEST_CASE("tls_engine: a serverAuth-only client certificate is refused (EKU)", "[rpc_tls]") {
  TlsSettings c = clientSettings();
  c.cert_file = negative("server-auth-only-client.pem");
  c.key_file = negative("server-auth-only-client-key.pem");
  Pair p(mustCreate(c, TlsRole::Client), mustCreate(serverSettings(), TlsRole::Server));
  p.pump();
  CHECK(p.server.engine->failed());
  CHECK_THAT(p.server.engine->error(),
             Catch::Contains("certificate verify failed: unsupported certificate purpose"));
}

TEST_CASE("tls_engine: a multi-CA bundle trusts servers of both CAs", "[rpc_tls]") {
  TlsSettings c = clientSettings();
  c.ca_file = negative("ca-bundle.pem");
  auto client = mustCreate(c, TlsRole::Client);
  for (const char* stem : {"", "other-server"}) {
    CAPTURE(stem);
    TlsSettings s = serverSettings(false);
    if (*stem != '\0') {
      s = withServerCert(s, stem);
    }
    Pair p(client, mustCreate(s, TlsRole::Server));
    p.pump();
    CHECK(p.bothReady());
    CHECK(p.client.engine->peer().verifies_as_server);
  }
  // Control: the real CA alone does not trust the other CA's server.
  Pair p(mustCreate(clientSettings(), TlsRole::Client),
         mustCreate(withServerCert(serverSettings(false), "other-server"), TlsRole::Server));
  p.pump();
  CHECK(p.client.engine->failed());
}

// AuthorizeServerConn (docs/spec/consul-rpc-tls.md §2.5).
TEST_CASE("tls_engine: verifies_as_server on a server needs server.<dc>.<domain>", "[rpc_tls]") {
  TlsSettings c = clientSettings();
  c.cert_file = serverSettings().cert_file;  // a server dialling a server presents its own cert
  c.key_file = serverSettings().key_file;
  Pair p(mustCreate(c, TlsRole::Client), mustCreate(serverSettings(), TlsRole::Server));
  p.pump();
  REQUIRE(p.bothReady());
  CHECK(p.server.engine->peer().verifies_as_server);

  TlsSettings dc2 = serverSettings();
  dc2.datacenter = "dc2";  // the same certificate is not a dc2 server's
  Pair q(mustCreate(c, TlsRole::Client), mustCreate(dc2, TlsRole::Server));
  q.pump();
  REQUIRE(q.bothReady());
  CHECK_FALSE(q.server.engine->peer().verifies_as_server);
}

namespace {

// SHA-256 of the first certificate in a PEM file.
std::array<uint8_t, 32> certSha256(const std::filesystem::path& file) {
  bssl::UniquePtr<BIO> bio(BIO_new_file(file.c_str(), "r"));
  REQUIRE(bio);
  bssl::UniquePtr<X509> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  REQUIRE(cert);
  std::array<uint8_t, 32> out{};
  unsigned len = 0;
  REQUIRE(X509_digest(cert.get(), EVP_sha256(), out.data(), &len) == 1);
  return out;
}

}  // namespace

// The census's "which CA issued the chain this peer presented" (issue 19 item 3).
TEST_CASE("tls_engine: the trust anchor of a verified peer chain is recorded, per CA",
          "[rpc_tls][anchor]") {
  const auto real_ca = certSha256(certs() / "consul-agent-ca.pem");
  const auto other_ca = certSha256(negative("other-ca.pem"));
  REQUIRE(real_ca != other_ca);
  TlsSettings c = clientSettings();
  c.ca_file = negative("ca-bundle.pem");
  auto client = mustCreate(c, TlsRole::Client);
  TlsSettings s = serverSettings();
  s.ca_file = negative("ca-bundle.pem");
  for (const auto& [stem, ca] :
       {std::pair{std::string(), real_ca}, std::pair{std::string("other-server"), other_ca}}) {
    CAPTURE(stem);
    Pair p(client, mustCreate(stem.empty() ? s : withServerCert(s, stem), TlsRole::Server));
    p.pump();
    REQUIRE(p.bothReady());
    // The client verified the server's chain: it ends at the CA that issued the server's leaf.
    CHECK(p.client.engine->peer().has_anchor);
    CHECK(p.client.engine->peer().anchor_sha256 == ca);
    // The server (verify_incoming) verified the client's certificate, issued by the real CA.
    CHECK(p.server.engine->peer().has_anchor);
    CHECK(p.server.engine->peer().anchor_sha256 == real_ca);
  }
  // No verification, no anchor: a server without verify_incoming asks for no certificate.
  Pair p(client, mustCreate(serverSettings(false), TlsRole::Server));
  p.pump();
  REQUIRE(p.bothReady());
  CHECK_FALSE(p.server.engine->peer().has_anchor);
  CHECK(p.client.engine->peer().anchor_sha256 == real_ca);
}
