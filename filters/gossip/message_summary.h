#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "filters/gossip/message_walker.h"

namespace sidecrypt::filters::gossip {

// A MessageVisitor that renders one walk as a one-line layer summary.
//
// Compact: exactly the `layers` summaries of tests/vectors/captured/verified.json (memberlist's
// Go type names, `a > b` for one inner message, `a > [b, c]` for several, Serf user messages as
// `user(serf query _serf_install-key)` / `user(serf queryResponse from n2)`), e.g.
//   hasCrc > compress > compound > [user(serf query _serf_use-key), user(serf join)]
// Detailed: the same tree with the decoded fields, for `sidecrypt decode`, e.g.
//   hasCrc > compound[2] > [alive(n1 10.250.0.1:7946 inc 1), suspect(n3 inc 2 from n1)]
// Problems are appended to the node they belong to as `{ERROR reason}`.
// Key material (Serf key requests/responses) is shown as fingerprints only.
class MessageSummary final : public MessageVisitor {
 public:
  enum class Style : unsigned char { Compact, Detailed };
  explicit MessageSummary(Style style = Style::Compact);

  void clear();
  std::string text() const;
  bool carriesKeyMaterial() const { return key_material_; }

  void enterLayer(const LayerInfo& layer) override;
  void leaveLayer(const LayerInfo& layer) override;
  void onMessage(const Message& msg) override;
  void onNodeState(const NodeState& state) override;
  void onError(const WalkIssue& issue) override;

 private:
  static constexpr size_t kNone = static_cast<size_t>(-1);
  static constexpr size_t kMaxListedNodes = 8;
  struct Node {
    std::string name;
    std::string detail;  // rendered in parentheses after the name
    std::string tail;    // ... followed by this (push/pull: after the listed node states)
    std::string errors;
    std::vector<size_t> kids;
    int depth = -1;
    size_t listed = 0;  // push/pull node states listed in `detail`
  };
  size_t add(Node node);
  std::string render(size_t index) const;
  std::string messageDetail(const Message& m) const;
  std::string serfDetail(const SerfMessage& s) const;

  Style style_;
  std::vector<Node> nodes_;   // nodes_[0] is the (unnamed) root
  std::vector<size_t> open_;  // open layers, innermost last; open_[0] == 0
  size_t last_leaf_ = kNone;  // the message reported by the latest onMessage
  bool key_material_ = false;
};

// The fingerprint of a base64 key (as keys are shown everywhere), "?" if it is not a valid key.
std::string fingerprintOfBase64(std::string_view base64);

// Text of a Serf message in the detailed style ("query _serf_install-key id 7 ltime 2 ...").
std::string describeSerf(const SerfMessage& s, bool detailed);

}  // namespace sidecrypt::filters::gossip
