#include "filters/rpc_tls/first_byte.h"

#include <catch2/catch.hpp>

#include <set>

using namespace sidecrypt::filters::rpc_tls;

namespace {

// The spec's rules restated independently (docs/spec/consul-rpc-tls.md §1.2, §1.5, §1.8) so that
// every byte under every setting is checked against the text rather than against the code.
InboundAction expectedFirst(const InboundPolicy& p, int b) {
  const bool capable = p.has_certificate && p.has_ca;
  if (b >= 10 && capable) {
    return InboundAction::TerminateNativeTls;
  }
  if (b == 3) {
    if (p.has_certificate) {
      return InboundAction::TerminateTls;
    }
    return p.agent_serves_tls ? InboundAction::ForwardRaw : InboundAction::Close;
  }
  if (b == 7) {
    return p.agent_serves_tls ? InboundAction::ForwardRaw : InboundAction::Close;
  }
  return p.verify_incoming ? InboundAction::Close : InboundAction::ForwardRaw;
}

InboundAction expectedInner(const InboundPolicy& p, int b, bool peer_is_server) {
  if (b == 3 || b == 7 || b >= 10) {
    return InboundAction::Close;
  }
  if ((b == 1 || b == 9) && p.verify_incoming && p.verify_server_hostname && !peer_is_server) {
    return InboundAction::Close;
  }
  return InboundAction::ForwardClear;
}

std::vector<InboundPolicy> everyPolicy() {
  std::vector<InboundPolicy> out;
  for (int bits = 0; bits < 32; ++bits) {
    InboundPolicy p;
    p.verify_incoming = (bits & 1) != 0;
    p.verify_server_hostname = (bits & 2) != 0;
    p.has_certificate = (bits & 4) != 0;
    p.has_ca = (bits & 8) != 0;
    p.agent_serves_tls = (bits & 16) != 0;
    out.push_back(p);
  }
  return out;
}

std::string describe(const InboundPolicy& p) {
  return "vi=" + std::to_string(p.verify_incoming) +
         " vsh=" + std::to_string(p.verify_server_hostname) +
         " cert=" + std::to_string(p.has_certificate) + " ca=" + std::to_string(p.has_ca) +
         " agent_tls=" + std::to_string(p.agent_serves_tls);
}

InboundDecider decider(const InboundPolicy& p) {
  return InboundDecider(p, "server.dc1.consul");
}

InboundPolicy serverPolicy(bool verify_incoming, bool vsh) {
  InboundPolicy p;
  p.verify_incoming = verify_incoming;
  p.verify_server_hostname = vsh;
  p.has_certificate = true;
  p.has_ca = true;
  return p;
}

}  // namespace

TEST_CASE("first_byte: every byte is classified like Consul's dispatch", "[rpc_tls]") {
  CHECK(kRpcMaxTypeValue == 9);
  for (int b = 0; b < 256; ++b) {
    CAPTURE(b);
    const ByteClass c = classify(static_cast<uint8_t>(b));
    if (b == 3) {
      CHECK(c == ByteClass::TlsUpgrade);
    } else if (b == 7) {
      CHECK(c == ByteClass::TlsInsecure);
    } else if (b <= 9) {
      CHECK(c == ByteClass::PlainType);
    } else {
      CHECK(c == ByteClass::TlsRecord);
    }
  }
  CHECK(classify(0x16) == ByteClass::TlsRecord);  // a ClientHello
  CHECK(rpcTypeName(0) == "RPCConsul");
  CHECK(rpcTypeName(4) == "RPCMultiplexV2");
  CHECK(rpcTypeName(9) == "RPCRaftForwarding");
  CHECK(rpcTypeName(10) == "unknown");
  CHECK(static_cast<int>(RpcType::TlsInsecure) == 7);
}

// docs/spec/consul-rpc-tls.md §1.1: each ALPN name stands for one plaintext type byte.
TEST_CASE("first_byte: ALPN names map to Consul's type bytes", "[rpc_tls][alpn]") {
  CHECK(kConsulAlpnProtocols.front() == "consul/rpc-single");
  CHECK(kConsulAlpnProtocols.back() == "consul/wan-gossip/stream");
  CHECK(alpnToType("consul/rpc-single") == uint8_t{0});
  CHECK(alpnToType("consul/raft") == uint8_t{1});
  CHECK(alpnToType("consul/rpc-multi") == uint8_t{4});
  CHECK(alpnToType("consul/rpc-snapshot") == uint8_t{5});
  CHECK(alpnToType("consul/rpc-gossip") == uint8_t{6});
  CHECK(alpnToType("consul/rpc-grpc") == uint8_t{8});
  CHECK(alpnToType("consul/raft-forwarding") == uint8_t{9});
  CHECK_FALSE(alpnToType("consul/wan-gossip/packet"));
  CHECK_FALSE(alpnToType("consul/wan-gossip/stream"));
  CHECK_FALSE(alpnToType("h2"));
  CHECK_FALSE(alpnToType(""));
  CHECK(serverName("dc7", "example") == "server.dc7.example");
}

