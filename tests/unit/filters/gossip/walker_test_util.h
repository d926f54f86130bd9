#pragma once

// Helpers for the message walker tests: a visitor that copies what it sees (the walker's views
// are valid only during a callback) and a decoder of the vectors' layer trees into
// memberlist's one-line summary (the Go generator's `summarize`, tests/vectors/README.md).

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "filters/gossip/message_summary.h"
#include "filters/gossip/message_walker.h"
#include "gossip_test_util.h"

namespace sidecrypt::test::gossip {

inline std::string str(std::string_view v) {
  return std::string(v);
}
inline std::string str(std::span<const uint8_t> v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size());
}

struct SeenSerf {
  int type = -1;
  bool decoded = false;
  uint64_t ltime = 0;
  std::string node, name, from, source_node, addr, message, primary_key, key;
  uint32_t id = 0, flags = 0, key_count = 0;
  uint16_t port = 0;
  int64_t timeout_ns = 0;
  int key_type = -1;
  bool result = false;
  int relayed_type = -1;
  std::string relay_dest_name;
};

struct SeenMessage {
  filters::gossip::MsgType type{};
  bool decoded = false;
  int depth = 0;
  uint32_t seq_no = 0, incarnation = 0;
  std::string node, source_node, from, addr, source_addr, error;
  uint16_t port = 0, source_port = 0;
  uint64_t nodes = 0, user_state_len = 0, payload_len = 0;
  bool join = false;
  bool has_serf = false;
  SeenSerf serf;
};

struct SeenNode {
  std::string name, addr;
  uint16_t port = 0;
  uint32_t incarnation = 0;
  int64_t state = 0;
  bool decoded = false;
};

class Recorder final : public filters::gossip::MessageVisitor {
 public:
  std::vector<SeenMessage> messages;
  std::vector<SeenNode> nodes;
  std::vector<filters::gossip::WalkIssue> errors;
  std::vector<std::string> layers;  // "enter hasCrc", "leave hasCrc", ...

  void enterLayer(const filters::gossip::LayerInfo& l) override {
    layers.push_back(std::string("enter ") + filters::gossip::messageTypeName(uint8_t(l.type)));
  }
  void leaveLayer(const filters::gossip::LayerInfo& l) override {
    layers.push_back(std::string("leave ") + filters::gossip::messageTypeName(uint8_t(l.type)));
  }
  void onMessage(const filters::gossip::Message& m) override {
    SeenMessage s;
    s.type = m.type;
    s.decoded = m.decoded;
    s.depth = m.depth;
    s.seq_no = m.seq_no;
    s.incarnation = m.incarnation;
    s.node = str(m.node);
    s.source_node = str(m.source_node);
    s.from = str(m.from);
    s.addr = m.addr.empty() ? "" : str(filters::gossip::ipText(m.addr).view());
    s.source_addr = m.source_addr.empty() ? "" : str(filters::gossip::ipText(m.source_addr).view());
    s.error = str(m.error);
    s.port = m.port;
    s.source_port = m.source_port;
    s.nodes = m.nodes;
    s.user_state_len = m.user_state_len;
    s.payload_len = m.payload.size();
    s.join = m.join;
    s.has_serf = m.has_serf;
    if (m.has_serf) {
      s.serf = copySerf(m.serf);
    }
    messages.push_back(s);
  }
  void onNodeState(const filters::gossip::NodeState& n) override {
    nodes.push_back({str(n.name), str(filters::gossip::ipText(n.addr).view()), n.port,
                     n.incarnation, n.state, n.decoded});
  }
  void onError(const filters::gossip::WalkIssue& issue) override { errors.push_back(issue); }

  static SeenSerf copySerf(const filters::gossip::SerfMessage& m) {
    SeenSerf s;
    s.type = m.type;
    s.decoded = m.decoded;
    s.ltime = m.ltime;
    s.node = str(m.node);
    s.name = str(m.name);
    s.from = str(m.from);
    s.source_node = str(m.source_node);
    s.addr = m.addr.empty() ? "" : str(filters::gossip::ipText(m.addr).view());
    s.message = str(m.message);
    s.primary_key = str(m.primary_key);
    s.key = str(m.key);
    s.id = m.id;
    s.flags = m.flags;
    s.key_count = m.key_count;
    s.port = m.port;
    s.timeout_ns = m.timeout_ns;
    s.key_type = m.key_type;
    s.result = m.result;
    s.relayed_type = m.relayed_type;
    s.relay_dest_name = str(m.relay_dest_name);
    return s;
  }
};

// Forwards every callback to two visitors.
class Tee final : public filters::gossip::MessageVisitor {
 public:
  Tee(MessageVisitor& a, MessageVisitor& b) : a_(a), b_(b) {}
  void enterLayer(const filters::gossip::LayerInfo& l) override {
    a_.enterLayer(l);
    b_.enterLayer(l);
  }
  void leaveLayer(const filters::gossip::LayerInfo& l) override {
    a_.leaveLayer(l);
    b_.leaveLayer(l);
  }
  void onMessage(const filters::gossip::Message& m) override {
    a_.onMessage(m);
    b_.onMessage(m);
  }
  void onNodeState(const filters::gossip::NodeState& n) override {
    a_.onNodeState(n);
    b_.onNodeState(n);
  }
  void onError(const filters::gossip::WalkIssue& i) override {
    a_.onError(i);
    b_.onError(i);
  }

 private:
  MessageVisitor& a_;
  MessageVisitor& b_;
};

// The Go generator's summarize() over a layer tree (packets.json `layers`, streams.json
// `request`/`response`), without Serf details (the vector trees carry none).
inline std::string summarizeTree(const nlohmann::json& t) {
  std::string name = t["type_name"].get<std::string>();
  if (t.contains("opened_with_key_index")) {
    const std::string suffix = " packet";
    if (name.size() > suffix.size() && name.ends_with(suffix)) {
      name.resize(name.size() - suffix.size());
    }
    name += "(key " + std::to_string(t["opened_with_key_index"].get<int>()) + ")";
  }
  std::vector<std::string> kids;
  if (t.contains("inner")) {
    for (const auto& in : t["inner"]) {
      kids.push_back(summarizeTree(in));
    }
  }
  if (kids.empty()) {
    return name;
  }
  if (kids.size() == 1) {
    return name + " > " + kids[0];
  }
  std::string joined;
  for (const auto& k : kids) {
    joined += (joined.empty() ? "" : ", ") + k;
  }
  return name + " > [" + joined + "]";
}

// Every leaf node of a tree, depth first (the order the walker reports messages in).
inline void leavesOf(const nlohmann::json& t, std::vector<nlohmann::json>& out) {
  if (!t.contains("inner") || t["inner"].empty()) {
    out.push_back(t);
    return;
  }
  for (const auto& in : t["inner"]) {
    leavesOf(in, out);
  }
}

// The `decoded` value of the first segment whose description starts with `what`.
inline nlohmann::json segment(const nlohmann::json& t, const std::string& what) {
  for (const auto& s : t["segments"]) {
    if (s["what"].get<std::string>().rfind(what, 0) == 0 && s.contains("decoded")) {
      return s["decoded"];
    }
  }
  return nullptr;
}

inline Bytes base64(const std::string& in) {
  static const std::string kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  Bytes out;
  uint32_t acc = 0;
  int bits = 0;
  for (const char c : in) {
    const auto pos = kAlphabet.find(c);
    if (pos == std::string::npos) {
      continue;  // padding
    }
    acc = (acc << 6) | static_cast<uint32_t>(pos);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>(acc >> bits));
    }
  }
  return out;
}

}  // namespace sidecrypt::test::gossip
