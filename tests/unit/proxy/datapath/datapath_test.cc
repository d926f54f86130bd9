// Datapath on a real libuv loop, no root: explicit [[listener]]s need no interception (no rules,
// no TPROXY, no marks), so the whole accept -> session -> upstream path runs on loopback. The
// RPC rollout stage here is plaintext (verify_outgoing and verify_incoming off), so the bytes
// must cross unchanged, first byte included. Every test ends with stop(), the Datapath destroyed
// and the loop-close and descriptor-count leak check.
#include "proxy/datapath/datapath.h"

#include <spdlog/spdlog.h>
#include <catch2/catch.hpp>

#include <memory>
#include <optional>
#include <string>

#include "proxy/admin/status_render.h"
#include "tests/unit/filters/gossip/gossip_test_util.h"
#include "tests/unit/proxy/datapath/datapath_rig.h"
#include "tests/unit/proxy/datapath/loop_test_util.h"

using namespace sidecrypt;
using namespace sidecrypt::test::loop;
using proxy::Datapath;
using proxy::ListenerConfig;
using proxy::ListenerDirection;
using proxy::RuntimeState;
using proxy::SocketAddress;

namespace {

struct DatapathRig {
  QuietLog quiet;
  TestLoop loop;
  Fd upstream_l = listenTcp();  // the RPC server (outbound) or our agent (inbound)
  std::optional<Datapath> dp;
  SocketAddress listen;

  explicit DatapathRig(ListenerDirection direction, bool upstream_listening = true) {
    SocketAddress up = boundAddress(upstream_l.get());
    if (!upstream_listening) {
      upstream_l.reset();  // the port is free now: connecting to it is refused
    }
    dp.emplace(loop.get(), plaintextRpcState(direction, up));
    std::string err;
    const bool started = dp->start(err);
    INFO(err);
    REQUIRE(started);
    const auto addrs = dp->listenerAddresses();
    REQUIRE(addrs.size() == 1);
    listen = addrs[0];
    REQUIRE(listen.valid());
    REQUIRE(listen.port() != 0);
  }

  // stop(), wait for every session to be gone, destroy, then the leak check.
  void finish() {
    dp->stop();
    REQUIRE(loop.runUntil([&] { return dp->activeSessions() == 0; }, 2000));
    dp.reset();
    upstream_l.reset();
    loop.finish();
  }
};

}  // namespace

TEST_CASE("an explicit RPC listener relays a plaintext connection both ways and ends it cleanly",
          "[datapath][loop]") {
  const bool outbound = GENERATE(true, false);
  CAPTURE(outbound);
  DatapathRig rig(outbound ? ListenerDirection::Outbound : ListenerDirection::Inbound);
  Fd client = connectTcp(rig.listen);  // the agent (outbound) or a peer (inbound)
  Fd server;
  // An RPC connection: the type byte (0x01, RPCConsul) then the request; then the answer.
  const std::string request = std::string(1, '\x01') + pattern(200 << 10, 7);
  const std::string answer = pattern(300 << 10, 8);
  size_t at = 0;
  std::string got;
  REQUIRE(rig.loop.runUntil(
      [&] {
        at = sendSome(client.get(), request, at);
        if (!server.valid()) {
          server = tryAccept(rig.upstream_l.get());
        }
        if (server.valid()) {
          recvSome(server.get(), got);
        }
        return got.size() >= request.size();
      },
      2000));
  CHECK(got == request);
  std::string back;
  at = 0;
  REQUIRE(rig.loop.runUntil(
      [&] {
        at = sendSome(server.get(), answer, at);
        recvSome(client.get(), back);
        return back.size() >= answer.size();
      },
      2000));
  CHECK(back == answer);
  CHECK(rig.dp->activeSessions() == 1);

  // Each side ends its half; the other sees the end, and the session is counted as a clean close.
  REQUIRE(::shutdown(client.get(), SHUT_WR) == 0);
  REQUIRE(rig.loop.runUntil([&] { return recvSome(server.get(), got) == ReadState::Eof; }, 2000));
  REQUIRE(::shutdown(server.get(), SHUT_WR) == 0);
  REQUIRE(rig.loop.runUntil(
      [&] {
        return recvSome(client.get(), back) == ReadState::Eof && rig.dp->activeSessions() == 0;
      },
      2000));
  CHECK(got == request);
  CHECK(back == answer);
  const auto& c = rig.dp->tcpCounters();
  CHECK(c.accepted == 1);
  CHECK(c.active == 0);
  CHECK(c.closed_ok == 1);
  CHECK(c.closed_error == 0);
  CHECK(c.closedBy(filters::CloseReason::Done) == 1);
  CHECK(c.upstream_failed == 0);
  client.reset();
  server.reset();
  rig.finish();
}

