#include "filters/gossip/gossip_stream_filter.h"

#include <catch2/catch.hpp>

#include <string>

#include "filters/gossip/lzw_decoder.h"
#include "filters/gossip/message_inspector.h"
#include "filters/gossip/msgpack.h"
#include "gossip_test_util.h"
#include "lzw_test_util.h"

using namespace sidecrypt::filters::gossip;
using namespace sidecrypt::test::gossip;
using sidecrypt::filters::Buffer;
using sidecrypt::test::fromHex;
namespace keyring = sidecrypt::filters::keyring;

namespace {

struct NodeConfig {
  keyring::KeySetConstSharedPtr ring;
  std::shared_ptr<const GossipPolicy> policy;
};

NodeConfig nodeConfig(const nlohmann::json& node) {
  auto p = std::make_shared<GossipPolicy>();
  p->verify_incoming = node["gossip_verify_incoming"].get<bool>();
  p->verify_outgoing = node["gossip_verify_outgoing"].get<bool>();
  p->seal_version =
      node["protocol_version"].get<int>() == 1 ? EncryptionVersion::V0 : EncryptionVersion::V1;
  return {ringFromHex(node["keyring_hex"]), p};
}

// What one filter did with an exchange.
struct Trace {
  Bytes to_agent;
  Bytes to_peer;
  FilterStatus status = FilterStatus::Continue;
  StreamCloseReason reason = StreamCloseReason::None;
  int key_index = -1;
  bool shadow = false;
  bool operator==(const Trace&) const = default;
};

enum class Side { Agent, Peer };

// Feeds `bytes` in the chunk sizes of `plan` to one side of the filter, then signals end of
// stream if asked. Stops at the first Close.
FilterStatus feed(GossipStreamFilter& f, Side side, const Bytes& bytes,
                  const std::vector<size_t>& plan, Buffer& in, StreamIo& io, bool end) {
  size_t at = 0;
  FilterStatus st = FilterStatus::Continue;
  for (size_t n : plan) {
    in.append(std::span<const uint8_t>(bytes).subspan(at, n));
    at += n;
    st = side == Side::Agent ? f.onAgentData(in, false, io) : f.onPeerData(in, false, io);
    if (st == FilterStatus::Close) {
      return st;
    }
  }
  if (end) {
    st = side == Side::Agent ? f.onAgentData(in, true, io) : f.onPeerData(in, true, io);
  }
  return st;
}

// The first nonce of a sealed frame, so a re-seal reproduces the vector's bytes.
void pushFrameNonce(QueuedNonces& n, const Bytes& wire) {
  if (wire.size() >= 18 && wire[0] == kEncryptMsg) {
    n.push(Bytes(wire.begin() + 6, wire.begin() + 18));
  }
}

// A stream message as the plaintext agent reads/writes it: the frame's plaintext, or itself.
Bytes agentView(const Bytes& wire, const keyring::KeySet& ring) {
  if (wire.empty() || wire[0] != kEncryptMsg) {
    return wire;
  }
  Bytes out(wire.size());
  auto r = openFrame(ring, wire, "", out);
  REQUIRE(r.ok());
  out.resize(r.length);
  return out;
}

// The innermost message (frame opened with `ring`, compression undone) and, for an errMsg,
// its Error text.
std::pair<int, std::string> innermost(const Bytes& wire, const keyring::KeySet& ring) {
  Bytes msg = agentView(wire, ring);
  if (!msg.empty() && msg[0] == kCompressMsg) {
    msg = decompressMessage(msg);
  }
  if (msg.empty()) {
    return {-1, ""};
  }
  std::string text;
  if (msg[0] == kErrMsg) {
    MsgpackReader r(std::span<const uint8_t>(msg).subspan(1));
    uint64_t n = 0;
    std::string_view key;
    std::span<const uint8_t> value;
    REQUIRE(r.readMapHeader(n));
    REQUIRE(r.readKey(key));
    REQUIRE(r.readBytes(value));
    text.assign(value.begin(), value.end());
  }
  return {msg[0], text};
}

std::shared_ptr<GossipStreamStats> freshStats() {
  return std::make_shared<GossipStreamStats>();
}

// The agent behind sidecrypt is the responder: the peer's request arrives, the agent replies.
Trace runResponder(const nlohmann::json& ex, const NodeConfig& node,
                   const std::vector<size_t>& peer_plan, const std::vector<size_t>& agent_plan) {
  const Bytes request = hex(ex["request_hex"]);
  const Bytes response = hex(ex["response_hex"]);
  QueuedNonces nonces;
  pushFrameNonce(nonces, response);
  GossipStreamFilter f(Origin::Inbound, node.ring, node.policy, freshStats(), nonces);
  Buffer peer_in, agent_in, to_agent, to_peer;
  StreamIo io{to_agent, to_peer};
  Trace t;
  t.status = feed(f, Side::Peer, request, peer_plan, peer_in, io, false);
  if (t.status == FilterStatus::Continue && !response.empty()) {
    const Bytes reply = agentView(response, *node.ring);
    t.status = feed(f, Side::Agent, reply, agent_plan, agent_in, io, true);
  }
  t.to_agent = contents(to_agent);
  t.to_peer = contents(to_peer);
  t.reason = f.closeReason();
  t.key_index = f.keyIndex();
  t.shadow = f.shadowRefused();
  return t;
}

// The agent behind sidecrypt is the initiator: it writes the request, the peer replies.
Trace runInitiator(const nlohmann::json& ex, const NodeConfig& node,
                   const std::vector<size_t>& agent_plan, const std::vector<size_t>& peer_plan) {
  const Bytes request = hex(ex["request_hex"]);
  const Bytes response = hex(ex["response_hex"]);
  QueuedNonces nonces;
  pushFrameNonce(nonces, request);
  GossipStreamFilter f(Origin::Outbound, node.ring, node.policy, freshStats(), nonces);
  Buffer peer_in, agent_in, to_agent, to_peer;
  StreamIo io{to_agent, to_peer};
  Trace t;
  // What the plaintext agent wrote: the request as the responder would open it.
  const Bytes plain = agentView(request, *node.ring);
  t.status = feed(f, Side::Agent, plain, agent_plan, agent_in, io, false);
  if (t.status == FilterStatus::Continue && !response.empty()) {
    t.status = feed(f, Side::Peer, response, peer_plan, peer_in, io, true);
  }
  t.to_agent = contents(to_agent);
  t.to_peer = contents(to_peer);
  t.reason = f.closeReason();
  t.key_index = f.keyIndex();
  t.shadow = f.shadowRefused();
  return t;
}

void checkResponder(const nlohmann::json& ex, const Trace& t) {
  CAPTURE(describe(t.reason));
  const auto node = nodeConfig(ex["responder"]);
  const Bytes request = hex(ex["request_hex"]);
  const Bytes response = hex(ex["response_hex"]);
  const bool has_keys = !node.ring->empty();
  const auto [type, text] =
      response.empty() ? std::pair{-1, std::string()} : innermost(response, *node.ring);
  if (type == kErrMsg) {
    // The real responder refused the request: so must we, with the same errMsg text, sealed
    // exactly when the responder seals.
    CHECK(t.status == FilterStatus::Close);
    CHECK(t.to_agent.empty());
    REQUIRE_FALSE(t.to_peer.empty());
    CHECK((t.to_peer[0] == kEncryptMsg) == (response[0] == kEncryptMsg));
    CHECK(innermost(t.to_peer, *node.ring) == std::pair{int{kErrMsg}, text});
    return;
  }
  CHECK(t.status == FilterStatus::Continue);
  CHECK(t.to_agent == agentView(request, *node.ring));
  CHECK(t.to_peer == response);  // byte for byte, sealed with the vector's nonce
  if (request[0] == kEncryptMsg) {
    CHECK(t.key_index == ex["request"]["opened_with_key_index"].get<int>());
  }
  CHECK(t.shadow == (has_keys && request[0] != kEncryptMsg));
}

void checkInitiator(const nlohmann::json& ex, const Trace& t) {
  CAPTURE(describe(t.reason));
  const auto node = nodeConfig(ex["initiator"]);
  const Bytes request = hex(ex["request_hex"]);
  const Bytes response = hex(ex["response_hex"]);
  const std::string outcome = ex["outcome"];
  CHECK(t.to_peer == request);  // byte for byte, sealed with the vector's nonce
  if (response.empty()) {
    CHECK(t.status == FilterStatus::Continue);
    return;
  }
  const bool forward =
      outcome.rfind("ok", 0) == 0 || outcome.find("remote error:") != std::string::npos;
  if (forward) {
    CHECK(t.status == FilterStatus::Continue);
    CHECK(t.to_agent == agentView(response, *node.ring));
    if (response[0] == kEncryptMsg) {
      CHECK(t.key_index == ex["response"]["opened_with_key_index"].get<int>());
    }
    return;
  }
  // memberlist's initiator fails by itself: we refuse and tell the agent the same error.
  const std::string prefix = "initiator error: ";
  REQUIRE(outcome.rfind(prefix, 0) == 0);
  CHECK(t.status == FilterStatus::Close);
  CHECK(innermost(t.to_agent, *node.ring) ==
        std::pair{int{kErrMsg}, outcome.substr(prefix.size())});
}

}  // namespace

