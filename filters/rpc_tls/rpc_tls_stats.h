#pragma once

#include <atomic>
#include <cstdint>

namespace sidecrypt::filters::rpc_tls {

// Every counter of the RPC TLS filter, in one list (docs/architecture.md §4): the list doubles as
// the metrics documentation. Exported as rpc_tls.<listener>.<name>.
#define SIDECRYPT_RPC_TLS_STATS(COUNTER)                                                            \
  /* TLS handshakes that completed / failed (either role). */                                       \
  COUNTER(handshakes_ok)                                                                            \
  COUNTER(handshakes_failed)                                                                        \
  /* Completed handshakes by direction: full (certificates sent and verified) or resumed (a         \
   * session ticket or cached session of the same TLS context; docs/configuration.md,               \
   * tls.session_resumption). */                                                                    \
  COUNTER(inbound_handshakes_full)                                                                  \
  COUNTER(inbound_handshakes_resumed)                                                               \
  COUNTER(outbound_handshakes_full)                                                                 \
  COUNTER(outbound_handshakes_resumed)                                                              \
  /* The peer's certificate chain per handshake (docs/architecture.md §4, "Verified chains"):      \
   * taken from the verified-chain cache, with no X.509 path verification (the peer's               \
   * CertificateVerify signature is checked all the same) / verified in full, a cache miss (a       \
   * resumed handshake counts here only when the cache no longer holds its chain). */               \
  COUNTER(chain_cache_hits)                                                                         \
  COUNTER(chain_cache_misses)                                                                       \
  /* Outbound: agent bytes wrapped as 0x03 + TLS + inner type byte (docs/spec/consul-rpc-tls.md     \
   * §1.8 outbound 4). */                                                                          \
  COUNTER(tls_upgraded)                                                                             \
  /* Outbound: the agent already speaks TLS (0x03, 0x07, a TLS record), relayed raw. */             \
  COUNTER(passthrough_agent_tls)                                                                    \
  /* Both directions: plaintext relayed unchanged (verify_outgoing off / verify_incoming off). */   \
  COUNTER(passthrough_plaintext)                                                                    \
  /* Inbound: 0x03 terminated and the inner type byte forwarded to the agent                        \
   * (docs/spec/consul-rpc-tls.md §1.8 inbound 3). */                                              \
  COUNTER(tls_terminated)                                                                           \
  /* Inbound: native ALPN TLS terminated and mapped to a type byte (docs/spec/consul-rpc-tls.md     \
   * §1.4). */                                                                                     \
  COUNTER(native_tls_terminated)                                                                    \
  /* Inbound: plaintext type byte refused because verify_incoming is on                             \
   * (docs/spec/consul-rpc-tls.md §1.2 step 5). */                                                 \
  COUNTER(plaintext_refused)                                                                        \
  /* Inbound: 0x03 or 0x07 inside TLS (no TLS-in-TLS, docs/spec/consul-rpc-tls.md §1.2 step 6). */ \
  COUNTER(tls_in_tls_refused)                                                                       \
  /* Inbound: raft / raft-forwarding without a server.<dc>.<domain> certificate                     \
   * (docs/spec/consul-rpc-tls.md §2.5). */                                                        \
  COUNTER(raft_identity_refused)                                                                    \
  /* Inbound: an ALPN with no plaintext equivalent, or none negotiated                              \
   * (docs/spec/consul-rpc-tls.md §1.4). */                                                        \
  COUNTER(alpn_unsupported)                                                                         \
  /* Inbound: 0x07 closed because the plaintext agent cannot serve it (docs/spec/consul-rpc-tls.md  \
   * §1.5). */                                                                                     \
  COUNTER(insecure_tls_refused)                                                                     \
  /* Inbound: 0x03 or 0x07 relayed raw to an agent that terminates TLS itself. */                   \
  COUNTER(insecure_tls_passthrough)                                                                 \
  /* Inbound: 0x03 while sidecrypt has no certificate to answer with. */                            \
  COUNTER(no_certificate_refused)                                                                   \
  /* Inbound: a type byte Consul does not know, inside TLS ("unrecognized RPC byte"). */            \
  COUNTER(unrecognized_byte_refused)                                                                \
  /* Half-close: close_notify sent after the agent's FIN / received and mapped to a FIN. */         \
  COUNTER(close_notify_sent)                                                                        \
  COUNTER(close_notify_received)                                                                    \
  /* The TLS peer closed its transport without close_notify (docs/spec/rpc-peers.md §2.3). */      \
  COUNTER(truncated_by_peer)

// One instance per loop (docs/architecture.md, "Worker loops"): each counter is bumped by the
// thread of the loop its connections run on (relaxed atomic adds, one per connection event such
// as a handshake or a decision, never per record) and read by loop 0 for the stats line,
// /status and /metrics. A copy is a snapshot; `add` sums the loops into it.
struct RpcTlsStats {
  using Counter = std::atomic<uint64_t>;
#define SIDECRYPT_RPC_TLS_DECLARE(name) Counter name = 0;
  SIDECRYPT_RPC_TLS_STATS(SIDECRYPT_RPC_TLS_DECLARE)
#undef SIDECRYPT_RPC_TLS_DECLARE

  RpcTlsStats() = default;
  RpcTlsStats(const RpcTlsStats& o) {
    add(o);
  }
  RpcTlsStats& operator=(const RpcTlsStats& o) {
    if (this != &o) {
#define SIDECRYPT_RPC_TLS_COPY(name) store(name, read(o.name));
      SIDECRYPT_RPC_TLS_STATS(SIDECRYPT_RPC_TLS_COPY)
#undef SIDECRYPT_RPC_TLS_COPY
    }
    return *this;
  }
  ~RpcTlsStats() = default;
  // Adds every counter of `o` to this one.
  void add(const RpcTlsStats& o) {
#define SIDECRYPT_RPC_TLS_ADD(name) store(name, read(name) + read(o.name));
    SIDECRYPT_RPC_TLS_STATS(SIDECRYPT_RPC_TLS_ADD)
#undef SIDECRYPT_RPC_TLS_ADD
  }

  // Calls fn(name, value) for every counter, in list order.
  template <typename Fn>
  void forEach(Fn&& fn) const {
#define SIDECRYPT_RPC_TLS_VISIT(name) fn(#name, read(name));
    SIDECRYPT_RPC_TLS_STATS(SIDECRYPT_RPC_TLS_VISIT)
#undef SIDECRYPT_RPC_TLS_VISIT
  }

  static uint64_t read(const Counter& c) {
    return c.load(std::memory_order_relaxed);
  }
  static void store(Counter& c, uint64_t v) {
    c.store(v, std::memory_order_relaxed);
  }
};

// Names a counter without naming the struct instance (decisions carry one, the caller bumps it).
using RpcTlsCounter = std::atomic<uint64_t> RpcTlsStats::*;

}  // namespace sidecrypt::filters::rpc_tls
