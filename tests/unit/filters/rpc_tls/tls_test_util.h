#pragma once

// Helpers shared by the rpc_tls tests: fixture paths, context construction, and a pump that
// moves bytes between two in-memory engines (client <-> server) until nothing moves.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <variant>
#include <vector>

#include "filters/rpc_tls/tls_context.h"
#include "filters/rpc_tls/tls_engine.h"

namespace sidecrypt::rpc_tls_test {

using filters::rpc_tls::ClientOptions;
using filters::rpc_tls::TlsContext;
using filters::rpc_tls::TlsContextSharedPtr;
using filters::rpc_tls::TlsEngine;
using filters::rpc_tls::TlsEnginePtr;
using filters::rpc_tls::TlsRole;
using filters::rpc_tls::TlsSettings;

inline std::filesystem::path certs() {
  return std::filesystem::path(SIDECRYPT_SOURCE_DIR) / "tests/unit/filters/rpc_tls/certs";
}
inline std::filesystem::path negative(const std::string& name) {
  return certs() / "negative" / name;
}

// The real server: CA + server.dc1.consul certificate.
inline TlsSettings serverSettings(bool verify_incoming = true) {
  TlsSettings s;
  s.ca_file = certs() / "consul-agent-ca.pem";
  s.cert_file = certs() / "dc1-server-consul-0.pem";
  s.key_file = certs() / "dc1-server-consul-0-key.pem";
  s.verify_incoming = verify_incoming;
  return s;
}

// The real client: CA + client.dc1.consul certificate, verify_outgoing on.
inline TlsSettings clientSettings(bool verify_server_hostname = true) {
  TlsSettings s;
  s.ca_file = certs() / "consul-agent-ca.pem";
  s.cert_file = certs() / "dc1-client-consul-0.pem";
  s.key_file = certs() / "dc1-client-consul-0-key.pem";
  s.verify_outgoing = true;
  s.verify_server_hostname = verify_server_hostname;
  return s;
}

inline TlsContextSharedPtr mustCreate(const TlsSettings& s, TlsRole role) {
  auto made = TlsContext::create(s, role);
  if (const auto* error = std::get_if<std::string>(&made)) {
    FAIL("TlsContext::create failed: " << *error);
  }
  return std::get<TlsContextSharedPtr>(made);
}

// "" when creation succeeded.
inline std::string createError(const TlsSettings& s, TlsRole role) {
  auto made = TlsContext::create(s, role);
  const auto* error = std::get_if<std::string>(&made);
  return error != nullptr ? *error : std::string();
}

struct Side {
  TlsEnginePtr engine;
  std::string received;  // clear bytes read so far
  bool eof = false;
  bool failed = false;
  std::vector<uint8_t> in_flight;  // ciphertext from the other side not yet accepted
};

// Two engines back to back. chunk limits every encIn() call (1 = byte at a time).
struct Pair {
  Side client;
  Side server;
  size_t chunk = std::numeric_limits<size_t>::max();

  Pair(TlsContextSharedPtr client_ctx, TlsContextSharedPtr server_ctx,
       const ClientOptions& options = {}) {
    client.engine = TlsEngine::client(std::move(client_ctx), options);
    server.engine = TlsEngine::server(std::move(server_ctx));
    REQUIRE(client.engine);
    REQUIRE(server.engine);
  }

  static bool readAll(Side& side) {
    bool moved = false;
    uint8_t buf[4096];
    while (!side.eof && !side.failed) {
      const ptrdiff_t n = side.engine->clearOut(buf);
      if (n > 0) {
        side.received.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
        moved = true;
      } else if (n == TlsEngine::kEof) {
        side.eof = true;
        moved = true;
      } else if (n == TlsEngine::kFailed) {
        side.failed = true;
        moved = true;
      } else {
        break;
      }
    }
    return moved;
  }

  // Moves `from`'s pending ciphertext to `to`, chunk by chunk; returns whether anything moved.
  bool transfer(Side& from, Side& to) {
    bool moved = false;
    uint8_t buf[16384];
    while (size_t n = from.engine->encOut(buf)) {
      from.in_flight.insert(from.in_flight.end(), buf, buf + n);
    }
    while (!from.in_flight.empty()) {
      const size_t offer = std::min(chunk, from.in_flight.size());
      const size_t took = to.engine->encIn({from.in_flight.data(), offer});
      from.in_flight.erase(from.in_flight.begin(), from.in_flight.begin() + took);
      moved = moved || took > 0;
      moved = readAll(to) || moved;
      if (took == 0) {
        break;
      }
    }
    return moved;
  }

  bool pumpOnce() {
    bool moved = transfer(client, server);
    moved = transfer(server, client) || moved;
    moved = readAll(client) || moved;
    return readAll(server) || moved;
  }

  void pump(int max_rounds = 1000000) {
    for (int i = 0; i < max_rounds; ++i) {
      if (!pumpOnce()) {
        return;
      }
    }
    FAIL("pump did not settle");
  }

  // Writes all of `data` on `side`, pumping whenever the engine pushes back.
  void send(Side& side, const std::string& data) {
    std::span<const uint8_t> rest(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    while (!rest.empty()) {
      const size_t n = side.engine->clearIn(rest);
      if (n == 0) {
        REQUIRE(pumpOnce());
        continue;
      }
      rest = rest.subspan(n);
    }
  }

  bool bothReady() const {
    return client.engine->handshakeDone() && server.engine->handshakeDone() && !client.failed &&
           !server.failed;
  }
};

inline std::string pattern(size_t n, uint8_t seed) {
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    out[i] = static_cast<char>((i * 131 + seed) & 0xff);
  }
  return out;
}

}  // namespace sidecrypt::rpc_tls_test
