// TlsEngine as a byte stream: bounded buffering, odd feeding, native ALPN mode, garbage.
#include <catch2/catch.hpp>

#include "filters/common/boringssl.h"

#include <openssl/ssl.h>

#include "filters/rpc_tls/first_byte.h"
#include "tls_test_util.h"

using namespace sidecrypt::rpc_tls_test;
using sidecrypt::filters::rpc_tls::kConsulAlpnProtocols;

namespace {

Pair ready() {
  Pair p(mustCreate(clientSettings(), TlsRole::Client),
         mustCreate(serverSettings(), TlsRole::Server));
  p.pump();
  REQUIRE(p.bothReady());
  return p;
}

std::span<const uint8_t> bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

TEST_CASE("tls_stream: clearIn stops at the ciphertext bound until encOut drains it", "[rpc_tls]") {
  Pair p = ready();
  const std::string big = pattern(1 << 20, 7);
  size_t taken = 0;
  for (;;) {
    const size_t n = p.client.engine->clearIn(bytes(big).subspan(taken));
    if (n == 0) {
      break;
    }
    taken += n;
  }
  CHECK(taken >= TlsEngine::kMaxEncOutBuffered);
  CHECK(taken < big.size());
  // Bounded: at most the limit plus one record's worth of overshoot.
  CHECK(p.client.engine->encPending() <= TlsEngine::kMaxEncOutBuffered + size_t{17} * 1024 + 64);
  p.send(p.client, big.substr(taken));
  p.pump();
  CHECK(p.server.received == big);
}

TEST_CASE("tls_stream: encIn stops at the unread-ciphertext bound until clearOut drains it",
          "[rpc_tls]") {
  Pair p = ready();
  const std::string big = pattern(300000, 8);
  p.send(p.server, big.substr(0, 60000));
  p.pump();
  p.client.received.clear();
  // Produce more ciphertext than the client accepts without reading.
  size_t offset = 60000;
  std::vector<uint8_t> wire;
  uint8_t buf[16384];
  while (offset < big.size()) {
    const size_t n = p.server.engine->clearIn(bytes(big).subspan(offset));
    REQUIRE(n > 0);
    offset += n;
    while (size_t m = p.server.engine->encOut(buf)) {
      wire.insert(wire.end(), buf, buf + m);
    }
  }
  const size_t took = p.client.engine->encIn(wire);
  CHECK(took == TlsEngine::kMaxEncInBuffered);
  CHECK(p.client.engine->encIn(std::span<const uint8_t>(wire).subspan(took)) == 0);
  // Reading makes room again.
  std::string got;
  size_t fed = took;
  for (int guard = 0; guard < 1000 && got.size() < big.size() - 60000; ++guard) {
    ptrdiff_t n;
    while ((n = p.client.engine->clearOut(buf)) > 0) {
      got.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
    }
    REQUIRE(n == 0);
    fed += p.client.engine->encIn(std::span<const uint8_t>(wire).subspan(fed));
  }
  CHECK(fed == wire.size());
  CHECK(got == big.substr(60000));
}

TEST_CASE("tls_stream: the handshake and data survive 1-byte feeding", "[rpc_tls]") {
  Pair p(mustCreate(clientSettings(), TlsRole::Client),
         mustCreate(serverSettings(), TlsRole::Server));
  p.chunk = 1;
  p.send(p.client, "\x04");  // held until the handshake completes
  p.pump();
  REQUIRE(p.bothReady());
  const std::string data = pattern(20000, 9);
  p.send(p.client, data);
  p.send(p.server, data);
  p.pump();
  CHECK(p.server.received == "\x04" + data);
  CHECK(p.client.received == data);
}

TEST_CASE("tls_stream: garbage fed to a server fails it with a readable reason", "[rpc_tls]") {
  auto server = TlsEngine::server(mustCreate(serverSettings(), TlsRole::Server));
  const std::string junk = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  server->encIn(bytes(junk));
  uint8_t buf[64];
  CHECK(server->clearOut(buf) == TlsEngine::kFailed);
  CHECK(server->failed());
  CHECK_THAT(server->error(), Catch::StartsWith("handshake failed: "));
  CHECK(server->clearIn(bytes(junk)) == 0);
}

TEST_CASE("tls_stream: engines refuse a context of the wrong role", "[rpc_tls]") {
  CHECK(TlsEngine::server(mustCreate(clientSettings(), TlsRole::Client)) == nullptr);
  CHECK(TlsEngine::client(mustCreate(serverSettings(), TlsRole::Server), {}) == nullptr);
  CHECK(TlsEngine::server(nullptr) == nullptr);
}

// Native TLS with ALPN (docs/spec/consul-rpc-tls.md §1.4).
TEST_CASE("tls_stream: native mode negotiates Consul's ALPN names", "[rpc_tls][alpn]") {
  auto native = mustCreate(serverSettings(false), TlsRole::NativeServer);
  for (std::string_view name : kConsulAlpnProtocols) {
    CAPTURE(name);
    Pair p(mustCreate(clientSettings(), TlsRole::Client), native,
           ClientOptions{"", {"h2", std::string(name)}, ""});
    p.pump();
    REQUIRE(p.bothReady());
    CHECK(p.server.engine->alpn() == name);
    CHECK(p.client.engine->alpn() == name);
  }
}

TEST_CASE("tls_stream: native mode fails on foreign ALPN and completes without ALPN",
          "[rpc_tls][alpn]") {
  auto native = mustCreate(serverSettings(false), TlsRole::NativeServer);
  SECTION("only unknown names: no_application_protocol, as Go") {
    Pair p(mustCreate(clientSettings(), TlsRole::Client), native, ClientOptions{"", {"h2"}, ""});
    p.pump();
    CHECK(p.server.engine->failed());
    CHECK(p.client.engine->failed());
    CHECK_THAT(p.client.engine->error(), Catch::Contains("no application protocol"));
  }
  SECTION("no ALPN: the handshake completes with an empty protocol") {
    Pair p(mustCreate(clientSettings(), TlsRole::Client), native);
    p.pump();
    REQUIRE(p.bothReady());
    CHECK(p.server.engine->alpn().empty());
  }
}

TEST_CASE("tls_stream: native mode requires a client certificate even without verify_incoming",
          "[rpc_tls][alpn]") {
  TlsSettings c = clientSettings();
  c.cert_file.clear();
  c.key_file.clear();
  Pair p(mustCreate(c, TlsRole::Client), mustCreate(serverSettings(false), TlsRole::NativeServer),
         ClientOptions{"", {"consul/rpc-multi"}, ""});
  p.pump();
  CHECK(p.server.engine->failed());
  CHECK_THAT(p.server.engine->error(), Catch::Contains("peer did not return a certificate"));
}
