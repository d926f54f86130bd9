// The verified-chain cache (issue 18 item 2): a chain verified in full once is not path-verified
// again while it stays the same chain under the same CA set and within its dates; the proof of key
// possession (CertificateVerify) and the name check run on every handshake all the same.
#include "filters/rpc_tls/verified_chains.h"

#include <catch2/catch.hpp>

#include "filters/common/boringssl.h"

#include <openssl/bio.h>
#include <openssl/digest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <atomic>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "../../test_util.h"
#include "filters/rpc_tls/cert_inventory.h"
#include "tls_test_util.h"

using namespace sidecrypt::rpc_tls_test;
using sidecrypt::filters::rpc_tls::asn1UnixTime;
using sidecrypt::filters::rpc_tls::peerChainDigest;
using sidecrypt::filters::rpc_tls::Sha256;
using sidecrypt::filters::rpc_tls::VerifiedChain;
using sidecrypt::filters::rpc_tls::VerifiedChainCache;

namespace {

Sha256 filled(uint8_t b) {
  Sha256 out{};
  out.fill(b);
  return out;
}

bssl::UniquePtr<X509> readCert(const std::filesystem::path& file) {
  bssl::UniquePtr<BIO> bio(BIO_new_file(file.c_str(), "r"));
  REQUIRE(bio);
  bssl::UniquePtr<X509> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  REQUIRE(cert);
  return cert;
}

bssl::UniquePtr<EVP_PKEY> readKey(const std::filesystem::path& file) {
  bssl::UniquePtr<BIO> bio(BIO_new_file(file.c_str(), "r"));
  REQUIRE(bio);
  bssl::UniquePtr<EVP_PKEY> key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  REQUIRE(key);
  return key;
}

std::string pem(X509* cert) {
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  REQUIRE(PEM_write_bio_X509(bio.get(), cert) == 1);
  const uint8_t* data = nullptr;
  size_t len = 0;
  REQUIRE(BIO_mem_contents(bio.get(), &data, &len) == 1);
  return {reinterpret_cast<const char*>(data), len};
}

// The digest a context files a peer's chain under when the peer sends only `leaf`.
Sha256 digestOfLeaf(X509* leaf) {
  bssl::UniquePtr<STACK_OF(X509)> chain(sk_X509_new_null());
  REQUIRE(chain);
  X509_up_ref(leaf);
  REQUIRE(sk_X509_push(chain.get(), leaf) == 1);
  auto chain_digest = peerChainDigest(leaf, chain.get());
  sk_X509_pop_free(chain.release(), X509_free);
  REQUIRE(chain_digest);
  return *chain_digest;
}

// One connection; returns the pair for inspection.
struct Outcome {
  bool ok;
  bool server_hit;
  bool server_ran;
  bool server_verified;  // the client's chain held (from the cache or verified in full)
  bool client_hit;
  bool client_ran;
  std::string client_error;
  std::string server_error;
};
Outcome connect(const TlsContextSharedPtr& client, const TlsContextSharedPtr& server,
                const ClientOptions& options = {}) {
  Pair p(client, server, options);
  p.pump();
  return Outcome{p.bothReady(),
                 p.server.engine->chainCheck().cache_hit,
                 p.server.engine->chainCheck().ran,
                 p.server.engine->chainCheck().verified,
                 p.client.engine->chainCheck().cache_hit,
                 p.client.engine->chainCheck().ran,
                 p.client.engine->error(),
                 p.server.engine->error()};
}

TlsContextSharedPtr noResumption(TlsSettings s, TlsRole role) {
  s.session_resumption = false;  // every connection a full handshake
  return mustCreate(s, role);
}

}  // namespace

TEST_CASE("verified_chains: keyed by chain and trust, bounded, least recently used first",
          "[rpc_tls][chain_cache]") {
  VerifiedChainCache cache(2);
  const int64_t now = 1'000'000;
  VerifiedChain v;
  v.anchor = filled(0xca);
  v.not_before = now - 10;
  v.not_after = now + 10;
  cache.store(filled(1), filled(0xa), v);
  CHECK(cache.find(filled(1), filled(0xa), now));
  CHECK(cache.find(filled(1), filled(0xa), now)->anchor == filled(0xca));
  CHECK_FALSE(cache.find(filled(2), filled(0xa), now));  // another chain
  CHECK_FALSE(cache.find(filled(1), filled(0xb), now));  // another CA set (or purpose)
  cache.store(filled(2), filled(0xa), v);
  CHECK(cache.find(filled(1), filled(0xa), now));  // 1 is now the most recently used
  cache.store(filled(3), filled(0xa), v);
  CHECK(cache.size() == 2);
  CHECK_FALSE(cache.find(filled(2), filled(0xa), now));  // evicted
  CHECK(cache.find(filled(3), filled(0xa), now));
  cache.clear();
  CHECK(cache.size() == 0);
}

