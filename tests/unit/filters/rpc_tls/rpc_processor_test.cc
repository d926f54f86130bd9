// RpcProcessor without sockets: an outbound processor (client agent's sidecrypt) and an inbound
// one (the server's sidecrypt) back to back, driven the way StreamSession drives them, with the
// wire between them cut into odd pieces. Covers the zero-copy transport (the TLS engine reading
// and writing the session's buffers directly): order, the 0x03 before the ClientHello, the type
// byte, large transfers both ways, half-close, and bytes after close_notify.
#include <catch2/catch.hpp>

#include <memory>
#include <string>

#include "filters/rpc_tls/first_byte.h"
#include "filters/rpc_tls/rpc_processor.h"
#include "filters/stream_driver.h"
#include "tests/unit/filters/rpc_tls/tls_test_util.h"

using namespace sidecrypt;
using namespace sidecrypt::rpc_tls_test;
using filters::Buffer;
using filters::rpc_tls::RpcProcessor;
using filters::rpc_tls::RpcTlsSetup;

namespace {

std::shared_ptr<const RpcTlsSetup> outboundSetup() {
  auto s = std::make_shared<RpcTlsSetup>();
  s->client = mustCreate(clientSettings(), TlsRole::Client);
  s->outbound = {true, true};
  s->local_server_name = "server.dc1.consul";
  return s;
}

std::shared_ptr<const RpcTlsSetup> inboundSetup() {
  auto s = std::make_shared<RpcTlsSetup>();
  s->server = mustCreate(serverSettings(), TlsRole::Server);
  s->inbound = {.verify_incoming = true,
                .verify_server_hostname = true,
                .has_certificate = true,
                .has_ca = true};
  s->local_server_name = "server.dc1.consul";
  return s;
}

void append(Buffer& b, const std::string& s) {
  b.append({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
}

std::string take(Buffer& b) {
  const auto r = b.readable();
  std::string s(reinterpret_cast<const char*>(r.data()), r.size());
  b.clear();
  return s;
}

// One proxied connection as a StreamSession runs it (the same StreamDriver): the agent's and the
// peer's input buffers and end-of-stream flags, and the two output buffers.
struct Session {
  explicit Session(std::unique_ptr<RpcProcessor> p) : proc(p.get()), driver(std::move(p)) {}
  RpcProcessor* proc;  // owned by the driver
  filters::StreamDriver driver;
  Buffer agent_in, peer_in, to_agent, to_peer;
  bool agent_eof = false, peer_eof = false;
  bool ok = true;

  void run() {
    driver.run({to_agent, to_peer}, agent_in, agent_eof, peer_in, peer_eof);
    ok = !driver.draining();
  }
};

// client agent -> O (outbound) -> wire -> I (inbound) -> server agent, and back.
struct Link {
  Session o{std::make_unique<RpcProcessor>(false, outboundSetup(), "", nullptr)};
  Session i{std::make_unique<RpcProcessor>(true, inboundSetup(), "", nullptr)};
  std::string wire_o_to_i;  // everything O ever sent, for checks on the wire format
  std::string client_got, server_got;
  bool client_eof = false, server_eof = false;
  size_t step = 1;

  // Moves up to a varying number of bytes from `from` to `to` (a TCP stream cut anywhere).
  size_t carry(Buffer& from, Buffer& to, std::string* record = nullptr) {
    const size_t n = std::min(from.size(), step);
    step = step * 7 % 70001 + 1;
    if (n == 0) {
      return 0;
    }
    const auto bytes = from.peek(n);
    if (record != nullptr) {
      record->append(reinterpret_cast<const char*>(bytes.data()), n);
    }
    to.append(bytes);
    from.drain(n);
    return n;
  }

  void pump() {
    for (int round = 0; round < 200000; ++round) {
      o.run();
      i.run();
      size_t moved = carry(o.to_peer, i.peer_in, &wire_o_to_i) + carry(i.to_peer, o.peer_in);
      // A side's FIN goes out once its queue drained and the processor said so.
      if (o.to_peer.empty() && o.driver.endToPeer() && !i.peer_eof) {
        i.peer_eof = true;
        ++moved;
      }
      if (i.to_peer.empty() && i.driver.endToPeer() && !o.peer_eof) {
        o.peer_eof = true;
        ++moved;
      }
      moved += o.to_agent.size() + i.to_agent.size();
      client_got += take(o.to_agent);
      server_got += take(i.to_agent);
      client_eof = client_eof || o.driver.endToAgent();
      server_eof = server_eof || i.driver.endToAgent();
      if (moved == 0 && o.agent_in.empty() && i.agent_in.empty() && o.peer_in.empty() &&
          i.peer_in.empty()) {
        return;
      }
    }
    FAIL("the link did not settle");
  }
};

}  // namespace

TEST_CASE(
    "rpc_processor: 0x03 + TLS + type byte, 3 MiB each way and half-close, pieces of any size",
    "[rpc_tls][datapath]") {
  Link l;
  const std::string request = "\x04" + pattern(size_t{3} << 20, 11);
  const std::string reply = pattern((size_t{3} << 20) + 12345, 29);
  append(l.o.agent_in, request);
  l.o.agent_eof = true;  // the snapshot shape: request, FIN, then the reply
  l.pump();
  REQUIRE(l.o.ok);
  REQUIRE(l.i.ok);
  CHECK(l.o.proc->tls());
  CHECK(l.i.proc->tls());
  CHECK(l.i.proc->typeByte() == 0x04);
  CHECK(l.wire_o_to_i.substr(0, 2) == "\x03\x16");  // plaintext 0x03, then a TLS handshake record
  CHECK(l.wire_o_to_i.find(request.substr(1, 64)) == std::string::npos);  // no plaintext on it
  CHECK(l.server_got.size() == request.size());
  CHECK(l.server_got == request);
  CHECK(l.server_eof);  // close_notify -> FIN to the server agent
  CHECK_FALSE(l.client_eof);
  append(l.i.agent_in, reply);
  l.i.agent_eof = true;
  l.pump();
  REQUIRE(l.o.ok);
  REQUIRE(l.i.ok);
  CHECK(l.client_got.size() == reply.size());
  CHECK(l.client_got == reply);
  CHECK(l.client_eof);
  CHECK(l.o.proc->engine()->fullyClosed());
  CHECK(l.i.proc->engine()->fullyClosed());
}

TEST_CASE("rpc_processor: records after close_notify are dropped, not buffered",
          "[rpc_tls][datapath]") {
  Link l;
  append(l.o.agent_in, "\x04hello");
  l.o.agent_eof = true;
  l.pump();
  REQUIRE(l.server_eof);
  REQUIRE(l.server_got == "\x04hello");
  // A peer that goes on sending after its close_notify: nothing of it is kept or decrypted.
  append(l.i.peer_in, std::string(100000, '\x17'));
  l.i.run();
  CHECK(l.i.ok);
  CHECK(l.i.peer_in.empty());
  CHECK(l.i.to_agent.empty());
}

TEST_CASE("rpc_processor: a handshake failure closes with the reason and leaves the rest unread",
          "[rpc_tls][datapath]") {
  Link l;
  append(l.o.agent_in, "\x04");
  l.o.run();
  REQUIRE(l.o.ok);
  REQUIRE(l.o.to_peer.size() > 1);
  // The server side gets the 0x03 and then garbage instead of the ClientHello.
  append(l.i.peer_in, "\x03" + std::string(5000, 'G'));
  l.i.run();
  CHECK_FALSE(l.i.ok);
  CHECK(l.i.proc->closeReason().find("TLS") != std::string::npos);
  CHECK(l.i.to_agent.empty());  // nothing reached the agent
}

TEST_CASE(
    "rpc_processor: named states through a TLS connection; while the inbound side handshakes "
    "nothing reaches the agent",
    "[rpc_tls][datapath]") {
  Link l;
  using Phase = filters::StreamDriver::Phase;
  using State = RpcProcessor::State;
  CHECK(l.o.driver.phase() == Phase::Waiting);  // the outbound side dials once the agent spoke
  CHECK(l.i.driver.phase() == Phase::Waiting);
  append(l.o.agent_in, "\x04");
  l.o.run();
  CHECK(l.o.proc->state() == State::Handshaking);
  CHECK(l.o.driver.phase() == Phase::Dialling);
  // The 0x03 and the ClientHello reach the inbound side: it handshakes without its agent.
  l.i.peer_in.move(l.o.to_peer);
  l.i.run();
  CHECK(l.i.proc->state() == State::Handshaking);
  CHECK(l.i.driver.phase() == Phase::Waiting);
  CHECK_FALSE(l.i.driver.wantsUpstream());
  CHECK(l.i.to_agent.empty());
  l.pump();
  CHECK(l.o.proc->state() == State::Open);
  CHECK(l.i.proc->state() == State::Open);
  CHECK(l.o.driver.phase() == Phase::Open);
  CHECK(l.i.driver.phase() == Phase::Open);
  CHECK(l.server_got == "\x04");
}

TEST_CASE("rpc_processor: a refused type byte drains with a typed reason and never dials the agent",
          "[rpc_tls][datapath]") {
  Link l;
  append(l.i.peer_in, "\x04");  // plaintext RPC while verify_incoming is on
  l.i.run();
  CHECK(l.i.proc->state() == RpcProcessor::State::Deciding);
  CHECK(l.i.driver.phase() == filters::StreamDriver::Phase::Draining);
  CHECK(l.i.driver.reason() == filters::CloseReason::Refused);
  CHECK_FALSE(l.i.driver.wantsUpstream());
  CHECK(l.i.to_agent.empty());
}