TEST_CASE("an explicit RPC listener whose upstream refuses closes the client's connection",
          "[datapath][loop]") {
  DatapathRig rig(ListenerDirection::Outbound, false);
  Fd client = connectTcp(rig.listen);
  const std::string request = std::string(1, '\x01') + "ping";
  REQUIRE(sendSome(client.get(), request, 0) == request.size());
  std::string got;
  REQUIRE(rig.loop.runUntil(
      [&] {
        return recvSome(client.get(), got) != ReadState::Open && rig.dp->activeSessions() == 0;
      },
      2000));
  CHECK(got.empty());
  const auto& c = rig.dp->tcpCounters();
  CHECK(c.accepted == 1);
  CHECK(c.active == 0);
  CHECK(c.closed_error == 1);
  client.reset();
  rig.finish();
}

TEST_CASE("every close reason has its own session counter, in the log line, /status and /metrics",
          "[datapath][loop]") {
  DatapathRig rig(ListenerDirection::Outbound, false);  // the upstream refuses: connect_failed
  Fd client = connectTcp(rig.listen);
  const std::string request = std::string(1, '\x01') + "ping";
  REQUIRE(sendSome(client.get(), request, 0) == request.size());
  std::string got;
  REQUIRE(rig.loop.runUntil(
      [&] {
        return recvSome(client.get(), got) != ReadState::Open && rig.dp->activeSessions() == 0;
      },
      2000));
  const auto& c = rig.dp->tcpCounters();
  uint64_t sum = 0;
  c.forEachClosed([&sum](const char*, uint64_t v) { sum += v; });
  CHECK(sum == c.closed_ok + c.closed_error);
  CHECK(c.closedBy(filters::CloseReason::ConnectFailed) == 1);
  CHECK(rig.dp->statsText().find("; tcp closed connect_failed=1") != std::string::npos);

  const RuntimeState state = plaintextRpcState(ListenerDirection::Outbound, rig.listen);
  proxy::StatusInput in(state);
  in.datapath = &*rig.dp;
  const auto status = proxy::statusJson(in);
  REQUIRE(status.contains("tcp_closed"));
  CHECK(status["tcp_closed"].size() == filters::kCloseReasonCount);
  CHECK(status["tcp_closed"]["connect_failed"] == 1);
  const std::string metrics = proxy::metricsText(in);
  for (filters::CloseReason r : filters::kCloseReasons) {
    const std::string sample = std::string("sidecrypt_tcp_sessions_closed_total{reason=\"") +
                               filters::describe(r) + "\"} " +
                               (r == filters::CloseReason::ConnectFailed ? "1" : "0") + "\n";
    CAPTURE(sample);
    CHECK(metrics.find(sample) != std::string::npos);
  }
  client.reset();
  rig.finish();
}

TEST_CASE("stopping the Datapath closes its live sessions and leaks nothing", "[datapath][loop]") {
  DatapathRig rig(ListenerDirection::Outbound);
  constexpr size_t kConnections = 5;
  std::vector<Fd> clients;
  std::vector<Fd> servers;
  const std::string hello = std::string(1, '\x01') + "hello";
  for (size_t i = 0; i < kConnections; ++i) {
    clients.push_back(connectTcp(rig.listen));
    REQUIRE(sendSome(clients.back().get(), hello, 0) == hello.size());
  }
  REQUIRE(rig.loop.runUntil(
      [&] {
        if (Fd s = tryAccept(rig.upstream_l.get()); s.valid()) {
          servers.push_back(std::move(s));
        }
        return servers.size() == kConnections;
      },
      2000));
  REQUIRE(rig.dp->activeSessions() == kConnections);
  rig.dp->stop();
  // Both ends of every connection see it end.
  REQUIRE(rig.loop.runUntil(
      [&] {
        std::string sink;
        for (const auto& fds : {&clients, &servers}) {
          for (const auto& fd : *fds) {
            if (recvSome(fd.get(), sink) == ReadState::Open) {
              return false;
            }
          }
        }
        return rig.dp->activeSessions() == 0;
      },
      2000));
  CHECK(rig.dp->tcpCounters().active == 0);
  CHECK(rig.dp->tcpCounters().closedBy(filters::CloseReason::Stopping) == kConnections);
  CHECK_FALSE(rig.dp->listening());
  // The listener is closed: a new connection is refused.
  Fd late(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  REQUIRE(late.valid());
  if (::connect(late.get(), rig.listen.sa(), rig.listen.len()) != 0 && errno == EINPROGRESS) {
    std::string sink;
    REQUIRE(rig.loop.runUntil([&] { return recvSome(late.get(), sink) != ReadState::Open; }, 2000));
  } else {
    CHECK(errno == ECONNREFUSED);
  }
  late.reset();
  clients.clear();
  servers.clear();
  rig.finish();
}