TEST_CASE("gossip_stream_filter: streams.json exchanges with sidecrypt as the responder",
          "[gossip][stream][vectors]") {
  auto doc = loadVectors("streams.json");
  for (const auto& ex : doc["exchanges"]) {
    DYNAMIC_SECTION(ex["name"].get<std::string>()) {
      const auto node = nodeConfig(ex["responder"]);
      const size_t req = hex(ex["request_hex"]).size();
      // the agent's reply is the plaintext of the response (or the response itself)
      const Bytes response = hex(ex["response_hex"]);
      const size_t resp =
          std::max<size_t>(response.empty() ? 0 : agentView(response, *node.ring).size(), 1);
      const Trace whole = runResponder(ex, node, {req}, {resp});
      checkResponder(ex, whole);
      for (const auto& plan : splitPlans(req)) {
        CHECK(runResponder(ex, node, plan, {resp}) == whole);
      }
      for (const auto& plan : splitPlans(resp)) {
        CHECK(runResponder(ex, node, {req}, plan) == whole);
      }
    }
  }
}

TEST_CASE("gossip_stream_filter: streams.json exchanges with sidecrypt as the initiator",
          "[gossip][stream][vectors]") {
  auto doc = loadVectors("streams.json");
  for (const auto& ex : doc["exchanges"]) {
    DYNAMIC_SECTION(ex["name"].get<std::string>()) {
      const auto node = nodeConfig(ex["initiator"]);
      const size_t plain = agentView(hex(ex["request_hex"]), *node.ring).size();
      const size_t resp = std::max<size_t>(hex(ex["response_hex"]).size(), 1);
      const Trace whole = runInitiator(ex, node, {plain}, {resp});
      checkInitiator(ex, whole);
      for (const auto& plan : splitPlans(plain)) {
        CHECK(runInitiator(ex, node, plan, {resp}) == whole);
      }
      for (const auto& plan : splitPlans(resp)) {
        CHECK(runInitiator(ex, node, {plain}, plan) == whole);
      }
    }
  }
}

