// Fuzzes the gossip message walker (hasCrc / compound / compress / msgpack bodies / Serf
// messages, packets and streams) and the summary renderers on top of it: any input must be
// walked without crashing, within the walker's caps. Input: [flags][message bytes].
// flags bit 0: walk as a stream message (else a packet), bit 1: inside an encrypted frame,
// bit 2: tight limits (tiny decompression and message caps).
#include <cstdint>
#include <span>
#include <string>

#include "filters/gossip/message_summary.h"
#include "filters/gossip/message_walker.h"

namespace {

using namespace sidecrypt::filters::gossip;

// Checks the callback invariants a consumer (census, key rotation) relies on.
class Checker final : public MessageVisitor {
 public:
  void enterLayer(const LayerInfo& l) override {
    if (l.depth < 0 || l.bytes.empty()) {
      __builtin_trap();
    }
    ++open_;
  }
  void leaveLayer(const LayerInfo& /*l*/) override {
    if (open_-- == 0) {
      __builtin_trap();  // unbalanced layers
    }
  }
  void onMessage(const Message& m) override {
    if (m.bytes.empty() || m.bytes[0] != static_cast<uint8_t>(m.type)) {
      __builtin_trap();
    }
    ++messages_;
  }
  void onError(const WalkIssue& i) override {
    if (i.error == WalkError::None) {
      __builtin_trap();
    }
    ++errors_;
  }
  void done(const WalkResult& r) const {
    if (open_ != 0 || r.messages != messages_ || r.errors != errors_) {
      __builtin_trap();
    }
  }

 private:
  uint32_t open_ = 0;
  uint32_t messages_ = 0;
  uint32_t errors_ = 0;
};

// Forwards to the checker and both summary styles.
class Fanout final : public MessageVisitor {
 public:
  Fanout(Checker& c, MessageSummary& a, MessageSummary& b) : c_(c), a_(a), b_(b) {}
  void enterLayer(const LayerInfo& l) override {
    c_.enterLayer(l);
    a_.enterLayer(l);
    b_.enterLayer(l);
  }
  void leaveLayer(const LayerInfo& l) override {
    c_.leaveLayer(l);
    a_.leaveLayer(l);
    b_.leaveLayer(l);
  }
  void onMessage(const Message& m) override {
    c_.onMessage(m);
    a_.onMessage(m);
    b_.onMessage(m);
  }
  void onNodeState(const NodeState& s) override {
    a_.onNodeState(s);
    b_.onNodeState(s);
  }
  void onError(const WalkIssue& i) override {
    c_.onError(i);
    a_.onError(i);
    b_.onError(i);
  }

 private:
  Checker& c_;
  MessageSummary& a_;
  MessageSummary& b_;
};

WalkLimits tight() {
  WalkLimits l;
  l.max_decompressed = 256;
  l.max_stream_decompressed = 1024;
  l.max_total_decompressed = 512;
  l.max_depth = 3;
  l.max_messages = 4;
  l.max_node_states = 8;
  return l;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static MessageWalker normal;
  static MessageWalker small(tight());
  if (size == 0) {
    return 0;
  }
  const unsigned flags = data[0];
  const std::span<const uint8_t> msg(data + 1, size - 1);
  MessageWalker& walker = (flags & 4) != 0 ? small : normal;
  Checker checker;
  MessageSummary compact(MessageSummary::Style::Compact);
  MessageSummary detailed(MessageSummary::Style::Detailed);
  Fanout all(checker, compact, detailed);
  const WalkResult r = (flags & 1) != 0 ? walker.walkStream(msg, all, (flags & 2) != 0)
                                        : walker.walkPacket(msg, all);
  checker.done(r);
  const std::string a = compact.text();
  const std::string b = detailed.text();
  if (r.messages > 0 && (a.empty() || b.empty())) {
    __builtin_trap();
  }
  return 0;
}
