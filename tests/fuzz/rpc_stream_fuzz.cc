// Fuzzes an inbound RpcProcessor through StreamDriver, the loop StreamSession runs: whatever a
// peer sends to :8300 (first byte, TLS records, inner type byte), cut into chunks, with the
// agent's bytes interleaved. It must never crash, never let a byte reach the agent (nor ask for
// the agent) before the connection's type was accepted, never move a phase backwards, and never
// run the filter again once it closed.
//
// Input: [flags][chunk size][bytes...]; flags bit 0 = verify_incoming, bit 1 = the agent serves
// TLS itself, bit 2 = peer FIN at the end, bit 3 = the agent answers (4 bytes) after each chunk.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>

#include "filters/common/buffer.h"
#include "filters/rpc_tls/rpc_processor.h"
#include "filters/rpc_tls/tls_context.h"
#include "filters/stream_driver.h"
#include "tests/fuzz/fuzz_support.h"

using namespace sidecrypt::filters;
using namespace sidecrypt::filters::rpc_tls;
using sidecrypt::fuzz::check;

namespace {

RpcTlsSetupConstPtr setup(uint8_t flags) {
  static const TlsContextSharedPtr kServer =
      sidecrypt::fuzz::dc1ServerContext(TlsRole::Server, true);
  static const TlsContextSharedPtr kNative =
      sidecrypt::fuzz::dc1ServerContext(TlsRole::NativeServer, true);
  auto s = std::make_shared<RpcTlsSetup>();
  s->server = kServer;
  s->native_server = kNative;
  s->inbound = {.verify_incoming = (flags & 1) != 0,
                .verify_server_hostname = true,
                .has_certificate = true,
                .has_ca = true,
                .agent_serves_tls = (flags & 2) != 0};
  s->local_server_name = "server.dc1.consul";
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) {
    return 0;
  }
  const uint8_t flags = data[0];
  const size_t chunk = static_cast<size_t>(data[1]) + 1;
  auto owned = std::make_unique<RpcProcessor>(true, setup(flags), "", nullptr);
  const RpcProcessor& proc = *owned;
  StreamDriver driver(std::move(owned));
  Buffer agent_in, peer_in, to_agent, to_peer;
  bool peer_eof = false;
  std::span<const uint8_t> rest(data + 2, size - 2);
  auto phase = driver.phase();
  static constexpr uint8_t kReply[4] = {'o', 'k', '\r', '\n'};
  while (!driver.draining()) {
    const size_t n = std::min(chunk, rest.size());
    peer_in.append(rest.first(n));
    rest = rest.subspan(n);
    if (rest.empty() && (flags & 4) != 0) {
      peer_eof = true;
    }
    if ((flags & 8) != 0) {
      agent_in.append(kReply);  // an agent that speaks early is held until the type is decided
    }
    driver.run({to_agent, to_peer}, agent_in, false, peer_in, peer_eof);
    check(driver.phase() >= phase);  // phases only move forward
    phase = driver.phase();
    if (!driver.wantsUpstream()) {
      check(to_agent.empty());  // nothing reaches the agent before its type was accepted
      check(!driver.ready());
    }
    check(driver.ready() == (proc.state() == RpcProcessor::State::Raw ||
                             proc.state() == RpcProcessor::State::Open) ||
          driver.draining());
    to_agent.clear();
    to_peer.clear();
    if (rest.empty()) {
      break;
    }
  }
  if (driver.draining()) {
    check(driver.reason() != CloseReason::Done);
  }
  return 0;
}
