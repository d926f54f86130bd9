// Datapath with runtime.loops = 2 (docs/architecture.md, "Worker loops"), on real libuv loops and
// loopback sockets, no root: RPC sessions accepted by loop 0 are handed to the loop with the
// fewest, run there on the worker's thread, and everything loop 0 accounts for (counters, the
// per-address limit, the census, the active count a drain waits on) stays exact. Every test ends
// with stop() (which joins the worker) and the loop-close and descriptor-count leak check.
#include <spdlog/spdlog.h>
#include <catch2/catch.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proxy/admin/status_render.h"
#include "proxy/datapath/datapath.h"
#include "tests/unit/filters/gossip/gossip_test_util.h"
#include "tests/unit/proxy/datapath/datapath_rig.h"
#include "tests/unit/proxy/datapath/loop_test_util.h"

using namespace sidecrypt;
using namespace sidecrypt::test::loop;
using proxy::Datapath;
using proxy::ListenerConfig;
using proxy::ListenerDirection;
using proxy::RuntimeState;

namespace {

// An explicit inbound RPC listener (TLS would be terminated here; the stage is plaintext, so
// the peer's bytes reach the agent unchanged) relaying to `agent`, with `loops` event loops.
std::shared_ptr<RuntimeState> inboundRpcState(const SocketAddress& agent, uint32_t loops,
                                              bool verify_incoming = false,
                                              uint32_t max_per_client = 100) {
  auto st = std::make_shared<RuntimeState>(plaintextRpcState(ListenerDirection::Inbound, agent));
  st->config.listeners.front().name = "rpc-in";
  st->config.runtime.loops = loops;
  st->config.tls.rpc_max_conns_per_client = max_per_client;
  auto rpc = std::make_shared<proxy::RpcTlsSetup>();
  rpc->local_server_name = "server.dc1.consul";
  rpc->inbound.verify_incoming = verify_incoming;
  st->rpc = rpc;
  return st;
}

struct Rig {
  QuietLog quiet;
  TestLoop loop;
  Fd agent_l = listenTcp();  // our agent
  std::optional<Datapath> dp;
  SocketAddress listen;

  explicit Rig(uint32_t loops, bool verify_incoming = false, uint32_t max_per_client = 100) {
    dp.emplace(loop.get(), *inboundRpcState(boundAddress(agent_l.get()), loops, verify_incoming,
                                            max_per_client));
    std::string err;
    const bool started = dp->start(err);
    INFO(err);
    REQUIRE(started);
    REQUIRE(dp->loops() == loops);
    listen = dp->listenerAddresses().at(0);
  }

  // A peer's RPC connection: sends the type byte and `hello`, waits until the agent got it.
  struct Conn {
    Fd peer;
    Fd agent;
  };
  Conn open(const std::string& hello) {
    Conn c{connectTcp(listen), Fd()};
    const std::string bytes = std::string(1, '\x01') + hello;
    REQUIRE(sendSome(c.peer.get(), bytes, 0) == bytes.size());
    std::string got;
    REQUIRE(loop.runUntil(
        [&] {
          if (!c.agent.valid()) {
            c.agent = tryAccept(agent_l.get());
          }
          if (c.agent.valid()) {
            recvSome(c.agent.get(), got);
          }
          return got == bytes;
        },
        3000));
    return c;
  }

  uint64_t sessionsOn(size_t i) const { return dp->loopLoads().at(i).sessions; }

  void finish() {
    dp->stop();
    // stop() joined the worker and counted its closes; loop 0's own finish on its next turns.
    REQUIRE((dp->loops() == 1 || sessionsOn(1) == 0));
    REQUIRE(loop.runUntil([&] { return dp->activeSessions() == 0; }, 2000));
    dp.reset();
    agent_l.reset();
    loop.finish();
  }
};

uint64_t sessionsOn(const Datapath& dp, size_t loop) {
  return dp.loopLoads().at(loop).sessions;
}

}  // namespace

TEST_CASE("loops: \"auto\" is the CPUs this process may use, at most 64", "[datapath][loops]") {
  const auto cpus = static_cast<uint32_t>(uv_available_parallelism());
  CHECK(Datapath::resolveLoops(0) == std::min<uint32_t>(std::max<uint32_t>(cpus, 1), 64));
  CHECK(Datapath::resolveLoops(1) == 1);
  CHECK(Datapath::resolveLoops(2) == 2);
  CHECK(Datapath::resolveLoops(64) == 64);
}

