// Fuzzes the RPC first-byte state machines (filters/rpc_tls/first_byte.h) with peer-chosen
// bytes under every policy, and traps on any decision that would break a security rule of
// docs/spec/consul-rpc-tls.md §1.2/§1.8.
//
// Input: [policy bits][peer is server][first byte][inner byte][ALPN name...]
#include <cstdint>
#include <string_view>

#include "filters/rpc_tls/first_byte.h"
#include "tests/fuzz/fuzz_support.h"

using namespace sidecrypt::filters::rpc_tls;
using sidecrypt::fuzz::check;

namespace {

void checkDecision(const InboundDecision& d) {
  if (d.action == InboundAction::Close) {
    check(!d.reason.empty());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) {
    return 0;
  }
  InboundPolicy p;
  p.verify_incoming = (data[0] & 1) != 0;
  p.verify_server_hostname = (data[0] & 2) != 0;
  p.has_certificate = (data[0] & 4) != 0;
  p.has_ca = (data[0] & 8) != 0;
  p.agent_serves_tls = (data[0] & 16) != 0;
  const PeerCheck peer{(data[1] & 1) != 0};
  const uint8_t first = data[2];
  const uint8_t inner = data[3];
  const std::string_view alpn(reinterpret_cast<const char*>(data + 4), size - 4);

  const OutboundDecision out = decideOutbound({(data[0] & 32) != 0, (data[0] & 64) != 0}, first);
  // Never wrap an agent's own TLS a second time.
  check(classify(first) == ByteClass::PlainType || out.action == OutboundAction::PassThroughTls);

  InboundDecider decider(p, "server.dc1.consul");
  const InboundDecision d = decider.onFirstByte(first);
  checkDecision(d);
  // verify_incoming: no plaintext type byte ever reaches the agent (docs/spec/consul-rpc-tls.md
  // §1.2 step 5).
  if (p.verify_incoming && d.action == InboundAction::ForwardRaw) {
    check(first == 3 || first == 7);
  }
  const bool raft_gate = p.verify_incoming && p.verify_server_hostname && !peer.verifies_as_server;
  if (d.action == InboundAction::TerminateTls) {
    const InboundDecision i = decider.onInnerByte(inner, peer);
    checkDecision(i);
    if (i.action == InboundAction::ForwardClear) {
      check(inner <= kRpcMaxTypeValue && inner != 3 && inner != 7);  // no TLS-in-TLS
      check(!(raft_gate && (inner == 1 || inner == 9)));
    }
  } else if (d.action == InboundAction::TerminateNativeTls) {
    const InboundDecision a = decider.onAlpn(alpn, peer);
    checkDecision(a);
    if (a.action == InboundAction::InjectAndForward) {
      check(alpnToType(alpn) == a.type);
      check(!(raft_gate && (a.type == 1 || a.type == 9)));
    }
  }
  // Every later call is out of order and must close.
  check(decider.onFirstByte(first).action == InboundAction::Close);
  return 0;
}
