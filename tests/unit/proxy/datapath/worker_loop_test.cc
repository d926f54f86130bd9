// WorkerLoop on its own thread, driven from this thread as loop 0 drives it (docs/architecture.md,
// "Worker loops"): hand-offs, the close for the descriptor limit (answered Kept for a finished
// session, Closed for an unfinished one), a close for a session already gone, and stop. These
// are the messages that cross threads besides what the Datapath tests drive; under
// ThreadSanitizer (scripts/tsan.sh) they run with a report failing the test.
#include <uv.h>
#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "filters/rpc_tls/rpc_processor.h"
#include "filters/rpc_tls/rpc_tls_stats.h"
#include "proxy/datapath/worker_loop.h"
#include "proxy/net/sockets.h"
#include "tests/unit/proxy/datapath/datapath_rig.h"
#include "tests/unit/proxy/datapath/loop_test_util.h"

using namespace sidecrypt;
using namespace sidecrypt::test::loop;
using proxy::LoopEvent;
using proxy::WorkerLoop;

namespace {

// Loop 0's side: the events the worker posts (from its thread), read here under the same lock.
class Events {
 public:
  void post(LoopEvent&& e) {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::move(e));
  }
  // Waits (at most 3 s) for an event of `kind` for session `id` and returns a copy of it.
  LoopEvent await(LoopEvent::Kind kind, uint64_t id) {
    const auto deadline = Clock::now() + std::chrono::seconds(3);
    while (Clock::now() < deadline) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (const auto& e : events_) {
          if (e.kind == kind && e.id == id) {
            return e;
          }
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    FAIL("no event of kind " << static_cast<int>(kind) << " for session " << id);
    return {};
  }
  size_t count(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    size_t n = 0;
    for (const auto& e : events_) {
      n += e.id == id ? 1 : 0;
    }
    return n;
  }

 private:
  std::mutex mu_;
  std::vector<LoopEvent> events_;
};

// Polls `done` every millisecond for at most 3 s.
template <typename Done>
bool waitFor(Done done) {
  const auto deadline = Clock::now() + std::chrono::seconds(3);
  while (!done()) {
    if (Clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// A peer's connection accepted here (as loop 0 accepts) and handed to the worker with an opened
// upstream socket and a plaintext inbound RPC processor.
struct Conn {
  Fd peer;
  Fd agent;
  uint64_t id = 0;
};

Conn handOff(WorkerLoop& w, int front_l, const SocketAddress& agent, uint64_t id,
             const std::shared_ptr<filters::rpc_tls::RpcTlsStats>& stats) {
  Conn c;
  c.id = id;
  c.peer = connectTcp(boundAddress(front_l));
  Fd accepted;
  REQUIRE(waitFor([&] {
    accepted = tryAccept(front_l);
    return accepted.valid();
  }));
  std::string err;
  const int up = proxy::openTcpUpstream(agent.family(), 0, nullptr, err);
  INFO(err);
  REQUIRE(up >= 0);
  auto rpc = std::make_shared<proxy::RpcTlsSetup>();
  rpc->local_server_name = "server.dc1.consul";
  WorkerLoop::Handoff h;
  h.accepted_fd = accepted.release();
  h.upstream_fd = up;
  h.info.id = id;
  h.info.origin = proxy::Origin::Inbound;
  h.info.kind = "rpc";
  h.info.agent = agent;
  h.info.peer = boundAddress(c.peer.get());
  h.connect_to = agent;
  h.processor =
      std::make_unique<filters::rpc_tls::RpcProcessor>(true, rpc, "dc1", stats, std::string());
  REQUIRE(w.handoff(h));
  return c;
}

}  // namespace

TEST_CASE(
    "worker loop: a close for the descriptor limit keeps a finished session, closes an "
    "unfinished one, and stop closes the rest, each answered to loop 0",
    "[datapath][loops]") {
  QuietLog quiet;
  {
    uv_loop_t l;  // libuv's process-wide descriptors (its signal pipe) open with the first loop
    REQUIRE(uv_loop_init(&l) == 0);
    REQUIRE(uv_loop_close(&l) == 0);
  }
  const int fds_before = countOpenFds();
  {
    Fd agent_l = listenTcp();
    Fd front_l = listenTcp();
    const SocketAddress agent = boundAddress(agent_l.get());
    auto stats = std::make_shared<filters::rpc_tls::RpcTlsStats>();
    Events events;
    WorkerLoop w(1, 1 << 20, [&events](LoopEvent&& e) { events.post(std::move(e)); });
    std::string err;
    REQUIRE(w.start(err));

    // Session 1 finishes its first message (type byte and data reach the agent): Ready.
    Conn done = handOff(w, front_l.get(), agent, 1, stats);
    const std::string bytes = "\x01hello";
    REQUIRE(sendSome(done.peer.get(), bytes, 0) == bytes.size());
    std::string got;
    REQUIRE(waitFor([&] {
      if (!done.agent.valid()) {
        done.agent = tryAccept(agent_l.get());
      }
      if (done.agent.valid()) {
        recvSome(done.agent.get(), got);
      }
      return got == bytes;
    }));
    events.await(LoopEvent::Kind::Ready, 1);
    // Session 2 sends nothing: unfinished.
    Conn idle = handOff(w, front_l.get(), agent, 2, stats);

    // The close for the limit (only unfinished sessions): Kept for 1, Closed for 2.
    w.closeSession(1, proxy::CloseReason::DescriptorLimit, "limit", true);
    w.closeSession(2, proxy::CloseReason::DescriptorLimit, "limit", true);
    events.await(LoopEvent::Kind::Kept, 1);
    const LoopEvent closed = events.await(LoopEvent::Kind::Closed, 2);
    CHECK(closed.loop == 1);
    CHECK(closed.end.reason == proxy::CloseReason::DescriptorLimit);
    CHECK(closed.end.rpc);
    CHECK_FALSE(closed.end.ready);
    std::string rest;
    CHECK(waitFor([&] { return recvSome(idle.peer.get(), rest) != ReadState::Open; }));
    // A close for a session already gone changes nothing and answers nothing.
    w.closeSession(2, proxy::CloseReason::DescriptorLimit, "limit", true);
    w.closeSession(99, proxy::CloseReason::DescriptorLimit, "limit", false);

    // Stop: session 1 is closed (Stopping), its Closed posted before the thread is joined.
    w.stop();
    const LoopEvent stopped = events.await(LoopEvent::Kind::Closed, 1);
    CHECK(stopped.end.reason == proxy::CloseReason::Stopping);
    CHECK(stopped.end.ready);
    CHECK(stopped.end.from_peer == bytes.size());
    CHECK(events.count(1) == 3);  // Ready, Kept, Closed
    CHECK(events.count(2) == 1);  // Closed
    CHECK(events.count(99) == 0);
    CHECK(stats->passthrough_plaintext.load() == 1);
    // After stop nothing is taken.
    WorkerLoop::Handoff late;
    CHECK_FALSE(w.handoff(late));
  }
  CHECK(countOpenFds() == fds_before);  // both sessions' sockets and the worker's loop closed
}