TEST_CASE("loops: RPC sessions run on both loops, relay both ways, and close accounting is exact",
          "[datapath][loop][loops]") {
  Rig rig(2);
  constexpr size_t kConns = 6;
  std::vector<Rig::Conn> conns;
  for (size_t i = 0; i < kConns; ++i) {
    conns.push_back(rig.open("hello " + std::to_string(i)));
  }
  // The fewest first, ties in turn: loop 0, loop 1, loop 0, ...
  CHECK(rig.dp->activeSessions() == kConns);
  CHECK(sessionsOn(*rig.dp, 0) == kConns / 2);
  CHECK(sessionsOn(*rig.dp, 1) == kConns / 2);
  CHECK(rig.dp->tcpCounters().active == kConns);
  CHECK(rig.dp->rpcStats().passthrough_plaintext == kConns);  // summed over both loops

  // Bytes cross both ways on every session (half of them on the worker's thread).
  for (size_t i = 0; i < kConns; ++i) {
    auto& c = conns[i];
    const std::string answer = pattern(100 << 10, static_cast<uint32_t>(i + 1));
    std::string back;
    size_t at = 0;
    REQUIRE(rig.loop.runUntil(
        [&] {
          at = sendSome(c.agent.get(), answer, at);
          recvSome(c.peer.get(), back);
          return back.size() >= answer.size();
        },
        3000));
    CHECK(back == answer);
  }

  // The peers end the sessions on loop 1 (odd ones) with FIN both ways: routine closes, counted
  // by loop 0 once each, and the loads follow.
  for (size_t i = 1; i < kConns; i += 2) {
    REQUIRE(::shutdown(conns[i].peer.get(), SHUT_WR) == 0);
    REQUIRE(::shutdown(conns[i].agent.get(), SHUT_WR) == 0);
  }
  REQUIRE(rig.loop.runUntil([&] { return rig.dp->activeSessions() == kConns / 2; }, 3000));
  const auto& c = rig.dp->tcpCounters();
  CHECK(c.accepted == kConns);
  CHECK(c.active == kConns / 2);
  CHECK(c.closed_ok == kConns / 2);
  CHECK(c.closed_error == 0);
  CHECK(c.closedBy(filters::CloseReason::Done) == kConns / 2);
  CHECK(sessionsOn(*rig.dp, 0) == kConns / 2);
  CHECK(sessionsOn(*rig.dp, 1) == 0);
  // The census heard the worker's sessions as loop 0's: accepted plaintext RPC from 127.0.0.1.
  const auto* peer = rig.dp->census().peer("127.0.0.1");
  REQUIRE(peer != nullptr);
  CHECK(peer->rpc_plaintext == kConns / 2);

  // /status and /metrics show the loops.
  RuntimeState state;
  proxy::StatusInput in(state);
  in.datapath = &*rig.dp;
  const auto status = proxy::statusJson(in);
  REQUIRE(status.contains("loops"));
  REQUIRE(status["loops"].size() == 2);
  CHECK(status["loops"][0]["sessions_active"] == kConns / 2);
  CHECK(status["loops"][1]["sessions_active"] == 0);
  const std::string metrics = proxy::metricsText(in);
  CHECK(metrics.find("sidecrypt_loop_sessions_active{loop=\"1\"} 0\n") != std::string::npos);
  CHECK(metrics.find("sidecrypt_loop_rpc_handshakes_total{loop=\"1\"} 0\n") != std::string::npos);
  CHECK(rig.dp->statsText().find("; loop 1 sessions=0 rpc_handshakes=0") != std::string::npos);

  // The next ones go to loop 1, which holds fewer now.
  conns.push_back(rig.open("later"));
  CHECK(sessionsOn(*rig.dp, 1) == 1);
  conns.clear();
  REQUIRE(rig.loop.runUntil([&] { return rig.dp->activeSessions() == 0; }, 3000));
  CHECK(rig.dp->tcpCounters().active == 0);
  CHECK(rig.dp->tcpCounters().closed_ok + rig.dp->tcpCounters().closed_error == kConns + 1);
  rig.finish();
}

