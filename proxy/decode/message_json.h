#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "filters/gossip/message_walker.h"

namespace sidecrypt::proxy::decode {

// A MessageVisitor that writes one JSON object per memberlist message (`type` is memberlist's
// name; decoded fields in snake_case; Serf messages under `serf`; push/pull node states under
// `nodes`) and one text per walk problem. Key material is written as fingerprints only.
class MessageJson final : public filters::gossip::MessageVisitor {
 public:
  MessageJson(nlohmann::json& messages, std::vector<std::string>& errors)
      : messages_(messages), errors_(errors) {}
  void onMessage(const filters::gossip::Message& m) override;
  void onNodeState(const filters::gossip::NodeState& s) override;
  void onError(const filters::gossip::WalkIssue& issue) override;

 private:
  nlohmann::json& messages_;
  std::vector<std::string>& errors_;
};

nlohmann::json serfJson(const filters::gossip::SerfMessage& s);

}  // namespace sidecrypt::proxy::decode