TEST_CASE("first_byte: outbound decisions for every byte and verify setting", "[rpc_tls]") {
  for (int bits = 0; bits < 4; ++bits) {
    OutboundPolicy p{(bits & 1) != 0, (bits & 2) != 0};
    for (int b = 0; b < 256; ++b) {
      CAPTURE(bits, b);
      const OutboundDecision d = decideOutbound(p, static_cast<uint8_t>(b));
      CHECK(d.type == b);
      if (b == 3 || b == 7 || b > 9) {
        CHECK(d.action == OutboundAction::PassThroughTls);
        CHECK(d.counter == &RpcTlsStats::passthrough_agent_tls);
      } else if (bits == 0) {
        CHECK(d.action == OutboundAction::PassThroughPlain);
        CHECK(d.counter == &RpcTlsStats::passthrough_plaintext);
      } else {  // verify_outgoing, or verify_server_hostname which implies it
        CHECK(d.action == OutboundAction::UpgradeTls);
        CHECK(d.counter == &RpcTlsStats::tls_upgraded);
      }
    }
  }
}

TEST_CASE("first_byte: inbound first-byte decisions for every byte and setting", "[rpc_tls]") {
  for (const InboundPolicy& p : everyPolicy()) {
    for (int b = 0; b < 256; ++b) {
      CAPTURE(describe(p), b);
      InboundDecider d = decider(p);
      const InboundDecision got = d.onFirstByte(static_cast<uint8_t>(b));
      CHECK(got.action == expectedFirst(p, b));
      CHECK_FALSE(got.reason.empty());
      if (got.action == InboundAction::Close) {
        CHECK(got.counter != nullptr);
      }
    }
  }
}

TEST_CASE("first_byte: verify_incoming refuses plaintext with Consul's words, not 0x03/0x07",
          "[rpc_tls]") {
  for (int b : {0, 1, 2, 4, 5, 6, 8, 9}) {
    CAPTURE(b);
    InboundDecider d = decider(serverPolicy(true, false));
    const InboundDecision got = d.onFirstByte(static_cast<uint8_t>(b));
    CHECK(got.action == InboundAction::Close);
    CHECK(got.reason == "Non-TLS connection attempted with VerifyIncoming set");
    CHECK(got.counter == &RpcTlsStats::plaintext_refused);
  }
  InboundDecider upgrade = decider(serverPolicy(true, false));
  CHECK(upgrade.onFirstByte(3).action == InboundAction::TerminateTls);
  // docs/spec/consul-rpc-tls.md §1.5: 0x07 is allowed by Consul even with verify_incoming, but a
  // plaintext agent cannot serve it, so it is closed with its own reason (never the plaintext one).
  InboundDecider insecure = decider(serverPolicy(true, false));
  const InboundDecision seven = insecure.onFirstByte(7);
  CHECK(seven.action == InboundAction::Close);
  CHECK(seven.counter == &RpcTlsStats::insecure_tls_refused);
  CHECK_THAT(seven.reason, Catch::Contains("RPCTLSInsecure"));
}

TEST_CASE("first_byte: a ClientHello without a certificate meets the plaintext rules",
          "[rpc_tls]") {
  InboundPolicy p;  // no certificate: Consul never peeks (docs/spec/consul-rpc-tls.md §1.2 step 3)
  p.verify_incoming = true;
  CHECK(decider(p).onFirstByte(0x16).reason ==
        "Non-TLS connection attempted with VerifyIncoming set");
  p.verify_incoming = false;
  CHECK(decider(p).onFirstByte(0x16).action == InboundAction::ForwardRaw);
  p.has_certificate = true;  // a certificate without a CA is still not mutual-TLS capable
  CHECK(decider(p).onFirstByte(0x16).action == InboundAction::ForwardRaw);
  p.has_ca = true;
  CHECK(decider(p).onFirstByte(0x16).action == InboundAction::TerminateNativeTls);
}

TEST_CASE("first_byte: inner bytes after a TLS upgrade, for every byte and setting", "[rpc_tls]") {
  for (const InboundPolicy& base : everyPolicy()) {
    InboundPolicy p = base;
    p.has_certificate = true;  // otherwise 0x03 is never terminated
    for (bool peer_is_server : {false, true}) {
      for (int b = 0; b < 256; ++b) {
        CAPTURE(describe(p), peer_is_server, b);
        InboundDecider d = decider(p);
        REQUIRE(d.onFirstByte(3).action == InboundAction::TerminateTls);
        const InboundDecision got = d.onInnerByte(static_cast<uint8_t>(b), {peer_is_server});
        CHECK(got.action == expectedInner(p, b, peer_is_server));
        if (got.action == InboundAction::ForwardClear) {
          CHECK(got.type == b);
          CHECK(got.counter == &RpcTlsStats::tls_terminated);
        }
      }
    }
  }
}

