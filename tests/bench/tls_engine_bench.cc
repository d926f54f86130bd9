// The TLS engine's bulk path in memory (issue 6): one client and one server engine with the
// test certificates, handshake done once, then clear bytes pushed client -> server in chunks of
// 64 KiB, as the RPC processor moves them (clearIn, encOut, encIn, clearOut). Measures the cost
// of the engine itself (BIOs, record layer, AES-GCM) without sockets or scheduling noise; the
// Attached variant runs the same through the zero-copy transport the proxy uses.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <variant>
#include <vector>

#include "filters/common/buffer.h"
#include "filters/rpc_tls/tls_context.h"
#include "filters/rpc_tls/tls_engine.h"

namespace {

using namespace sidecrypt::filters::rpc_tls;

std::filesystem::path certs() {
  return std::filesystem::path(SIDECRYPT_SOURCE_DIR) / "tests/unit/filters/rpc_tls/certs";
}

TlsContextSharedPtr context(TlsRole role, bool session_resumption = true) {
  TlsSettings s;
  s.session_resumption = session_resumption;
  s.ca_file = certs() / "consul-agent-ca.pem";
  const char* who = role == TlsRole::Server ? "server" : "client";
  s.cert_file = certs() / (std::string("dc1-") + who + "-consul-0.pem");
  s.key_file = certs() / (std::string("dc1-") + who + "-consul-0-key.pem");
  s.verify_incoming = true;
  s.verify_outgoing = true;
  s.verify_server_hostname = true;
  auto made = TlsContext::create(s, role);
  if (auto* err = std::get_if<std::string>(&made)) {
    std::fprintf(stderr, "%s\n", err->c_str());
    std::abort();
  }
  return std::get<TlsContextSharedPtr>(made);
}

// Moves ciphertext from one engine to the other; returns bytes moved.
size_t move(TlsEngine& from, TlsEngine& to, std::vector<uint8_t>& scratch) {
  size_t moved = 0;
  while (from.encPending() > 0) {
    const size_t n = from.encOut(scratch);
    size_t off = 0;
    while (off < n) {
      const size_t took = to.encIn({scratch.data() + off, n - off});
      off += took;
      if (took == 0) {
        break;
      }
    }
    moved += n;
  }
  return moved;
}

// Runs the handshake to completion (a few flights); false if it does not complete.
bool handshake(TlsEngine& client, TlsEngine& server, std::vector<uint8_t>& scratch) {
  for (int i = 0; i < 20 && !(client.handshakeDone() && server.handshakeDone()); ++i) {
    move(client, server, scratch);
    server.clearOut(std::span<uint8_t>());
    move(server, client, scratch);
    client.clearOut(std::span<uint8_t>());
  }
  return client.handshakeDone() && server.handshakeDone();
}

void BM_TlsEngineBulk(benchmark::State& state) {
  const size_t chunk = static_cast<size_t>(state.range(0));
  auto client = TlsEngine::client(context(TlsRole::Client), ClientOptions{});
  auto server = TlsEngine::server(context(TlsRole::Server));
  std::vector<uint8_t> scratch(256 * 1024);
  std::vector<uint8_t> clear(chunk, 0x5a);
  std::vector<uint8_t> out(256 * 1024);
  if (!handshake(*client, *server, scratch)) {
    state.SkipWithError("handshake did not complete");
    return;
  }
  size_t total = 0;
  for (auto _ : state) {
    size_t off = 0;
    while (off < clear.size()) {
      off += client->clearIn({clear.data() + off, clear.size() - off});
      // Ciphertext to the server in socket-sized reads, then drain the clear text.
      while (client->encPending() > 0) {
        const size_t n = client->encOut(std::span<uint8_t>(scratch.data(), 64 * 1024));
        size_t in = 0;
        while (in < n) {
          const size_t took = server->encIn({scratch.data() + in, n - in});
          in += took;
          while (true) {
            const auto got = server->clearOut(out);
            if (got <= 0) {
              break;
            }
            total += static_cast<size_t>(got);
          }
        }
      }
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(total));
}
BENCHMARK(BM_TlsEngineBulk)->Arg(64 * 1024)->Arg(1024);

// One mutual-TLS 1.3 connection, both ends in this thread: handshake, then one byte from the
// server (which carries its ticket). Arg 0: a full handshake every time (the client keeps no
// session) with both verified-chain caches emptied before each, so every chain is verified in
// full; arg 1: resumed (PSK with ECDHE) from the client's session cache; arg 2: a full handshake
// with the chain caches warm (the same peers again: no X.509 path verification, the
// CertificateVerify signatures are still checked).
void BM_TlsEngineHandshake(benchmark::State& state) {
  const bool resume = state.range(0) == 1;
  const bool cold = state.range(0) == 0;
  static const TlsContextSharedPtr server_ctx = context(TlsRole::Server);
  // Without resumption the client offers nothing and every handshake is a full one.
  const TlsContextSharedPtr client_ctx = context(TlsRole::Client, resume);
  std::vector<uint8_t> scratch(256 * 1024);
  std::vector<uint8_t> out(1024);
  const uint8_t byte = 0x04;
  size_t resumed = 0;
  size_t verified = 0;  // full X.509 path verifications, both ends
  for (auto _ : state) {
    if (cold) {
      server_ctx->chainCache()->clear();
      client_ctx->chainCache()->clear();
    }
    auto client = TlsEngine::client(client_ctx, ClientOptions{});
    auto server = TlsEngine::server(server_ctx);
    if (!handshake(*client, *server, scratch)) {
      state.SkipWithError("handshake did not complete");
      return;
    }
    server->clearIn({&byte, 1});
    move(*server, *client, scratch);
    client->clearOut(out);
    resumed += client->resumed() ? 1 : 0;
    verified += (client->chainCheck().ran ? 1 : 0) + (server->chainCheck().ran ? 1 : 0);
  }
  state.counters["resumed"] =
      benchmark::Counter(static_cast<double>(resumed), benchmark::Counter::kAvgIterations);
  state.counters["chains_verified"] =
      benchmark::Counter(static_cast<double>(verified), benchmark::Counter::kAvgIterations);
}
BENCHMARK(BM_TlsEngineHandshake)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond);

// The same through the attached transport, as the proxy runs it now: the client engine writes
// its records straight into the "socket" buffer and the server engine reads them from there.
void BM_TlsEngineBulkAttached(benchmark::State& state) {
  const size_t chunk = static_cast<size_t>(state.range(0));
  auto client = TlsEngine::client(context(TlsRole::Client), ClientOptions{});
  auto server = TlsEngine::server(context(TlsRole::Server));
  std::vector<uint8_t> scratch(256 * 1024);
  if (!handshake(*client, *server, scratch)) {
    state.SkipWithError("handshake did not complete");
    return;
  }
  sidecrypt::filters::Buffer wire(256 * 1024);
  sidecrypt::filters::Buffer back(64 * 1024);  // the server's own records (none in bulk)
  std::vector<uint8_t> clear(chunk, 0x5a);
  std::vector<uint8_t> out(16 * 1024);
  size_t total = 0;
  for (auto _ : state) {
    client->attachTransport(nullptr, &wire);
    size_t off = 0;
    while (off < clear.size()) {
      off += client->clearIn({clear.data() + off, clear.size() - off});
    }
    client->attachTransport(nullptr, nullptr);
    server->attachTransport(&wire, &back);
    server->advance();
    while (true) {
      const auto got = server->clearOut(out);
      if (got <= 0) {
        break;
      }
      total += static_cast<size_t>(got);
    }
    server->attachTransport(nullptr, nullptr);
    back.clear();
  }
  state.SetBytesProcessed(static_cast<int64_t>(total));
}
BENCHMARK(BM_TlsEngineBulkAttached)->Arg(64 * 1024)->Arg(1024);

}  // namespace