TEST_CASE("gossip_stream_filter: responder_negatives answered as memberlist answers",
          "[gossip][stream][vectors]") {
  auto doc = loadVectors("streams.json");
  int checked = 0;
  for (const auto& n : doc["responder_negatives"]) {
    ++checked;
    DYNAMIC_SECTION(n["name"].get<std::string>()) {
      const std::string name = n["name"];
      const auto node = nodeConfig(n["responder"]);
      const Bytes input = hex(n["input_hex"]);
      const Bytes response = hex(n["response_hex"]);
      for (const auto& plan : splitPlans(input.size())) {
        QueuedNonces nonces;
        pushFrameNonce(nonces, response);
        auto stats = freshStats();
        GossipStreamFilter f(Origin::Inbound, node.ring, node.policy, stats, nonces);
        Buffer in, to_agent, to_peer;
        StreamIo io{to_agent, to_peer};
        const FilterStatus st = feed(f, Side::Peer, input, plan, in, io, true);
        CHECK(st == FilterStatus::Close);
        CHECK(contents(to_peer) == response);  // byte for byte, including sealed errMsgs
        CHECK(to_agent.empty());
        const auto reason = f.closeReason();
        if (name == "frame-length-over-20MiB") {
          CHECK(reason == StreamCloseReason::TooLarge);
          CHECK(stats->peer_to_agent.oversize == 1);
        } else if (name == "frame-truncated-then-eof") {
          CHECK(reason == StreamCloseReason::Truncated);
        } else if (name == "plaintext-ping-to-verify-incoming") {
          CHECK(reason == StreamCloseReason::PlaintextRejected);
          CHECK(stats->peer_to_agent.plaintext_refused == 1);
        } else if (name == "unknown-first-byte-7-nokeys") {
          CHECK(reason == StreamCloseReason::Malformed);
        } else {
          CHECK(reason == StreamCloseReason::EncryptedWithoutKeys);
        }
      }
    }
  }
  CHECK(checked == 5);
}

