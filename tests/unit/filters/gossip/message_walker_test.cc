// The message walker against the golden vectors: captured Serf 0.9.4 traffic
// (captured/verified.json one-line summaries), memberlist's own packets (packets.json layer
// trees) and stream exchanges (streams.json).
#include "filters/gossip/message_walker.h"

#include <catch2/catch.hpp>

#include <string>

#include "filters/gossip/gossip_codec.h"
#include "filters/gossip/message_summary.h"
#include "walker_test_util.h"

using namespace sidecrypt::filters::gossip;
using namespace sidecrypt::test::gossip;
using nlohmann::json;

namespace {

std::string hexOf(const std::string& s) {
  return toHexString(
      std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

Bytes openPacket(const sidecrypt::filters::keyring::KeySet& ring, const Bytes& sealed, int& index) {
  Bytes out(sealed.size());
  const OpenResult r = openPayload(ring, sealed, {}, out);
  REQUIRE(r.ok());
  index = r.key_index;
  out.resize(r.length);
  return out;
}

Bytes openStreamFrame(const sidecrypt::filters::keyring::KeySet& ring, const Bytes& frame,
                      int& index) {
  Bytes out(frame.size());
  const OpenResult r = openFrame(ring, frame, "", out);
  index = r.key_index;
  if (!r.ok()) {
    return {};
  }
  out.resize(r.length);
  return out;
}

// Compares one Serf message the walker decoded with the generator's decode of it.
void checkSerf(const SeenSerf& s, const json& want) {
  CHECK(s.decoded);
  CHECK(s.type == want["serf_type"].get<int>());
  const json& b = want["body"];
  CHECK(s.ltime == b["LTime"].get<uint64_t>());
  if (b.contains("Name")) {
    CHECK(s.name == b["Name"].get<std::string>());
    CHECK(s.id == b["ID"].get<uint32_t>());
    CHECK(s.source_node == b["SourceNode"].get<std::string>());
    CHECK(s.port == b["Port"].get<uint16_t>());
    CHECK(s.timeout_ns == b["Timeout"].get<int64_t>());
    CHECK(s.addr ==
          "10.250.0." + std::string(b["Addr"].get<std::string>() == "hex:0afa0001" ? "1" : "2"));
  }
  if (b.contains("From")) {
    CHECK(s.from == b["From"].get<std::string>());
    CHECK(s.id == b["ID"].get<uint32_t>());
  }
  if (b.contains("Node")) {
    CHECK(s.node == b["Node"].get<std::string>());
  }
  if (!want.contains("payload_decoded")) {
    CHECK(s.key_type == -1);
    return;
  }
  const json& p = want["payload_decoded"];
  CHECK(s.key_type == p["serf_type"].get<int>());
  if (p["serf_type"] == 7) {
    CHECK(s.key == p["body"]["Key"].get<std::string>());
  } else {
    CHECK(s.result == p["body"]["Result"].get<bool>());
    CHECK(s.message == p["body"]["Message"].get<std::string>());
    CHECK(s.primary_key == p["body"]["PrimaryKey"].get<std::string>());
    CHECK(s.key_count == (p["body"]["Keys"].is_null() ? 0 : p["body"]["Keys"].size()));
  }
}

// The walker's leaves against a layer tree's leaves (packets.json / streams.json bodies).
void checkLeaves(const std::vector<SeenMessage>& got, const json& tree) {
  std::vector<json> want;
  leavesOf(tree, want);
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    const SeenMessage& m = got[i];
    CHECK(m.decoded);
    CHECK(static_cast<int>(m.type) == want[i]["type"].get<int>());
    json body = segment(want[i], "msgpack");
    if (body.is_null() || !body.is_object()) {
      continue;
    }
    if (body.contains("SeqNo")) {
      CHECK(m.seq_no == body["SeqNo"].get<uint32_t>());
    }
    if (body.contains("Node")) {
      CHECK(m.node == body["Node"].get<std::string>());
    }
    if (body.contains("SourceNode")) {
      CHECK(m.source_node == body["SourceNode"].get<std::string>());
      CHECK(m.source_port == body["SourcePort"].get<uint16_t>());
    }
    if (body.contains("From")) {
      CHECK(m.from == body["From"].get<std::string>());
    }
    if (body.contains("Incarnation")) {
      CHECK(m.incarnation == body["Incarnation"].get<uint32_t>());
    }
    if (body.contains("Addr")) {  // packet trees render bytes in base64
      CHECK(m.addr == ipText(base64(body["Addr"].get<std::string>())).view());
      CHECK(m.port == body["Port"].get<uint16_t>());
    }
    if (body.contains("Error")) {
      CHECK(m.error == body["Error"].get<std::string>());
    }
    if (body.contains("UserStateLen")) {
      CHECK(m.nodes == body["Nodes"].get<uint64_t>());
      CHECK(m.user_state_len == body["UserStateLen"].get<uint64_t>());
      CHECK(m.join == body["Join"].get<bool>());
    }
    if (body.contains("UserMsgLen")) {
      CHECK(m.payload_len == body["UserMsgLen"].get<uint64_t>());
    }
  }
}

// Node states of the (single) push/pull in a stream tree.
void checkNodeStates(const std::vector<SeenNode>& got, const json& tree) {
  std::vector<json> leaves;
  leavesOf(tree, leaves);
  std::vector<json> want;
  for (const auto& s : leaves.front()["segments"]) {
    if (s["what"].get<std::string>().rfind("msgpack pushNodeState", 0) == 0) {
      want.push_back(s["decoded"]);
    }
  }
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CHECK(got[i].decoded);
    CHECK(got[i].name == want[i]["Name"].get<std::string>());
    CHECK(got[i].addr == want[i]["Addr"].get<std::string>());
    CHECK(got[i].port == want[i]["Port"].get<uint16_t>());
    CHECK(got[i].incarnation == want[i]["Incarnation"].get<uint32_t>());
    CHECK(got[i].state == want[i]["State"].get<int64_t>());
  }
}

}  // namespace

