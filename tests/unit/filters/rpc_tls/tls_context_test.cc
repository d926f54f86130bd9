#include "filters/rpc_tls/tls_context.h"

#include <catch2/catch.hpp>

#include "filters/common/boringssl.h"

#include <openssl/ssl.h>

#include "../../test_util.h"
#include "tls_test_util.h"

using namespace sidecrypt::rpc_tls_test;
using sidecrypt::filters::rpc_tls::consulCipherSuites;
using sidecrypt::filters::rpc_tls::TlsVersion;
using sidecrypt::test::readFile;
using sidecrypt::test::TempDir;
using sidecrypt::test::writeFile;

namespace {

// Does a client trusting `client` reach the real dc1 server (chain-only, no client cert)?
bool clientTrustsRealServer(const TlsSettings& client) {
  Pair p(mustCreate(client, TlsRole::Client), mustCreate(serverSettings(false), TlsRole::Server));
  p.pump();
  return p.bothReady();
}

TlsSettings trustOnly() {
  TlsSettings s;
  s.verify_outgoing = true;
  return s;
}

}  // namespace

TEST_CASE("tls_context: a fresh context never allows TLS 1.0", "[rpc_tls]") {
  // The trap (docs/spec/toolchain.md §3.4): BoringSSL's own default minimum is TLS 1.0.
  bssl::UniquePtr<SSL_CTX> raw(SSL_CTX_new(TLS_method()));
  REQUIRE(SSL_CTX_get_min_proto_version(raw.get()) == TLS1_VERSION);
  for (auto role : {TlsRole::Client, TlsRole::Server, TlsRole::NativeServer}) {
    CAPTURE(static_cast<int>(role));
    TlsSettings s = role == TlsRole::Client ? clientSettings() : serverSettings();
    CHECK(SSL_CTX_get_min_proto_version(mustCreate(s, role)->native()) == TLS1_2_VERSION);
    s.tls_min_version = TlsVersion::Tls13;
    CHECK(SSL_CTX_get_min_proto_version(mustCreate(s, role)->native()) == TLS1_3_VERSION);
    s.tls_min_version = TlsVersion::Tls10;  // only when asked for explicitly
    CHECK(SSL_CTX_get_min_proto_version(mustCreate(s, role)->native()) == TLS1_VERSION);
  }
}

TEST_CASE("tls_context: servers keep no session cache; tickets only with session_resumption",
          "[rpc_tls]") {
  for (auto role : {TlsRole::Server, TlsRole::NativeServer}) {
    auto s = serverSettings();
    auto ctx = mustCreate(s, role);
    CHECK((SSL_CTX_get_options(ctx->native()) & SSL_OP_NO_TICKET) == 0);
    CHECK(SSL_CTX_get_session_cache_mode(ctx->native()) == SSL_SESS_CACHE_OFF);
    CHECK(ctx->ticketKeys() != nullptr);
    s.session_resumption = false;  // as Consul: no tickets at all
    ctx = mustCreate(s, role);
    CHECK((SSL_CTX_get_options(ctx->native()) & SSL_OP_NO_TICKET) != 0);
    CHECK(SSL_CTX_get_session_cache_mode(ctx->native()) == SSL_SESS_CACHE_OFF);
    CHECK(ctx->ticketKeys() == nullptr);
  }
}

TEST_CASE("tls_context: verify modes follow Consul's settings", "[rpc_tls]") {
  CHECK(SSL_CTX_get_verify_mode(mustCreate(serverSettings(false), TlsRole::Server)->native()) ==
        SSL_VERIFY_NONE);
  CHECK(SSL_CTX_get_verify_mode(mustCreate(serverSettings(true), TlsRole::Server)->native()) ==
        (SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT));
  CHECK(
      SSL_CTX_get_verify_mode(mustCreate(serverSettings(false), TlsRole::NativeServer)->native()) ==
      (SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT));
  CHECK(SSL_CTX_get_verify_mode(mustCreate(clientSettings(false), TlsRole::Client)->native()) ==
        SSL_VERIFY_PEER);
}