TEST_CASE("gossip_stream_filter: both captured serf TCP directions open with key 0",
          "[gossip][stream][captured]") {
  auto captured = loadVectors("captured/captured.json");
  auto verified = loadVectors("captured/verified.json");
  auto ring = ringFromHex(captured["keys_hex"]);
  auto policy = std::make_shared<const GossipPolicy>();
  const auto& tcp = captured["tcp_streams"][0];
  const auto& trees = verified["tcp_streams"][0];
  struct Case {
    Origin origin;
    const char* bytes;
    const char* tree;
  };
  for (const Case& c : {Case{Origin::Inbound, "client_to_server_hex", "request"},
                        Case{Origin::Outbound, "server_to_client_hex", "response"}}) {
    DYNAMIC_SECTION(c.bytes) {
      auto stats = freshStats();
      GossipStreamFilter f(c.origin, ring, policy, stats);
      Buffer in, to_agent, to_peer;
      StreamIo io{to_agent, to_peer};
      auto wire = hex(tcp[c.bytes]);
      CHECK(feed(f, Side::Peer, wire, {wire.size()}, in, io, true) == FilterStatus::Continue);
      CHECK(f.keyIndex() == trees[c.tree]["opened_with_key_index"].get<int>());
      CHECK(contents(to_agent) == hex(trees[c.tree]["inner_plaintext_hex"]));
      CHECK(stats->peer_to_agent.opened_key_0 == 1);
    }
  }
}

TEST_CASE("gossip_stream_filter: labels on dialled streams", "[gossip][stream][label]") {
  auto doc = loadVectors("labels.json");
  const auto& sf = doc["stream_frame"];
  auto ring = ringOf(hex(doc["key_hex"]));
  auto policy = std::make_shared<GossipPolicy>();
  policy->label = doc["label"].get<std::string>();
  const Bytes plain = hex(sf["plaintext_hex"]);
  const Bytes dialled = hex(sf["dialer_writes_hex"]);

  SECTION("outbound: the label header, then the frame with the label in its AAD") {
    QueuedNonces nonces(hex(sf["nonce_hex"]));
    GossipStreamFilter f(Origin::Outbound, ring, policy, freshStats(), nonces);
    Buffer in, to_agent, to_peer;
    StreamIo io{to_agent, to_peer};
    CHECK(feed(f, Side::Agent, plain, {plain.size()}, in, io, false) == FilterStatus::Continue);
    CHECK(contents(to_peer) == dialled);
  }
  SECTION("inbound: header checked and stripped, frame opened with the label") {
    for (const auto& plan : splitPlans(dialled.size())) {
      GossipStreamFilter f(Origin::Inbound, ring, policy, freshStats());
      Buffer in, to_agent, to_peer;
      StreamIo io{to_agent, to_peer};
      CHECK(feed(f, Side::Peer, dialled, plan, in, io, true) == FilterStatus::Continue);
      CHECK(contents(to_agent) == plain);
    }
  }
  SECTION("inbound: a missing or different label is refused") {
    auto other = std::make_shared<GossipPolicy>(*policy);
    other->label = "dc2";
    for (const auto& [p, bytes] :
         {std::pair{policy, hex(sf["frame_hex"])}, std::pair{other, dialled}}) {
      GossipStreamFilter f(Origin::Inbound, ring, p, freshStats());
      Buffer in, to_agent, to_peer;
      StreamIo io{to_agent, to_peer};
      CHECK(feed(f, Side::Peer, bytes, {bytes.size()}, in, io, true) == FilterStatus::Close);
      CHECK(f.closeReason() == StreamCloseReason::LabelMismatch);
      CHECK(to_agent.empty());
    }
  }
}

