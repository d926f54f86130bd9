#pragma once

// What the in-process Datapath tests (datapath_test, datapath_loops_test) share: a plaintext RPC
// state with one explicit listener, and a quiet log for the time of a rig.

#include <spdlog/spdlog.h>
#include <catch2/catch.hpp>

#include <memory>

#include "proxy/runtime_state.h"
#include "tests/unit/filters/gossip/gossip_test_util.h"

namespace sidecrypt::test::loop {

// One explicit listener on a kernel-chosen loopback port, relaying to `upstream`. The RPC
// rollout stage is plaintext (verify_outgoing and verify_incoming off), no mark (SO_MARK needs
// CAP_NET_ADMIN), nothing intercepted.
inline proxy::RuntimeState plaintextRpcState(proxy::ListenerDirection direction,
                                             const proxy::SocketAddress& upstream) {
  proxy::RuntimeState st;
  st.config.intercept.proxy_mark = 0;
  st.config.intercept.divert_mark = 0;
  REQUIRE(st.config.intercept.ports.empty());
  proxy::ListenerConfig l;
  l.name = "rpc-test";
  l.listen = proxy::SocketAddress::parse("127.0.0.1:0");
  l.upstream = upstream;
  l.direction = direction;
  st.config.listeners.push_back(l);
  st.lan_keys = test::gossip::ringFromHex(nlohmann::json::array());
  auto rpc = std::make_shared<proxy::RpcTlsSetup>();
  rpc->local_server_name = "server.dc1.consul";
  st.rpc = rpc;
  return st;
}

// The Datapath logs every listener and refusal; the tests read counters instead.
struct QuietLog {
  spdlog::level::level_enum was = spdlog::get_level();
  QuietLog() { spdlog::set_level(spdlog::level::err); }
  ~QuietLog() { spdlog::set_level(was); }
  QuietLog(const QuietLog&) = delete;
  QuietLog& operator=(const QuietLog&) = delete;
};

}  // namespace sidecrypt::test::loop