TEST_CASE("loops: the per-client RPC limit counts sessions on every loop and is given back",
          "[datapath][loop][loops]") {
  Rig rig(2, false, 3);
  std::vector<Rig::Conn> conns;
  for (int i = 0; i < 3; ++i) {
    conns.push_back(rig.open("x"));
  }
  CHECK(sessionsOn(*rig.dp, 1) >= 1);
  // A fourth from the same address is refused, whichever loop it would have gone to.
  Fd fourth = connectTcp(rig.listen);
  std::string sink;
  REQUIRE(rig.loop.runUntil([&] { return recvSome(fourth.get(), sink) != ReadState::Open; }, 3000));
  CHECK(rig.dp->tcpCounters().rpc_conn_limited == 1);
  // Closing one on the worker gives its slot back: a new one is accepted.
  const size_t on_worker = rig.dp->loopLoads()[1].sessions;
  REQUIRE(on_worker >= 1);
  conns.erase(conns.begin() + 1);  // the second went to loop 1
  REQUIRE(rig.loop.runUntil([&] { return rig.dp->activeSessions() == 2; }, 3000));
  conns.push_back(rig.open("y"));
  CHECK(rig.dp->tcpCounters().rpc_conn_limited == 1);
  conns.clear();
  fourth.reset();
  rig.finish();
}

TEST_CASE("loops: a reload reaches new sessions only; established ones on the worker keep theirs",
          "[datapath][loop][loops][reload]") {
  Rig rig(2);
  auto first = rig.open("a");   // loop 0
  auto second = rig.open("b");  // loop 1: plaintext accepted under verify_incoming off
  REQUIRE(sessionsOn(*rig.dp, 1) == 1);
  // Reload: verify_incoming on. New plaintext is refused; the worker's session goes on.
  rig.dp->apply(*inboundRpcState(boundAddress(rig.agent_l.get()), 2, true));
  Fd refused = connectTcp(rig.listen);
  const std::string hello = std::string(1, '\x01') + "refused";
  REQUIRE(sendSome(refused.get(), hello, 0) == hello.size());
  std::string sink;
  REQUIRE(
      rig.loop.runUntil([&] { return recvSome(refused.get(), sink) != ReadState::Open; }, 3000));
  CHECK(rig.dp->rpcStats().plaintext_refused == 1);
  const std::string more = pattern(64 << 10, 9);
  std::string got;
  size_t at = 0;
  REQUIRE(rig.loop.runUntil(
      [&] {
        at = sendSome(second.peer.get(), more, at);
        recvSome(second.agent.get(), got);
        return got.size() >= more.size();
      },
      3000));
  CHECK(got == more);
  CHECK(sessionsOn(*rig.dp, 1) == 1);
  refused.reset();
  first = {};
  second = {};
  rig.finish();
}

TEST_CASE("loops: stopping (the end of a drain) closes the worker's sessions and counts them",
          "[datapath][loop][loops]") {
  Rig rig(2);
  std::vector<Rig::Conn> conns;
  for (int i = 0; i < 4; ++i) {
    conns.push_back(rig.open("z"));
  }
  // While draining, the listeners still accept and the active count covers both loops.
  CHECK(rig.dp->activeSessions() == 4);
  CHECK(sessionsOn(*rig.dp, 1) == 2);
  rig.dp->stop();
  // The worker's two are closed and accounted for when stop() returns (its thread is joined);
  // loop 0's two when its handles have closed, on the loop's next turn.
  CHECK(rig.dp->activeSessions() == 2);
  CHECK(sessionsOn(*rig.dp, 1) == 0);
  CHECK(rig.dp->tcpCounters().closedBy(filters::CloseReason::Stopping) == 2);
  REQUIRE(rig.loop.runUntil([&] { return rig.dp->activeSessions() == 0; }, 2000));
  CHECK(rig.dp->tcpCounters().active == 0);
  CHECK(rig.dp->tcpCounters().closedBy(filters::CloseReason::Stopping) == 4);
  // Every peer and agent socket sees its end.
  REQUIRE(rig.loop.runUntil(
      [&] {
        std::string sink;
        for (auto& c : conns) {
          if (recvSome(c.peer.get(), sink) == ReadState::Open ||
              recvSome(c.agent.get(), sink) == ReadState::Open) {
            return false;
          }
        }
        return true;
      },
      3000));
  conns.clear();
  rig.finish();
}

TEST_CASE("loops: with one loop nothing is handed off and no thread runs",
          "[datapath][loop][loops]") {
  Rig rig(1);
  auto a = rig.open("a");
  auto b = rig.open("b");
  CHECK(rig.dp->loopLoads().size() == 1);
  CHECK(sessionsOn(*rig.dp, 0) == 2);
  CHECK(rig.dp->statsText().find("; loop ") == std::string::npos);
  a = {};
  b = {};
  rig.finish();
}