TEST_CASE("gossip_stream_filter: verify_incoming off still requires frames to open",
          "[gossip][stream]") {
  auto policy = std::make_shared<GossipPolicy>();
  policy->verify_incoming = false;
  auto ours = ringOf(Bytes(32, 1));
  auto theirs = ringOf(Bytes(32, 2));
  const Bytes ping = fromHex("0080");
  Bytes frame(frameLength(EncryptionVersion::V1, ping.size()));
  REQUIRE(sealFrame(theirs->primary(), EncryptionVersion::V1, systemNonceSource(), ping, "",
                    frame) == frame.size());
  auto stats = freshStats();
  GossipStreamFilter f(Origin::Inbound, ours, policy, stats);
  Buffer in, to_agent, to_peer;
  StreamIo io{to_agent, to_peer};
  CHECK(feed(f, Side::Peer, frame, {frame.size()}, in, io, true) == FilterStatus::Close);
  CHECK(f.closeReason() == StreamCloseReason::AuthFailed);
  CHECK(to_agent.empty());
  CHECK(innermost(contents(to_peer), *ours) ==
        std::pair{int{kErrMsg}, std::string("No installed keys could decrypt the message")});
  CHECK(stats->peer_to_agent.open_failed == 1);
  CHECK(stats->peer_to_agent.error_replies == 1);
}

TEST_CASE("gossip_stream_filter: a second message in one direction closes the stream",
          "[gossip][stream]") {
  GossipStreamFilter f(Origin::Outbound, ringOf(Bytes(16, 1)),
                       std::make_shared<const GossipPolicy>(), freshStats());
  Buffer in, to_agent, to_peer;
  StreamIo io{to_agent, to_peer};
  const Bytes two = fromHex("00800080");
  CHECK(feed(f, Side::Agent, two, {two.size()}, in, io, false) == FilterStatus::Close);
  CHECK(f.closeReason() == StreamCloseReason::UnexpectedBytes);
  CHECK(to_peer.size() == frameLength(EncryptionVersion::V1, 2));  // the first one went out
}