TEST_CASE("tls_context: configuration errors use Consul's rules and words", "[rpc_tls]") {
  TlsSettings s = serverSettings();
  s.ca_file.clear();
  CHECK(createError(s, TlsRole::Server) ==
        "VerifyIncoming set but no CA certificates were provided");
  s.verify_incoming = false;
  CHECK(createError(s, TlsRole::Server).empty());
  TlsSettings c = clientSettings();
  c.ca_file.clear();
  CHECK(createError(c, TlsRole::Client) ==
        "VerifyOutgoing set but no CA certificates were provided");
  c = clientSettings(false);
  c.verify_outgoing = false;
  CHECK_THAT(createError(c, TlsRole::Client), Catch::Contains("needs verify_outgoing"));
  c.verify_server_hostname = true;  // docs/spec/consul-rpc-tls.md §2.1: implies verify_outgoing
  CHECK(createError(c, TlsRole::Client).empty());
  s = serverSettings(false);
  s.ca_file.clear();
  CHECK_THAT(createError(s, TlsRole::NativeServer), Catch::Contains("set ca_file or ca_path"));
  s = serverSettings();
  s.key_file.clear();
  CHECK(createError(s, TlsRole::Server) == "cert_file and key_file must be set together");
  s.cert_file.clear();
  CHECK(createError(s, TlsRole::Server) == "a TLS server needs cert_file and key_file");
}

TEST_CASE("tls_context: loads SEC1, PKCS#8 and PKCS#1 keys; refuses encrypted or wrong keys",
          "[rpc_tls]") {
  TlsSettings s = serverSettings();
  CHECK_THAT(readFile(s.key_file), Catch::Contains("BEGIN EC PRIVATE KEY"));
  CHECK(createError(s, TlsRole::Server).empty());
  s.key_file = negative("server-key-pkcs8.pem");
  CHECK_THAT(readFile(s.key_file), Catch::Contains("BEGIN PRIVATE KEY"));
  CHECK(createError(s, TlsRole::Server).empty());
  TlsSettings rsa = serverSettings();
  rsa.cert_file = negative("rsa-server.pem");
  rsa.key_file = negative("rsa-server-key.pem");
  CHECK_THAT(readFile(rsa.key_file), Catch::Contains("BEGIN RSA PRIVATE KEY"));
  CHECK(createError(rsa, TlsRole::Server).empty());

  s.key_file = negative("server-key-encrypted.pem");
  const std::string encrypted = createError(s, TlsRole::Server);
  CHECK_THAT(encrypted, Catch::StartsWith("key_file " + s.key_file.string() + ": "));
  CHECK_THAT(encrypted, Catch::Contains("unencrypted"));
  s.key_file = certs() / "dc1-client-consul-0-key.pem";
  CHECK(createError(s, TlsRole::Server) ==
        "key_file " + s.key_file.string() + " does not match cert_file " + s.cert_file.string());
  // Messages name files and never quote key material.
  const std::string key_text = readFile(s.key_file);
  CHECK(createError(s, TlsRole::Server).find(key_text.substr(40, 20)) == std::string::npos);
}

TEST_CASE("tls_context: file errors name the file", "[rpc_tls]") {
  TempDir dir;
  TlsSettings s = serverSettings();
  s.ca_file = dir / "missing.pem";
  CHECK(createError(s, TlsRole::Server) ==
        "ca_file " + s.ca_file.string() + ": cannot open: No such file or directory");
  s.ca_file = certs() / "consul-agent-ca-key.pem";  // a PEM file without a certificate
  CHECK(createError(s, TlsRole::Server) ==
        "ca_file " + s.ca_file.string() + ": no PEM certificate found");
  s = serverSettings();
  s.cert_file = dir / "nope.pem";
  CHECK_THAT(createError(s, TlsRole::Server),
             Catch::StartsWith("cert_file " + s.cert_file.string()));
}

