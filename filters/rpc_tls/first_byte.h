#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "filters/rpc_tls/rpc_tls_stats.h"

namespace sidecrypt::filters::rpc_tls {

// Consul's RPC type bytes (docs/spec/consul-rpc-tls.md §1.1, consul agent/pool/conn.go).
enum class RpcType : uint8_t {
  Consul = 0,
  Raft = 1,
  Multiplex = 2,  // legacy muxado, refused by current servers
  Tls = 3,
  MultiplexV2 = 4,
  Snapshot = 5,
  Gossip = 6,
  TlsInsecure = 7,
  Grpc = 8,
  RaftForwarding = 9,
};

// docs/spec/consul-rpc-tls.md §1.1: every byte <= this is a type byte; anything above starts a TLS
// record (RFC 7983 keeps TLS content types >= 20, so the spaces never collide). A build constant,
// as in Consul.
inline constexpr uint8_t kRpcMaxTypeValue = 9;

enum class ByteClass : uint8_t {
  PlainType,    // 0..9 except 3 and 7: a plaintext protocol follows
  TlsUpgrade,   // 0x03: TLS handshake, then the real type byte inside TLS
  TlsInsecure,  // 0x07: TLS without client certificates, no inner byte
  TlsRecord,    // > kRpcMaxTypeValue: the first byte of a TLS record (native ALPN mode)
};

ByteClass classify(uint8_t b);
// "RPCConsul", "RPCRaft", ... for 0..9; "unknown" otherwise. For logs.
std::string_view rpcTypeName(uint8_t b);

// docs/spec/consul-rpc-tls.md §1.1 ALPN names, in the order a Consul server offers them.
inline constexpr std::array<std::string_view, 9> kConsulAlpnProtocols = {
    "consul/rpc-single",        "consul/raft",
    "consul/rpc-multi",         "consul/rpc-snapshot",
    "consul/rpc-gossip",        "consul/rpc-grpc",
    "consul/raft-forwarding",   "consul/wan-gossip/packet",
    "consul/wan-gossip/stream",
};
// The plaintext type byte an ALPN stands for; nullopt for the WAN gossip names (no equivalent
// on the RPC port) and for unknown names.
std::optional<uint8_t> alpnToType(std::string_view alpn);

// server.<dc>.<domain>: the name Consul servers carry and verify_server_hostname checks
// (docs/spec/consul-rpc-tls.md §2.3).
std::string serverName(std::string_view datacenter, std::string_view domain);

// ---- Outbound: the agent dialled a remote :8300 (docs/spec/consul-rpc-tls.md §1.8 outbound) ----

struct OutboundPolicy {
  bool verify_outgoing = false;
  // docs/spec/consul-rpc-tls.md §2.1: verify_server_hostname implies verify_outgoing
  // (CVE-2018-19653).
  bool verify_server_hostname = false;
};

enum class OutboundAction : uint8_t {
  PassThroughTls,    // the agent does TLS itself: relay raw, first byte included
  PassThroughPlain,  // verify_outgoing off: relay raw, first byte included
  UpgradeTls,        // write 0x03, TLS client handshake, then `type` inside TLS, then relay
};

struct OutboundDecision {
  OutboundAction action = OutboundAction::PassThroughPlain;
  uint8_t type = 0;  // the agent's first byte
  RpcTlsCounter counter = nullptr;
  std::string_view reason;  // for debug logs
};

// Decide from the agent's first byte, read before dialling (docs/spec/consul-rpc-tls.md §1.8
// outbound 1: the remote's 5 s handshake deadline must not be spent waiting for the agent).
OutboundDecision decideOutbound(const OutboundPolicy& policy, uint8_t first);

// ---- Inbound: a peer dialled the server's :8300 (docs/spec/consul-rpc-tls.md §1.2, §1.8 inbound)

struct InboundPolicy {
  bool verify_incoming = false;
  bool verify_server_hostname = false;
  bool has_certificate = false;  // sidecrypt holds cert_file + key_file
  bool has_ca = false;  // with has_certificate: "mutual-TLS capable" (docs/spec/consul-rpc-tls.md
                        // §1.2 step 3)
  // The agent has its own certificate and terminates TLS itself; only then can 0x07 (and 0x03
  // while sidecrypt has no certificate) be relayed raw instead of closed
  // (docs/spec/consul-rpc-tls.md §1.5).
  bool agent_serves_tls = false;
};

// What the peer's certificate proved, as far as the decisions below need it.
struct PeerCheck {
  // The certificate verifies against the configured CA pool as server.<local-dc>.<domain> with
  // EKU clientAuth (Consul's AuthorizeServerConn, docs/spec/consul-rpc-tls.md §2.5).
  bool verifies_as_server = false;
};

enum class InboundAction : uint8_t {
  ForwardRaw,          // relay raw to the agent, this byte included (plaintext or agent TLS)
  TerminateTls,        // consume 0x03; TLS server handshake; then call onInnerByte()
  TerminateNativeTls,  // do not consume; TLS server with ALPN; then call onAlpn()
  ForwardClear,        // inside TLS: relay decrypted bytes, this type byte included
  InjectAndForward,    // native TLS: write `type` to the agent, then relay decrypted bytes
  Close,               // refuse; `reason` says why (Consul's wording where it has one)
};

struct InboundDecision {
  InboundAction action = InboundAction::Close;
  uint8_t type = 0;  // the type byte the agent will see (ForwardClear, InjectAndForward)
  RpcTlsCounter counter = nullptr;
  std::string reason;
};

// The inbound state machine of one connection: onFirstByte(), then, depending on the action,
// onInnerByte() (after a 0x03 handshake) or onAlpn() (after a native handshake). A call out of
// order returns Close. Pure: no I/O, no clock; the caller owns deadlines and the TLS engine.
class InboundDecider {
 public:
  InboundDecider(InboundPolicy policy, std::string local_server_name);

  InboundDecision onFirstByte(uint8_t b);
  InboundDecision onInnerByte(uint8_t b, const PeerCheck& peer);
  InboundDecision onAlpn(std::string_view alpn, const PeerCheck& peer);

 private:
  enum class Stage : uint8_t { First, Inner, Alpn, Done };
  InboundDecision raftGate(uint8_t type, const PeerCheck& peer, InboundDecision ok) const;
  static InboundDecision outOfOrder();

  InboundPolicy policy_;
  std::string local_server_name_;  // server.<dc>.<domain>, for messages
  Stage stage_ = Stage::First;
};

}  // namespace sidecrypt::filters::rpc_tls
