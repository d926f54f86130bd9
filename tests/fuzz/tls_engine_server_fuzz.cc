// Fuzzes TlsEngine in the server role with peer-chosen ciphertext: whatever arrives on an
// inbound :8300 connection after 0x03 (or a native ClientHello). It must fail cleanly, never
// crash, never report plaintext before a handshake, and never call an unverified peer verified.
//
// Input: [flags][chunk size][bytes...]; flags bit 0 = verify_incoming, bit 1 = native (ALPN)
// role, bit 2 = send transport EOF at the end, bit 3 = the proxy's attached transport (the
// engine reads the ciphertext from the caller's buffer and writes into another) instead of
// encIn()/encOut().
#include <algorithm>
#include <cstdint>
#include <span>

#include "filters/common/buffer.h"
#include "filters/rpc_tls/tls_context.h"
#include "filters/rpc_tls/tls_engine.h"
#include "tests/fuzz/fuzz_support.h"

using namespace sidecrypt::filters::rpc_tls;
using sidecrypt::fuzz::check;

namespace {

TlsContextSharedPtr makeContext(bool verify_incoming, bool native) {
  return sidecrypt::fuzz::dc1ServerContext(native ? TlsRole::NativeServer : TlsRole::Server,
                                           verify_incoming);
}

const TlsContextSharedPtr& context(int which) {
  static const TlsContextSharedPtr kContexts[3] = {
      makeContext(false, false), makeContext(true, false), makeContext(false, true)};
  return kContexts[which];
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) {
    return 0;
  }
  const uint8_t flags = data[0];
  const size_t chunk = static_cast<size_t>(data[1]) + 1;
  const int which = (flags & 2) != 0 ? 2 : (flags & 1);
  auto engine = TlsEngine::server(context(which));
  check(engine != nullptr);
  std::span<const uint8_t> rest(data + 2, size - 2);
  uint8_t out[4096];
  sidecrypt::filters::Buffer cipher_in;
  sidecrypt::filters::Buffer cipher_out;
  if ((flags & 8) != 0) {
    engine->attachTransport(&cipher_in, &cipher_out);
  }
  while ((flags & 8) != 0 && !rest.empty()) {
    const size_t n = std::min(chunk, rest.size());
    cipher_in.append(rest.first(n));
    rest = rest.subspan(n);
    engine->advance();
    ptrdiff_t got;
    while ((got = engine->clearOut(out)) > 0) {
      check(engine->handshakeDone());
    }
    check(engine->encPending() == 0);  // everything sent went straight to cipher_out
    // Unless the engine stopped (failure, close_notify), it consumed every byte offered.
    check(!cipher_in.empty() ? got < 0 || engine->failed() : true);
    cipher_out.clear();
    if (got < 0) {
      break;
    }
  }
  if ((flags & 8) != 0) {
    engine->attachTransport(nullptr, nullptr);
    rest = {};
  }
  while (!rest.empty()) {
    const size_t took = engine->encIn(rest.first(std::min(chunk, rest.size())));
    rest = rest.subspan(took);
    ptrdiff_t n;
    while ((n = engine->clearOut(out)) > 0) {
      check(engine->handshakeDone());
    }
    while (engine->encOut(out) > 0) {
    }
    if (took == 0 || n < 0) {
      break;
    }
  }
  if ((flags & 4) != 0) {
    engine->encInEof();
    engine->clearOut(out);
  }
  if (engine->failed()) {
    check(!engine->error().empty());
  }
  if (engine->handshakeDone() && which != 0) {
    // Client certificates are required here: a completed handshake means a verified one.
    check(engine->peer().presented_certificate && engine->peer().verified);
  }
  return 0;
}