TEST_CASE("message_walker: every captured Serf packet matches verified.json's summary",
          "[gossip][walker][vectors]") {
  const json cap = loadVectors("captured/captured.json");
  const json ver = loadVectors("captured/verified.json");
  const auto ring = ringFromHex(cap["keys_hex"]);
  MessageWalker walker;
  REQUIRE(cap["udp"].size() == 46);
  REQUIRE(ver["udp"].size() == cap["udp"].size());
  size_t serf_checked = 0;
  for (size_t i = 0; i < cap["udp"].size(); ++i) {
    const json& want = ver["udp"][i];
    {
      INFO("frame " << want["frame"].get<int>());
      REQUIRE(cap["udp"][i]["frame"] == want["frame"]);
      int index = -1;
      const Bytes plain = openPacket(*ring, hex(cap["udp"][i]["payload_hex"]), index);
      CHECK(index == want["opened_with_key_index"].get<int>());
      MessageSummary summary;
      Recorder rec;
      Tee tee(summary, rec);
      const WalkResult r = walker.walkPacket(plain, tee);
      CHECK(r.ok());
      CHECK(r.messages == rec.messages.size());
      CHECK("encrypted(key " + std::to_string(index) + ") > " + summary.text() ==
            want["layers"].get<std::string>());
      std::vector<SeenSerf> serf;
      for (const auto& m : rec.messages) {
        if (m.has_serf) {
          serf.push_back(m.serf);
        }
      }
      const json empty = json::array();
      const json& want_serf = want.contains("serf_messages") ? want["serf_messages"] : empty;
      REQUIRE(serf.size() == want_serf.size());
      for (size_t k = 0; k < serf.size(); ++k) {
        checkSerf(serf[k], want_serf[k]);
        ++serf_checked;
      }
    }
  }
  CHECK(serf_checked > 40);
}

