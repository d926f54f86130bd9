// StreamDriver: the named phases a connection moves through, and what the session is told to do,
// with scripted filters (no sockets).
#include "filters/stream_driver.h"

#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

#include "filters/gossip/gossip_stream_processor.h"
#include "filters/passthrough.h"
#include "filters/rpc_tls/rpc_processor.h"

using namespace sidecrypt::filters;

namespace {

void append(Buffer& b, const std::string& s) {
  b.append({reinterpret_cast<const uint8_t*>(s.data()), s.size()});
}

// Returns the scripted verdicts in order (the last one repeats) and records every call.
class Scripted final : public StreamFilter {
 public:
  explicit Scripted(std::vector<StreamVerdict> script, StreamVerdict first = {})
      : script_(std::move(script)), first_(std::move(first)) {}
  StreamVerdict start() override { return first_; }
  StreamVerdict onData(Side from, Buffer& in, bool end_stream, StreamIo& /*io*/) override {
    calls.push_back({from, in.size(), end_stream});
    in.clear();
    StreamVerdict v = script_[std::min(next_, script_.size() - 1)];
    ++next_;
    return v;
  }
  const char* name() const override { return "scripted"; }

  struct Call {
    Side from;
    size_t bytes;
    bool end;
  };
  std::vector<Call> calls;

 private:
  std::vector<StreamVerdict> script_;
  StreamVerdict first_;
  size_t next_ = 0;
};

StreamVerdict wants(bool dial, bool ready) {
  StreamVerdict v;
  v.dial = dial;
  v.ready = ready;
  return v;
}

struct Ends {
  Buffer agent_in, peer_in, to_agent, to_peer;
  bool agent_eof = false, peer_eof = false;
  void run(StreamDriver& d) { d.run({to_agent, to_peer}, agent_in, agent_eof, peer_in, peer_eof); }
};

}  // namespace

TEST_CASE("stream_driver: a connection moves Waiting, Dialling, Open, Draining and never back",
          "[stream_driver]") {
  auto owned = std::make_unique<Scripted>(std::vector<StreamVerdict>{
      wants(false, false), wants(true, false), wants(true, true), wants(false, false),
      StreamVerdict::closeWith(CloseReason::Refused, "no"), wants(true, true)});
  Scripted& f = *owned;
  StreamDriver d(std::move(owned));
  Ends e;
  CHECK(d.phase() == StreamDriver::Phase::Waiting);
  CHECK_FALSE(d.wantsUpstream());
  CHECK_FALSE(d.ready());
  const std::vector<StreamDriver::Phase> expect{
      StreamDriver::Phase::Waiting,  StreamDriver::Phase::Dialling, StreamDriver::Phase::Open,
      StreamDriver::Phase::Open,  // a later verdict that wants less does not move it back
      StreamDriver::Phase::Draining, StreamDriver::Phase::Draining};
  for (auto phase : expect) {
    append(e.peer_in, "x");
    e.run(d);
    CHECK(d.phase() == phase);
  }
  CHECK(f.calls.size() == 5);  // nothing reaches the filter once it is draining
  CHECK(d.reason() == CloseReason::Refused);
  CHECK(d.detail() == "no");
  CHECK(d.ready());  // it was open: the session keeps steady-state buffers while it drains
  CHECK(d.wantsUpstream());
}

TEST_CASE("stream_driver: ready implies the upstream, and a refusal keeps what was wanted",
          "[stream_driver]") {
  SECTION("ready without dial still dials") {
    StreamDriver d(std::make_unique<Scripted>(std::vector<StreamVerdict>{wants(false, true)}));
    Ends e;
    append(e.agent_in, "a");
    e.run(d);
    CHECK(d.phase() == StreamDriver::Phase::Open);
    CHECK(d.wantsUpstream());
  }
  SECTION("the call that refuses and wanted the upstream still dials") {
    StreamVerdict v = StreamVerdict::closeWith(CloseReason::Refused, "no client");
    v.dial = true;
    StreamDriver d(std::make_unique<Scripted>(std::vector<StreamVerdict>{v}));
    Ends e;
    append(e.agent_in, "a");
    e.run(d);
    CHECK(d.draining());
    CHECK(d.wantsUpstream());
    CHECK_FALSE(d.ready());
  }
  SECTION("a refusal while waiting never wants the upstream") {
    StreamDriver d(std::make_unique<Scripted>(
        std::vector<StreamVerdict>{StreamVerdict::closeWith(CloseReason::Refused, "plaintext")}));
    Ends e;
    append(e.peer_in, "p");
    e.run(d);
    CHECK(d.draining());
    CHECK_FALSE(d.wantsUpstream());
  }
}