TEST_CASE("gossip_stream_filter: crash shapes and hostile headers never reach the agent",
          "[gossip][stream]") {
  auto policy = std::make_shared<GossipPolicy>();
  policy->verify_incoming = false;
  auto ring = ringOf(Bytes(32, 5));
  const std::string pushpull_nodes_2_40 =
      "0682a54e6f646573cf0000010000000000ac5573657253746174654c656e00";
  // [6] {Nodes: 1, UserStateLen: 0, Join} {Name "n1", Addr, Port 7946, Meta, Incarnation 1,
  // State, Vsn}, as go-msgpack writes them; the tail is the Vsn.
  const std::string pushpull_head = "0683a54e6f64657301ac5573657253746174654c656e00a44a6f696e";
  const std::string node_head =
      "87a44e616d65a26e31a441646472a40afa0001a4506f7274cd1f0aa44d657461a0ab496e6361726e6174696f6e"
      "01a55374617465";
  const std::string pushpull_vsn3_alive = pushpull_head + "c2" + node_head + "00a356736ea3010505";
  const std::string pushpull_vsn3_dead = pushpull_head + "c2" + node_head + "02a356736ea3010505";
  const std::string pushpull_join_vsn0 = pushpull_head + "c3" + node_head + "00a356736ea0";
  const std::string pushpull_join_vsn6 =
      pushpull_head + "c3" + node_head + "00a356736ea6010505020504";
  const std::string pushpull_vsn0 = pushpull_head + "c2" + node_head + "00a356736ea0";
  struct Case {
    const char* name;
    Bytes plain;
    StreamCloseReason reason;
  };
  const std::vector<Case> cases = {
      {"compress to nothing", compressMessage({}), StreamCloseReason::CrashShape},
      {"compressed Nodes 2^40", compressMessage(fromHex(pushpull_nodes_2_40)),
       StreamCloseReason::TooLarge},
      {"plain Nodes 2^40", fromHex(pushpull_nodes_2_40), StreamCloseReason::TooLarge},
      {"compressed frame inside", compressMessage(fromHex("0a00000000")),
       StreamCloseReason::Malformed},
      {"compressed truncated ping", compressMessage(fromHex("0081")), StreamCloseReason::Malformed},
      // Push/pulls whose node state has a short Vsn (memberlist indexes Vsn[0..5]).
      {"alive node with a 3-byte Vsn", fromHex(pushpull_vsn3_alive), StreamCloseReason::CrashShape},
      {"dead node with a 3-byte Vsn", fromHex(pushpull_vsn3_dead), StreamCloseReason::CrashShape},
      {"compressed, 3-byte Vsn", compressMessage(fromHex(pushpull_vsn3_alive)),
       StreamCloseReason::CrashShape},
      {"join with an empty Vsn", fromHex(pushpull_join_vsn0), StreamCloseReason::CrashShape},
      {"compressed join with an empty Vsn", compressMessage(fromHex(pushpull_join_vsn0)),
       StreamCloseReason::CrashShape},
  };
  for (const auto& c : cases) {
    DYNAMIC_SECTION(c.name) {
      for (bool sealed : {false, true}) {
        Bytes wire = c.plain;
        if (sealed) {
          wire.resize(frameLength(EncryptionVersion::V1, c.plain.size()));
          REQUIRE(sealFrame(ring->primary(), EncryptionVersion::V1, systemNonceSource(), c.plain,
                            "", wire) == wire.size());
        }
        GossipStreamFilter f(Origin::Inbound, ring, policy, freshStats());
        Buffer in, to_agent, to_peer;
        StreamIo io{to_agent, to_peer};
        CHECK(feed(f, Side::Peer, wire, {wire.size()}, in, io, true) == FilterStatus::Close);
        CHECK(f.closeReason() == c.reason);
        CHECK(to_agent.empty());
      }
    }
  }
  SECTION("a frame that opens to nothing") {
    Bytes wire(frameLength(EncryptionVersion::V1, 0));
    REQUIRE(sealFrame(ring->primary(), EncryptionVersion::V1, systemNonceSource(), {}, "", wire) ==
            wire.size());
    GossipStreamFilter f(Origin::Inbound, ring, policy, freshStats());
    Buffer in, to_agent, to_peer;
    StreamIo io{to_agent, to_peer};
    CHECK(feed(f, Side::Peer, wire, {wire.size()}, in, io, true) == FilterStatus::Close);
    CHECK(f.closeReason() == StreamCloseReason::CrashShape);
  }
  SECTION("push/pulls with a full Vsn, or none outside a join, pass") {
    for (const auto& hex : {pushpull_join_vsn6, pushpull_vsn0}) {
      for (const Bytes& wire : {fromHex(hex), compressMessage(fromHex(hex))}) {
        GossipStreamFilter f(Origin::Inbound, ring, policy, freshStats());
        Buffer in, to_agent, to_peer;
        StreamIo io{to_agent, to_peer};
        CHECK(feed(f, Side::Peer, wire, {wire.size()}, in, io, true) == FilterStatus::Continue);
        CHECK(contents(to_agent) == wire);
      }
    }
  }
  SECTION("a valid compressed ping passes") {
    const Bytes wire = compressMessage(fromHex("0081a553657175656e01"));
    GossipStreamFilter f(Origin::Inbound, ring, policy, freshStats());
    Buffer in, to_agent, to_peer;
    StreamIo io{to_agent, to_peer};
    CHECK(feed(f, Side::Peer, wire, {wire.size()}, in, io, true) == FilterStatus::Continue);
    CHECK(contents(to_agent) == wire);
    CHECK(f.shadowRefused());
  }
}