TEST_CASE("verified_chains: an entry holds only within the dates of its whole chain",
          "[rpc_tls][chain_cache]") {
  VerifiedChainCache cache;
  const int64_t now = 1'000'000;
  VerifiedChain v;
  v.not_before = now - 10;
  v.not_after = now + 10;
  cache.store(filled(1), filled(0xa), v);
  CHECK(cache.find(filled(1), filled(0xa), now + 10));  // notAfter itself is still valid
  CHECK_FALSE(cache.find(filled(1), filled(0xa), now + 11));
  CHECK(cache.size() == 0);  // an ended entry is dropped
  cache.store(filled(1), filled(0xa), v);
  CHECK_FALSE(cache.find(filled(1), filled(0xa), now - 11));  // clock went back before notBefore
}

TEST_CASE(
    "verified_chains: the same peer again skips path verification; its entry ends at the "
    "earliest notAfter of the chain",
    "[rpc_tls][chain_cache]") {
  auto client = noResumption(clientSettings(), TlsRole::Client);
  auto server = noResumption(serverSettings(), TlsRole::Server);
  auto first = connect(client, server);
  REQUIRE(first.ok);
  CHECK(first.server_ran);
  CHECK_FALSE(first.server_hit);
  CHECK(first.client_ran);
  auto second = connect(client, server);
  REQUIRE(second.ok);
  CHECK(second.server_hit);
  CHECK_FALSE(second.server_ran);
  CHECK(second.client_hit);
  CHECK_FALSE(second.client_ran);

  // The server's entry for the client's chain: anchored at the CA, until the earliest notAfter.
  auto leaf = readCert(certs() / "dc1-client-consul-0.pem");
  auto ca = readCert(certs() / "consul-agent-ca.pem");
  auto entry =
      server->chainCache()->find(digestOfLeaf(leaf.get()), server->trust(), std::time(nullptr));
  REQUIRE(entry);
  Sha256 ca_sha{};
  unsigned len = 0;
  REQUIRE(X509_digest(ca.get(), EVP_sha256(), ca_sha.data(), &len) == 1);
  CHECK(entry->anchor == ca_sha);
  const int64_t earliest = std::min(asn1UnixTime(X509_get0_notAfter(leaf.get())),
                                    asn1UnixTime(X509_get0_notAfter(ca.get())));
  CHECK(entry->not_after == earliest);
  // Past it the entry is gone: the next handshake would verify (and refuse) the chain in full.
  CHECK_FALSE(server->chainCache()->find(digestOfLeaf(leaf.get()), server->trust(), earliest + 1));
}

TEST_CASE("verified_chains: another chain, or the same chain under another CA set, misses",
          "[rpc_tls][chain_cache]") {
  auto server = noResumption(serverSettings(), TlsRole::Server);
  auto client = noResumption(clientSettings(), TlsRole::Client);
  REQUIRE(connect(client, server).ok);
  REQUIRE(connect(client, server).server_hit);
  // Another client certificate (the server's own, which has clientAuth): a miss, verified in full.
  TlsSettings c = clientSettings();
  c.cert_file = serverSettings().cert_file;
  c.key_file = serverSettings().key_file;
  auto other = connect(noResumption(c, TlsRole::Client), server);
  CHECK(other.ok);
  CHECK(other.server_ran);
  CHECK_FALSE(other.server_hit);

  // The same chain, a server whose CA set differs (a bundle with one more CA): its trust differs,
  // so nothing verified under the first set counts there.
  TlsSettings bundle = serverSettings();
  bundle.ca_file = negative("ca-bundle.pem");
  auto server2 = noResumption(bundle, TlsRole::Server);
  CHECK(server2->trust() != server->trust());
  auto leaf = readCert(certs() / "dc1-client-consul-0.pem");
  CHECK(server->chainCache()->find(digestOfLeaf(leaf.get()), server->trust(), std::time(nullptr)));
  CHECK_FALSE(
      server->chainCache()->find(digestOfLeaf(leaf.get()), server2->trust(), std::time(nullptr)));
  auto under2 = connect(client, server2);
  CHECK(under2.ok);
  CHECK(under2.server_ran);
  // The same files loaded again (a reload): the same trust, but a new context starts empty.
  auto reloaded = noResumption(serverSettings(), TlsRole::Server);
  CHECK(reloaded->trust() == server->trust());
  CHECK(reloaded->chainCache()->size() == 0);
  CHECK(connect(client, reloaded).server_ran);
  // The roles differ in the EKU they require: a client context's trust is not a server's.
  CHECK(client->trust() != server->trust());
}