TEST_CASE("first_byte: inner refusals say why", "[rpc_tls]") {
  for (int b : {3, 7}) {
    InboundDecider d = decider(serverPolicy(true, true));
    d.onFirstByte(3);
    const InboundDecision got = d.onInnerByte(static_cast<uint8_t>(b), {true});
    CHECK(got.reason == "TLS connection attempting to establish inner TLS connection");
    CHECK(got.counter == &RpcTlsStats::tls_in_tls_refused);
  }
  InboundDecider raft = decider(serverPolicy(true, true));
  raft.onFirstByte(3);
  const InboundDecision r = raft.onInnerByte(1, {false});
  CHECK(r.counter == &RpcTlsStats::raft_identity_refused);
  CHECK_THAT(r.reason, Catch::Contains("RPCRaft refused") && Catch::Contains("server.dc1.consul"));
  InboundDecider junk = decider(serverPolicy(false, false));
  junk.onFirstByte(3);
  CHECK(junk.onInnerByte(0x16, {}).reason == "unrecognized RPC byte: 22");
}

// Native TLS with ALPN (docs/spec/consul-rpc-tls.md §1.4).
TEST_CASE("first_byte: native ALPN decisions", "[rpc_tls][alpn]") {
  for (bool vi : {false, true}) {
    for (bool vsh : {false, true}) {
      for (bool peer_is_server : {false, true}) {
        for (std::string_view name : kConsulAlpnProtocols) {
          CAPTURE(vi, vsh, peer_is_server, name);
          InboundDecider d = decider(serverPolicy(vi, vsh));
          REQUIRE(d.onFirstByte(0x16).action == InboundAction::TerminateNativeTls);
          const InboundDecision got = d.onAlpn(name, {peer_is_server});
          const auto t = alpnToType(name);
          if (!t) {
            CHECK(got.action == InboundAction::Close);
            CHECK(got.counter == &RpcTlsStats::alpn_unsupported);
            CHECK_THAT(got.reason, Catch::Contains("no plaintext equivalent"));
          } else if ((*t == 1 || *t == 9) && vi && vsh && !peer_is_server) {
            CHECK(got.action == InboundAction::Close);
            CHECK(got.counter == &RpcTlsStats::raft_identity_refused);
          } else {
            CHECK(got.action == InboundAction::InjectAndForward);
            CHECK(got.type == *t);
            CHECK(got.counter == &RpcTlsStats::native_tls_terminated);
          }
        }
      }
    }
  }
  InboundDecider none = decider(serverPolicy(false, false));
  none.onFirstByte(0x16);
  const InboundDecision empty = none.onAlpn("", {});
  CHECK(empty.action == InboundAction::Close);
  CHECK(empty.reason == "discarding RPC for unknown negotiated protocol");
}

TEST_CASE("first_byte: calls out of order close the connection", "[rpc_tls]") {
  InboundDecider fresh = decider(serverPolicy(false, false));
  CHECK(fresh.onInnerByte(4, {}).action == InboundAction::Close);
  InboundDecider plain = decider(serverPolicy(false, false));
  REQUIRE(plain.onFirstByte(4).action == InboundAction::ForwardRaw);
  CHECK(plain.onInnerByte(4, {}).action == InboundAction::Close);  // no TLS was started
  CHECK(plain.onFirstByte(4).action == InboundAction::Close);      // only once
  InboundDecider upgraded = decider(serverPolicy(false, false));
  REQUIRE(upgraded.onFirstByte(3).action == InboundAction::TerminateTls);
  CHECK(upgraded.onAlpn("consul/rpc-multi", {}).action == InboundAction::Close);
}

TEST_CASE("first_byte: stats list every counter once, and decisions bump them", "[rpc_tls]") {
  RpcTlsStats stats;
  std::set<std::string> names;
  size_t count = 0;
  stats.forEach([&](const char* name, uint64_t value) {
    names.insert(name);
    ++count;
    CHECK(value == 0);
  });
  CHECK(names.size() == count);
  CHECK(names.count("plaintext_refused") == 1);
  CHECK(names.count("raft_identity_refused") == 1);
  InboundDecider d = decider(serverPolicy(true, false));
  const InboundDecision got = d.onFirstByte(0);
  stats.*got.counter += 1;
  CHECK(stats.plaintext_refused == 1);
}
