#include "filters/rpc_tls/first_byte.h"

#include <utility>

namespace sidecrypt::filters::rpc_tls {

namespace {

constexpr std::array<std::string_view, kRpcMaxTypeValue + 1> kTypeNames = {
    "RPCConsul",   "RPCRaft",   "RPCMultiplex",   "RPCTLS",  "RPCMultiplexV2",
    "RPCSnapshot", "RPCGossip", "RPCTLSInsecure", "RPCGRPC", "RPCRaftForwarding",
};

// The plaintext type each entry of kConsulAlpnProtocols stands for; -1: none
// (docs/spec/consul-rpc-tls.md §1.1 table).
constexpr std::array<int, kConsulAlpnProtocols.size()> kAlpnTypes = {0, 1, 4, 5, 6, 8, 9, -1, -1};

constexpr uint8_t type(RpcType t) {
  return static_cast<uint8_t>(t);
}

bool isRaft(uint8_t t) {
  return t == type(RpcType::Raft) || t == type(RpcType::RaftForwarding);
}

InboundDecision close(RpcTlsCounter counter, std::string reason) {
  InboundDecision d;
  d.action = InboundAction::Close;
  d.counter = counter;
  d.reason = std::move(reason);
  return d;
}

InboundDecision act(InboundAction action, uint8_t t, RpcTlsCounter counter, std::string reason) {
  InboundDecision d;
  d.action = action;
  d.type = t;
  d.counter = counter;
  d.reason = std::move(reason);
  return d;
}

}  // namespace

ByteClass classify(uint8_t b) {
  if (b > kRpcMaxTypeValue) {
    return ByteClass::TlsRecord;
  }
  if (b == type(RpcType::Tls)) {
    return ByteClass::TlsUpgrade;
  }
  if (b == type(RpcType::TlsInsecure)) {
    return ByteClass::TlsInsecure;
  }
  return ByteClass::PlainType;
}

std::string_view rpcTypeName(uint8_t b) {
  return b <= kRpcMaxTypeValue ? kTypeNames[b] : std::string_view("unknown");
}

std::optional<uint8_t> alpnToType(std::string_view alpn) {
  for (size_t i = 0; i < kConsulAlpnProtocols.size(); ++i) {
    if (kConsulAlpnProtocols[i] == alpn && kAlpnTypes[i] >= 0) {
      return static_cast<uint8_t>(kAlpnTypes[i]);
    }
  }
  return std::nullopt;
}

std::string serverName(std::string_view datacenter, std::string_view domain) {
  std::string out = "server.";
  out.append(datacenter).append(".").append(domain);
  return out;
}

OutboundDecision decideOutbound(const OutboundPolicy& policy, uint8_t first) {
  OutboundDecision d;
  d.type = first;
  // docs/spec/consul-rpc-tls.md §1.8 outbound 2: an agent with its own TLS settings already wrapped
  // the stream; wrapping it again would be TLS-in-TLS, which every Consul server refuses.
  if (classify(first) != ByteClass::PlainType) {
    d.action = OutboundAction::PassThroughTls;
    d.counter = &RpcTlsStats::passthrough_agent_tls;
    d.reason = "agent speaks TLS itself";
    return d;
  }
  // docs/spec/consul-rpc-tls.md §2.1: verify_server_hostname implies verify_outgoing since
  // Consul 1.4.1.
  if (!policy.verify_outgoing && !policy.verify_server_hostname) {
    d.action = OutboundAction::PassThroughPlain;
    d.counter = &RpcTlsStats::passthrough_plaintext;
    d.reason = "verify_outgoing is off";
    return d;
  }
  d.action = OutboundAction::UpgradeTls;
  d.counter = &RpcTlsStats::tls_upgraded;
  d.reason = "upgrading to TLS";
  return d;
}

InboundDecider::InboundDecider(InboundPolicy policy, std::string local_server_name)
    : policy_(policy), local_server_name_(std::move(local_server_name)) {}

InboundDecision InboundDecider::outOfOrder() {
  return close(nullptr, "rpc_tls: decision requested out of order");
}

InboundDecision InboundDecider::onFirstByte(uint8_t b) {
  if (stage_ != Stage::First) {
    return outOfOrder();
  }
  stage_ = Stage::Done;
  const ByteClass cls = classify(b);
  // docs/spec/consul-rpc-tls.md §1.2 step 3: only a mutual-TLS-capable server peeks for a native
  // ClientHello; without a certificate the byte falls through to the verify_incoming gate and the
  // default branch.
  if (cls == ByteClass::TlsRecord && policy_.has_certificate && policy_.has_ca) {
    stage_ = Stage::Alpn;
    return act(InboundAction::TerminateNativeTls, b, nullptr, "native TLS (ALPN)");
  }
  if (cls == ByteClass::TlsUpgrade) {
    if (policy_.has_certificate) {
      stage_ = Stage::Inner;
      return act(InboundAction::TerminateTls, b, nullptr, "TLS upgrade");
    }
    if (policy_.agent_serves_tls) {
      return act(InboundAction::ForwardRaw, b, &RpcTlsStats::insecure_tls_passthrough,
                 "no certificate here; the agent answers the TLS upgrade");
    }
    return close(&RpcTlsStats::no_certificate_refused,
                 "TLS upgrade refused: no certificate configured (cert_file/key_file)");
  }
  if (cls == ByteClass::TlsInsecure) {
    // docs/spec/consul-rpc-tls.md §1.5: the insecure RPC server (AutoEncrypt.Sign,
    // AutoConfig.InitialConfiguration) exists only inside a TLS-configured agent; there is no
    // plaintext byte that reaches it.
    if (policy_.agent_serves_tls) {
      return act(InboundAction::ForwardRaw, b, &RpcTlsStats::insecure_tls_passthrough,
                 "RPCTLSInsecure relayed to the agent's own TLS");
    }
    return close(&RpcTlsStats::insecure_tls_refused,
                 "RPCTLSInsecure (auto_encrypt/auto_config bootstrap) refused: the plaintext "
                 "agent cannot serve it");
  }
  // docs/spec/consul-rpc-tls.md §1.2 step 5, with Consul's log wording (checked after the native
  // peek, before dispatch).
  if (policy_.verify_incoming) {
    return close(&RpcTlsStats::plaintext_refused,
                 "Non-TLS connection attempted with VerifyIncoming set");
  }
  // docs/spec/consul-rpc-tls.md §1.8 inbound 5: rollout stage "accept both"; the agent judges the
  // byte itself.
  return act(InboundAction::ForwardRaw, b, &RpcTlsStats::passthrough_plaintext,
             "plaintext accepted (verify_incoming is off)");
}

InboundDecision InboundDecider::raftGate(uint8_t t, const PeerCheck& peer,
                                         InboundDecision ok) const {
  // docs/spec/consul-rpc-tls.md §2.5 AuthorizeServerConn: only when both verify_incoming and
  // verify_server_hostname are on.
  if (isRaft(t) && policy_.verify_incoming && policy_.verify_server_hostname &&
      !peer.verifies_as_server) {
    return close(&RpcTlsStats::raft_identity_refused,
                 std::string(rpcTypeName(t)) + " refused: peer certificate is not valid for " +
                     local_server_name_ + " (verify_incoming and verify_server_hostname are on)");
  }
  return ok;
}

InboundDecision InboundDecider::onInnerByte(uint8_t b, const PeerCheck& peer) {
  if (stage_ != Stage::Inner) {
    return outOfOrder();
  }
  stage_ = Stage::Done;
  const ByteClass cls = classify(b);
  if (cls == ByteClass::TlsUpgrade || cls == ByteClass::TlsInsecure) {
    return close(&RpcTlsStats::tls_in_tls_refused,
                 "TLS connection attempting to establish inner TLS connection");
  }
  // Consul does not peek inside TLS, so a record-like byte reaches its default branch. A
  // plaintext agent with a certificate would instead peek it as native TLS: close here.
  if (cls == ByteClass::TlsRecord) {
    return close(&RpcTlsStats::unrecognized_byte_refused,
                 "unrecognized RPC byte: " + std::to_string(b));
  }
  return raftGate(b, peer,
                  act(InboundAction::ForwardClear, b, &RpcTlsStats::tls_terminated,
                      std::string("TLS terminated, inner ") + std::string(rpcTypeName(b))));
}

InboundDecision InboundDecider::onAlpn(std::string_view alpn, const PeerCheck& peer) {
  if (stage_ != Stage::Alpn) {
    return outOfOrder();
  }
  stage_ = Stage::Done;
  if (alpn.empty()) {
    return close(&RpcTlsStats::alpn_unsupported, "discarding RPC for unknown negotiated protocol");
  }
  const auto t = alpnToType(alpn);
  if (!t) {
    // docs/spec/consul-rpc-tls.md §1.8 inbound 2: WAN gossip would have to be re-encoded as
    // memberlist traffic for the agent's WAN port; nothing on the RPC port understands it.
    return close(&RpcTlsStats::alpn_unsupported,
                 "ALPN " + std::string(alpn) +
                     " has no plaintext equivalent on the RPC port (not supported)");
  }
  return raftGate(*t, peer,
                  act(InboundAction::InjectAndForward, *t, &RpcTlsStats::native_tls_terminated,
                      "native TLS terminated, ALPN " + std::string(alpn)));
}

}  // namespace sidecrypt::filters::rpc_tls