TEST_CASE("verified_chains: a copy of a cached leaf signed by another key misses and is refused",
          "[rpc_tls][chain_cache]") {
  auto server = noResumption(serverSettings(), TlsRole::Server);
  REQUIRE(connect(noResumption(clientSettings(), TlsRole::Client), server).ok);
  // Same subject, issuer name, SANs, serial and public key as the cached client certificate;
  // only the CA signature differs (made with another CA's key).
  auto forged = readCert(certs() / "dc1-client-consul-0.pem");
  auto other_ca_key = readKey(negative("other-ca-key.pem"));
  REQUIRE(X509_sign(forged.get(), other_ca_key.get(), EVP_sha256()) > 0);
  sidecrypt::test::TempDir dir;
  sidecrypt::test::writeFile(dir / "forged.pem", pem(forged.get()));
  TlsSettings c = clientSettings();
  c.cert_file = dir / "forged.pem";  // the client holds the matching (real) private key
  auto seen = connect(noResumption(c, TlsRole::Client), server);
  CHECK_FALSE(seen.ok);
  CHECK_FALSE(seen.server_hit);
  CHECK(seen.server_ran);
  CHECK_FALSE(seen.server_verified);  // refused by the chain verification itself
  CHECK_THAT(seen.server_error, Catch::Contains("bad signature"));
}

namespace {

// A client key "held" elsewhere: CertificateVerify is signed with this key instead of the one
// matching the certificate the client presents.
EVP_PKEY* g_wrong_key = nullptr;

ssl_private_key_result_t signWithWrongKey(SSL* /*ssl*/, uint8_t* out, size_t* out_len,
                                          size_t max_out, uint16_t /*signature_algorithm*/,
                                          const uint8_t* in, size_t in_len) {
  bssl::ScopedEVP_MD_CTX md;
  size_t len = max_out;
  if (EVP_DigestSignInit(md.get(), nullptr, EVP_sha256(), nullptr, g_wrong_key) != 1 ||
      EVP_DigestSign(md.get(), out, &len, in, in_len) != 1) {
    return ssl_private_key_failure;
  }
  *out_len = len;
  return ssl_private_key_success;
}

ssl_private_key_result_t noDecrypt(SSL*, uint8_t*, size_t*, size_t, const uint8_t*, size_t) {
  return ssl_private_key_failure;
}
ssl_private_key_result_t noComplete(SSL*, uint8_t*, size_t*, size_t) {
  return ssl_private_key_failure;
}
const SSL_PRIVATE_KEY_METHOD kWrongKey = {signWithWrongKey, noDecrypt, noComplete};

}  // namespace

TEST_CASE("verified_chains: a cached chain without its private key fails CertificateVerify",
          "[rpc_tls][chain_cache]") {
  // The server has verified and cached the real client's chain.
  auto server = noResumption(serverSettings(), TlsRole::Server);
  auto client = noResumption(clientSettings(), TlsRole::Client);
  REQUIRE(connect(client, server).ok);
  auto control = connect(client, server);
  REQUIRE(control.ok);
  REQUIRE(control.server_hit);

  // A client presenting exactly that chain but signing with another P-256 key: the chain is a
  // cache hit, and the handshake still fails on the signature.
  auto wrong = readKey(negative("other-client-key.pem"));
  g_wrong_key = wrong.get();
  auto impostor = noResumption(clientSettings(), TlsRole::Client);
  SSL_CTX_set_private_key_method(impostor->native(), &kWrongKey);
  auto seen = connect(impostor, server);
  g_wrong_key = nullptr;
  CHECK_FALSE(seen.ok);
  CHECK(seen.server_hit);       // the chain itself was taken from the cache
  CHECK(seen.server_verified);  // and held: the refusal is the CertificateVerify check's
  CHECK_THAT(seen.server_error, Catch::Contains("bad signature"));

  // And the real client still gets in, from the cache.
  auto after = connect(client, server);
  CHECK(after.ok);
  CHECK(after.server_hit);
}