TEST_CASE("message_walker: the captured join push/pull opens and walks both directions",
          "[gossip][walker][vectors]") {
  const json cap = loadVectors("captured/captured.json");
  const json ver = loadVectors("captured/verified.json");
  const auto ring = ringFromHex(cap["keys_hex"]);
  const json& tcp = cap["tcp_streams"][0];
  const json& want = ver["tcp_streams"][0];
  MessageWalker walker;
  for (const auto& [field, layers, tree] :
       {std::tuple{"client_to_server_hex", "request_layers", "request"},
        std::tuple{"server_to_client_hex", "response_layers", "response"}}) {
    int index = -1;
    const Bytes plain = openStreamFrame(*ring, hex(tcp[field]), index);
    REQUIRE(!plain.empty());
    MessageSummary summary;
    Recorder rec;
    Tee tee(summary, rec);
    CHECK(walker.walkStream(plain, tee, true).ok());
    CHECK("encrypt(key " + std::to_string(index) + ") > " + summary.text() ==
          want[layers].get<std::string>());
    REQUIRE(rec.messages.size() == 1);
    // Serf's messagePushPull (docs/spec/gossip-wire.md §6).
    CHECK(rec.messages[0].user_state_len == 586);
    CHECK(rec.messages[0].has_serf);
    CHECK(rec.messages[0].serf.type == static_cast<int>(SerfType::PushPull));
    CHECK(rec.messages[0].serf.decoded);
    checkLeaves(rec.messages, want[tree]);
    checkNodeStates(rec.nodes, want[tree]);
    CHECK(!rec.nodes.empty());
  }
}

TEST_CASE("message_walker: packets.json gossip packets match their layer trees",
          "[gossip][walker][vectors]") {
  const json doc = loadVectors("packets.json");
  MessageWalker walker;
  int checked = 0;
  for (const auto& v : doc["vectors"]) {
    if (v["kind"] != "gossip") {
      continue;
    }
    {
      INFO(v["name"].get<std::string>());
      const bool encrypted = v["version"].get<int>() >= 0;
      const json& tree = encrypted ? v["layers"]["inner"][0] : v["layers"];
      const Bytes plain =
          encrypted ? hex(v["layers"]["inner_plaintext_hex"]) : hex(v["sealed_hex"]);
      MessageSummary summary;
      Recorder rec;
      Tee tee(summary, rec);
      CHECK(walker.walkPacket(plain, tee).ok());
      CHECK(summary.text() == summarizeTree(tree));
      checkLeaves(rec.messages, tree);
      ++checked;
    }
  }
  CHECK(checked == 8);
}

TEST_CASE("message_walker: streams.json messages match their layer trees",
          "[gossip][walker][vectors]") {
  const json doc = loadVectors("streams.json");
  MessageWalker walker;
  int walked = 0;
  for (const auto& ex : doc["exchanges"]) {
    for (const auto& [field, tree_name, keys_of] :
         {std::tuple{"request_hex", "request", "responder"},
          std::tuple{"response_hex", "response", "initiator"}}) {
      const Bytes bytes = hex(ex[field]);
      if (bytes.empty()) {
        continue;
      }
      {
        INFO(ex["name"].get<std::string>() << " " << tree_name);
        const json& tree = ex[tree_name];
        Bytes plain = bytes;
        const json* inner = &tree;
        bool in_frame = false;
        if (tree["type"] == 10) {
          int index = -1;
          const auto ring = ringFromHex(ex[keys_of]["keyring_hex"]);
          plain = openStreamFrame(*ring, bytes, index);
          CHECK(index == tree["opened_with_key_index"].get<int>());
          if (index < 0) {
            CHECK(plain.empty());
            continue;  // the vector records that these keys cannot open it
          }
          inner = &tree["inner"][0];
          in_frame = true;
        }
        MessageSummary summary;
        Recorder rec;
        Tee tee(summary, rec);
        CHECK(walker.walkStream(plain, tee, in_frame).ok());
        CHECK(summary.text() == summarizeTree(*inner));
        checkLeaves(rec.messages, *inner);
        if (rec.messages.size() == 1 && rec.messages[0].type == MsgType::PushPull) {
          checkNodeStates(rec.nodes, *inner);
        }
        ++walked;
      }
    }
  }
  CHECK(walked > 0);
}