TEST_CASE("tls_context: ca_path is walked recursively and every file must hold a certificate",
          "[rpc_tls]") {
  TempDir dir;
  std::filesystem::create_directories(dir / "nested/deeper");
  writeFile(dir / "other.pem", readFile(negative("other-ca.pem")));
  TlsSettings c = trustOnly();
  c.ca_path = dir.path();
  CHECK_FALSE(clientTrustsRealServer(c));  // control: only the other CA so far

  writeFile(dir / "nested/deeper/real.crt", readFile(certs() / "consul-agent-ca.pem"));
  CHECK(clientTrustsRealServer(c));

  writeFile(dir / "nested/notes.txt", "not a certificate\n");
  CHECK(createError(c, TlsRole::Client) == "ca_path " + dir.path().string() + ": " +
                                               (dir / "nested/notes.txt").string() +
                                               ": no PEM certificate found");

  SECTION("ca_file wins and ca_path is then ignored") {
    c.ca_file = certs() / "consul-agent-ca.pem";
    CHECK(createError(c, TlsRole::Client).empty());
    CHECK(clientTrustsRealServer(c));
  }
  SECTION("an empty directory is an error") {
    TempDir empty;
    std::filesystem::create_directories(empty / "sub");  // directories alone hold no CA
    c.ca_path = empty.path();
    CHECK(createError(c, TlsRole::Client) ==
          "ca_path " + empty.path().string() + ": no CA certificates found");
  }
}

TEST_CASE("tls_context: tls_cipher_suites takes Consul's ten IANA names", "[rpc_tls]") {
  TlsSettings s = serverSettings(false);
  s.tls_cipher_suites.assign(consulCipherSuites().begin(), consulCipherSuites().end());
  CHECK(consulCipherSuites().size() == 10);
  CHECK(createError(s, TlsRole::Server).empty());
  s.tls_cipher_suites = {"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_RSA_WITH_RC4_128_SHA"};
  CHECK(createError(s, TlsRole::Server) ==
        "tls_cipher_suites: unsupported cipher suite 'TLS_RSA_WITH_RC4_128_SHA'");
  s.tls_cipher_suites = {"ECDHE-ECDSA-AES128-GCM-SHA256"};  // BoringSSL's spelling, not Consul's
  CHECK_THAT(createError(s, TlsRole::Server), Catch::Contains("unsupported cipher suite"));
  s.tls_cipher_suites = {"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"};
  s.tls_min_version = TlsVersion::Tls13;
  CHECK(createError(s, TlsRole::Server) ==
        "tls_cipher_suites: TLS 1.3 cipher suites are not configurable");
}

TEST_CASE("tls_context: a configured suite is the one negotiated at TLS 1.2", "[rpc_tls]") {
  struct Case {
    const char* suite;
    const char* cert_stem;  // "" = the real P-256 server certificate
  };
  for (Case k : {Case{"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", ""},
                 Case{"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", ""},
                 Case{"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", ""},
                 Case{"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "rsa-server"},
                 Case{"TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "rsa-server"}}) {
    CAPTURE(k.suite);
    TlsSettings s = serverSettings(false);
    if (*k.cert_stem != '\0') {
      s.cert_file = negative(std::string(k.cert_stem) + ".pem");
      s.key_file = negative(std::string(k.cert_stem) + "-key.pem");
    }
    s.tls_cipher_suites = {k.suite};
    auto client = mustCreate(clientSettings(), TlsRole::Client);
    REQUIRE(SSL_CTX_set_max_proto_version(client->native(), TLS1_2_VERSION) == 1);
    Pair p(client, mustCreate(s, TlsRole::Server));
    p.pump();
    REQUIRE(p.bothReady());
    CHECK(p.client.engine->version() == "TLSv1.2");
    CHECK(p.client.engine->cipher() == k.suite);
  }
}
