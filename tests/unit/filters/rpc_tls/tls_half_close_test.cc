// Half-close both ways, driven as docs/spec/rpc-peers.md §2.4 says and as Go behaves (§2.1, §2.2).
#include <catch2/catch.hpp>

#include "filters/common/boringssl.h"

#include <openssl/ssl.h>

#include "tls_test_util.h"

using namespace sidecrypt::rpc_tls_test;

namespace {

Pair pairAt(uint16_t max_version, size_t chunk) {
  auto client = mustCreate(clientSettings(), TlsRole::Client);
  REQUIRE(SSL_CTX_set_max_proto_version(client->native(), max_version) == 1);
  Pair p(client, mustCreate(serverSettings(), TlsRole::Server));
  p.chunk = chunk;
  p.pump();
  REQUIRE(p.bothReady());
  return p;
}

struct Outcome {
  std::string first_received;  // what the half-closing side sent, as its peer saw it
  std::string reply_received;  // what came back after the half-close
  bool first_eof, reply_eof;
  bool fully_closed_a, fully_closed_b;
  std::string version;
};

// `a` writes `request` and half-closes; `b` sees the data then EOF, keeps writing `reply`, and
// half-closes; `a` keeps reading the reply, then EOF. The snapshot RPC's shape
// (docs/spec/consul-rpc-tls.md §1.6).
Outcome exchange(Pair& p, Side& a, Side& b, const std::string& request, const std::string& reply) {
  p.send(a, request);
  a.engine->shutdownWrite();
  CHECK(a.engine->writeShutdown());
  CHECK(a.engine->clearIn(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>("x"), 1)) == 0);
  p.pump();
  Outcome o{};
  o.first_received = b.received;
  o.first_eof = b.eof;
  CHECK(b.engine->peerClosed());
  CHECK_FALSE(b.engine->peerTruncated());
  CHECK_FALSE(a.eof);  // the half-closing side still reads
  p.send(b, reply);    // writing after close_notify arrived still works
  p.pump();
  CHECK_FALSE(a.failed);
  b.engine->shutdownWrite();
  p.pump();
  o.reply_received = a.received;
  o.reply_eof = a.eof;
  o.fully_closed_a = a.engine->fullyClosed();
  o.fully_closed_b = b.engine->fullyClosed();
  o.version = a.engine->version();
  return o;
}

}  // namespace

TEST_CASE("tls_half_close: the client half-closes first and still reads the reply",
          "[rpc_tls][half_close]") {
  for (uint16_t v : {uint16_t{TLS1_3_VERSION}, uint16_t{TLS1_2_VERSION}}) {
    CAPTURE(v);
    Pair p = pairAt(v, SIZE_MAX);
    const std::string request = pattern(100000, 1);
    const std::string reply = pattern(200000, 2);
    Outcome o = exchange(p, p.client, p.server, request, reply);
    CHECK(o.version == (v == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2"));
    CHECK(o.first_received == request);
    CHECK(o.first_eof);
    CHECK(o.reply_received == reply);
    CHECK(o.reply_eof);
    CHECK(o.fully_closed_a);
    CHECK(o.fully_closed_b);
  }
}

TEST_CASE("tls_half_close: the server half-closes first and still reads the reply",
          "[rpc_tls][half_close]") {
  for (uint16_t v : {uint16_t{TLS1_3_VERSION}, uint16_t{TLS1_2_VERSION}}) {
    CAPTURE(v);
    Pair p = pairAt(v, SIZE_MAX);
    const std::string request = pattern(70000, 3);
    const std::string reply = pattern(130000, 4);
    Outcome o = exchange(p, p.server, p.client, request, reply);
    CHECK(o.first_received == request);
    CHECK(o.first_eof);
    CHECK(o.reply_received == reply);
    CHECK(o.reply_eof);
    CHECK(o.fully_closed_a);
    CHECK(o.fully_closed_b);
  }
}

TEST_CASE("tls_half_close: feeding one byte at a time gives the same result",
          "[rpc_tls][half_close]") {
  const std::string request = pattern(3000, 5);
  const std::string reply = pattern(5000, 6);
  Pair whole = pairAt(TLS1_3_VERSION, SIZE_MAX);
  Outcome a = exchange(whole, whole.client, whole.server, request, reply);
  Pair bytewise = pairAt(TLS1_3_VERSION, 1);
  Outcome b = exchange(bytewise, bytewise.client, bytewise.server, request, reply);
  CHECK(b.first_received == a.first_received);
  CHECK(b.reply_received == a.reply_received);
  CHECK(b.first_eof == a.first_eof);
  CHECK(b.reply_eof == a.reply_eof);
  CHECK(b.fully_closed_a == a.fully_closed_a);
  CHECK(b.fully_closed_b == a.fully_closed_b);
  CHECK(b.reply_received == reply);
}

TEST_CASE("tls_half_close: shutdownWrite before the handshake is deferred until after it",
          "[rpc_tls][half_close]") {
  Pair p(mustCreate(clientSettings(), TlsRole::Client),
         mustCreate(serverSettings(), TlsRole::Server));
  // The agent wrote its type byte and hung up before the TLS handshake finished.
  p.send(p.client, "\x05request");
  p.client.engine->shutdownWrite();
  CHECK_FALSE(p.client.engine->writeShutdown());
  p.pump();
  REQUIRE(p.bothReady());
  CHECK(p.client.engine->writeShutdown());
  CHECK(p.server.received == "\x05request");
  CHECK(p.server.eof);
  CHECK(p.server.engine->peerClosed());
}

TEST_CASE("tls_half_close: a transport EOF without close_notify is reported as truncation",
          "[rpc_tls][half_close]") {
  Pair p = pairAt(TLS1_3_VERSION, SIZE_MAX);
  p.send(p.client, "data");
  p.pump();
  p.server.engine->encInEof();  // bare FIN (docs/spec/rpc-peers.md §2.3)
  uint8_t buf[16];
  CHECK(p.server.engine->clearOut(buf) == TlsEngine::kEof);
  CHECK(p.server.engine->peerTruncated());
  CHECK_FALSE(p.server.engine->peerClosed());
  CHECK_FALSE(p.server.engine->failed());
  CHECK(p.server.received == "data");
  // Like Go's peer after a bare FIN, this side can still write.
  CHECK(p.server.engine->clearIn(
            std::span<const uint8_t>(reinterpret_cast<const uint8_t*>("ok"), 2)) == 2);
}

TEST_CASE("tls_half_close: transport EOF during the handshake fails with a clear reason",
          "[rpc_tls][half_close]") {
  Pair p(mustCreate(clientSettings(), TlsRole::Client),
         mustCreate(serverSettings(), TlsRole::Server));
  p.transfer(p.client, p.server);  // ClientHello only
  p.client.engine->encInEof();
  CHECK(p.client.engine->failed());
  CHECK_THAT(p.client.engine->error(), Catch::Contains("closed during the TLS handshake"));
}
