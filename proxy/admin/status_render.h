#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

#include "proxy/admin/admin_server.h"
#include "proxy/datapath/datapath.h"
#include "proxy/observe/peer_census.h"
#include "proxy/runtime_state.h"

namespace sidecrypt::proxy {

// Everything the admin endpoint and `sidecrypt status` show, gathered by the Server.
struct StatusInput {
  explicit StatusInput(const RuntimeState& s) : state(s) {}
  const RuntimeState& state;
  const Datapath* datapath = nullptr;
  const PeerCensus* census = nullptr;
  std::string config_path;
  uint64_t reloads = 0;
  uint64_t reload_failures = 0;
  std::string last_reload_error;
  bool ready = false;
  std::string ready_detail;
  WallClock::time_point started{};
  std::vector<std::pair<std::string, HttpStats>> http;  // the admin and metrics listeners
};

nlohmann::json statusJson(const StatusInput& in);
nlohmann::json peersJson(const PeerCensus& census);
// The gossip member list as seen on the wire, and the agent's own name and address.
nlohmann::json membersJson(const PeerCensus& census);
// A document as JSON text that is always valid UTF-8: the renderers above already make wire text
// valid, and any invalid byte left becomes U+FFFD instead of an exception.
std::string jsonText(const nlohmann::json& j, int indent = 2);
// Prometheus text exposition format 0.0.4.
std::string metricsText(const StatusInput& in);

}  // namespace sidecrypt::proxy