TEST_CASE("message_walker: an unopened frame is reported as one encrypt message",
          "[gossip][walker][vectors]") {
  const json cap = loadVectors("captured/captured.json");
  const Bytes frame = hex(cap["tcp_streams"][0]["client_to_server_hex"]);
  MessageWalker walker;
  MessageSummary summary(MessageSummary::Style::Detailed);
  Recorder rec;
  Tee tee(summary, rec);
  CHECK(walker.walkStream(frame, tee).ok());
  REQUIRE(rec.messages.size() == 1);
  CHECK(rec.messages[0].type == MsgType::Encrypt);
  CHECK(summary.text() == "encrypt(L 245 v1)");
  // Inside a frame there is no second frame.
  Recorder inner;
  CHECK(walker.walkStream(frame, inner, true).first_error == WalkError::UnsupportedType);
}

TEST_CASE("message_walker: detailed summaries show fields and key fingerprints, never keys",
          "[gossip][walker][vectors]") {
  const json cap = loadVectors("captured/captured.json");
  const auto ring = ringFromHex(cap["keys_hex"]);
  MessageWalker walker;
  std::string all;
  for (const auto& u : cap["udp"]) {
    int index = -1;
    const Bytes plain = openPacket(*ring, hex(u["payload_hex"]), index);
    MessageSummary summary(MessageSummary::Style::Detailed);
    walker.walkPacket(plain, summary);
    all += summary.text() + "\n";
    if (u["frame"] == 11) {
      CHECK(summary.text() ==
            "hasCrc > compound[2] > [alive(n1 10.250.0.1:7946 inc 1), "
            "alive(n2 10.250.0.2:7946 inc 1)]");
    }
    if (u["frame"] == 30) {
      CHECK(summary.carriesKeyMaterial());
    }
  }
  // K2's fingerprint appears (install/use queries, list responses); no form of a key does.
  const std::string fp2 = ring->fingerprint(1);
  CHECK(all.find("key " + fp2) != std::string::npos);
  CHECK(all.find("primary " + fp2) != std::string::npos);
  CHECK(all.find("_serf_install-key id ") != std::string::npos);
  for (const auto& k : cap["keys_base64"]) {
    CHECK(all.find(k.get<std::string>()) == std::string::npos);
  }
  for (const auto& k : cap["keys_hex"]) {
    CHECK(all.find(k.get<std::string>()) == std::string::npos);
    CHECK(all.find(hexOf(str(std::span<const uint8_t>(hex(k))))) == std::string::npos);
  }
  CHECK(all.find("sidecrypt-capture-key") == std::string::npos);
}

TEST_CASE("memberlist message types: one list gives the byte, the enum and the Go name",
          "[walker]") {
  // memberlist 0.2.2 net.go: pingMsg = 0 ... errMsg = 13, hasLabelMsg = 244.
  const char* go[] = {"ping",    "indirectPing", "ackResp",  "suspect", "alive",
                      "dead",    "pushPull",     "compound", "user",    "compress",
                      "encrypt", "nackResp",     "hasCrc",   "err"};
  for (uint8_t b = 0; b < 14; ++b) {
    CHECK(std::string(messageTypeName(b)) == go[b]);
  }
  CHECK(std::string(messageTypeName(244)) == "hasLabel");
  CHECK(std::string(messageTypeName(14)) == "unknown");
  CHECK(std::string(messageTypeName(243)) == "unknown");
  CHECK(kEncryptMsg == 10);
  CHECK(kCompressMsg == 9);
  CHECK(kCompoundMsg == 7);
  CHECK(kHasCrcMsg == 12);
  CHECK(kErrMsg == 13);
  CHECK(kHasLabelMsg == 244);
  CHECK(typeByte(MsgType::PushPull) == 6);
}