TEST_CASE("verified_chains: a cached chain still needs the expected server name",
          "[rpc_tls][chain_cache]") {
  auto client = noResumption(clientSettings(), TlsRole::Client);
  auto server = noResumption(serverSettings(), TlsRole::Server);
  REQUIRE(connect(client, server).ok);
  // The server's chain is cached on the client; dialling it as a dc2 server must still fail.
  ClientOptions dc2;
  dc2.datacenter = "dc2";
  auto seen = connect(client, server, dc2);
  CHECK_FALSE(seen.ok);
  CHECK(seen.client_hit);
  CHECK_FALSE(seen.client_ran);
  CHECK_THAT(seen.client_error, Catch::Contains("hostname mismatch"));
}

TEST_CASE("verified_chains: a resumed handshake verifies no chain and keeps the identity",
          "[rpc_tls][chain_cache][resume]") {
  auto client = mustCreate(clientSettings(), TlsRole::Client);
  auto server = mustCreate(serverSettings(), TlsRole::Server);
  for (int i = 0; i < 3; ++i) {
    CAPTURE(i);
    ClientOptions options;
    options.session_key = "10.0.0.1:8300";
    Pair p(client, server, options);
    p.pump();
    REQUIRE(p.bothReady());
    p.send(p.server, "x");  // carries the ticket
    p.pump();
    const bool resumed = i > 0;
    CHECK(p.client.engine->resumed() == resumed);
    CHECK(p.server.engine->chainCheck().ran == !resumed);
    CHECK(p.client.engine->chainCheck().ran == !resumed);
    CHECK(p.server.engine->peer().has_anchor);
    CHECK(p.client.engine->peer().verifies_as_server);
    CHECK_FALSE(p.server.engine->peer().verifies_as_server);  // a client certificate
  }
  // With its cache emptied, a client's resumed session verifies the server's chain once more
  // (the session keeps it) and caches it.
  client->chainCache()->clear();
  ClientOptions options;
  options.session_key = "10.0.0.1:8300";
  {
    Pair p(client, server, options);
    p.pump();
    REQUIRE(p.bothReady());
    CHECK(p.client.engine->resumed());
    CHECK(p.client.engine->chainCheck().ran);
    CHECK(p.client.engine->peer().verifies_as_server);
    CHECK(client->chainCache()->size() == 1);
  }
  // A server's session keeps only the SHA-256 of the client's leaf: with its verified leaves
  // gone there is nothing to verify again, so the ticket (which names the leaf's record) is not
  // resumed and the client gets a full handshake, which verifies the chain.
  server->chainCache()->clear();
  Pair p(client, server, options);
  p.pump();
  REQUIRE(p.bothReady());
  CHECK_FALSE(p.server.engine->resumed());
  CHECK_FALSE(p.server.engine->failed());
  CHECK(p.server.engine->chainCheck().ran);
  CHECK(p.server.engine->peer().has_anchor);
  CHECK(server->chainCache()->leafCount() == 1);
}

TEST_CASE("verified_chains: handshakes on several threads share one context's caches",
          "[rpc_tls][chain_cache]") {
  // Worker loops run handshakes of the same TlsContext at once: the verify callback, the chain
  // cache, the ticket keys and the client session cache are shared between them.
  auto client = mustCreate(clientSettings(), TlsRole::Client);
  auto server = mustCreate(serverSettings(), TlsRole::Server);
  auto full_client = noResumption(clientSettings(), TlsRole::Client);
  constexpr int kThreads = 4;
  constexpr int kEach = 25;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        ClientOptions options;
        options.session_key = "10.0.0." + std::to_string(t) + ":8300";
        auto c = TlsEngine::client(i % 2 == 0 ? client : full_client, options);
        auto s = TlsEngine::server(server);
        uint8_t buf[16384];
        for (int round = 0; round < 10 && !(c->handshakeDone() && s->handshakeDone()); ++round) {
          while (size_t n = c->encOut(buf)) {
            s->encIn({buf, n});
          }
          s->clearOut(std::span<uint8_t>());
          while (size_t n = s->encOut(buf)) {
            c->encIn({buf, n});
          }
          c->clearOut(std::span<uint8_t>());
        }
        if (c->handshakeDone() && s->handshakeDone() && !c->failed() && !s->failed() &&
            s->peer().has_anchor && c->peer().verifies_as_server) {
          ++ok;
        }
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  CHECK(ok == kThreads * kEach);
  CHECK(server->chainCache()->size() == 1);  // one client chain, however many threads saw it
}