TEST_CASE("stream_driver: agent first, a refusal stops the round, and a FIN is delivered once",
          "[stream_driver]") {
  auto owned = std::make_unique<Scripted>(std::vector<StreamVerdict>{wants(true, true)});
  Scripted& f = *owned;
  StreamDriver d(std::move(owned));
  Ends e;
  append(e.agent_in, "aa");
  append(e.peer_in, "ppp");
  e.run(d);
  REQUIRE(f.calls.size() == 2);
  CHECK(f.calls[0].from == Side::Agent);
  CHECK(f.calls[0].bytes == 2);
  CHECK(f.calls[1].from == Side::Peer);
  e.run(d);
  CHECK(f.calls.size() == 2);  // nothing new, no call
  e.agent_eof = true;
  e.run(d);
  e.run(d);
  REQUIRE(f.calls.size() == 3);
  CHECK(f.calls[2].end);
  CHECK(d.endDelivered(Side::Agent));
  CHECK_FALSE(d.endDelivered(Side::Peer));

  auto refusing = std::make_unique<Scripted>(
      std::vector<StreamVerdict>{StreamVerdict::closeWith(CloseReason::Refused, "bad")});
  Scripted& r = *refusing;
  StreamDriver d2(std::move(refusing));
  Ends e2;
  append(e2.agent_in, "a");
  append(e2.peer_in, "p");
  e2.run(d2);
  CHECK(r.calls.size() == 1);  // the peer's bytes are not run after the agent's were refused
}

TEST_CASE("stream_driver: passthrough relays both ways, forwards FINs, and truncation is typed",
          "[stream_driver]") {
  StreamDriver d(std::make_unique<PassthroughProcessor>());
  CHECK(d.phase() == StreamDriver::Phase::Open);  // dials and is ready before any byte
  Ends e;
  append(e.agent_in, "hello");
  append(e.peer_in, "world");
  e.peer_eof = true;
  e.run(d);
  CHECK(e.to_peer.size() == 5);
  CHECK(e.to_agent.size() == 5);
  CHECK(d.endToAgent());
  CHECK_FALSE(d.endToPeer());

  StreamVerdict v;
  Buffer partial;
  append(partial, "half");
  forwardEnd(Side::Agent, partial, true, v);
  CHECK(v.close);
  CHECK(v.reason == CloseReason::Truncated);
  CHECK_FALSE(routine(v.reason));
  CHECK(routine(CloseReason::Reset));
  CHECK(routine(CloseReason::Done));
}

TEST_CASE("a filter's kind gives its typed view, and no other filter's", "[stream_driver]") {
  // The proxy reads a closed connection's gossip key or TLS peer through these views (no RTTI);
  // a wrong kind would hand it a filter of another class.
  gossip::GossipStreamProcessor g(
      std::make_unique<gossip::GossipStreamFilter>(Direction::Inbound, nullptr,
                                                   std::make_shared<gossip::GossipPolicy>(),
                                                   std::make_shared<gossip::GossipStreamStats>()),
      nullptr, true);
  rpc_tls::RpcProcessor r(true, std::make_shared<rpc_tls::RpcTlsSetup>(), "", nullptr);
  PassthroughProcessor p;
  CHECK(g.kind() == StreamFilterKind::Gossip);
  CHECK(r.kind() == StreamFilterKind::Rpc);
  CHECK(p.kind() == StreamFilterKind::Other);
  CHECK(gossip::GossipStreamProcessor::of(g) == &g);
  CHECK(gossip::GossipStreamProcessor::of(r) == nullptr);
  CHECK(gossip::GossipStreamProcessor::of(p) == nullptr);
  CHECK(rpc_tls::RpcProcessor::of(r) == &r);
  CHECK(rpc_tls::RpcProcessor::of(g) == nullptr);
  CHECK(rpc_tls::RpcProcessor::of(p) == nullptr);
}
