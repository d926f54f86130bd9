#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proxy/admin/admin_server.h"
#include "proxy/datapath/datapath.h"
#include "proxy/observe/peer_census.h"
#include "proxy/observe/rollout_check.h"
#include "proxy/runtime_state.h"
#include "proxy/tlswatch/tls_watch.h"

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
  bool last_reload_ok = true;
  std::string last_reload_error;
  bool ready = false;
  std::string ready_detail;
  WallClock::time_point started{};
  std::vector<std::pair<std::string, HttpStats>> http;  // the admin and metrics listeners
  // The time certificate expiry is computed against (at each scrape: never a stored value).
  WallClock::time_point now = WallClock::now();
  tlswatch::WatchStatus tls_watch;  // certificate file watch
};

// The certificates sidecrypt loaded itself (leaf, intermediates, CAs) with their state at `now`.
nlohmann::json certificatesJson(const RuntimeState& state, WallClock::time_point now);

nlohmann::json statusJson(const StatusInput& in);
nlohmann::json peersJson(const PeerCensus& census);
// The same array as text, rendered one peer at a time: at 10,000 peers the document is several
// megabytes, and a whole JSON tree of it would cost several times that in memory.
std::string peersText(const PeerCensus& census);

// GET /peers with a query: a filtered, paged view sorted by address.
struct PeersQuery {
  bool plaintext = false;  // peers that sent plaintext (accepted, would be refused, or refused)
  bool silent = false;     // live members (not this agent) that sent nothing
  std::string key;         // peers whose traffic opened with this key fingerprint
  std::string ca;  // peers whose RPC TLS chain ended at a CA whose SHA-256 starts with this (hex)
  uint32_t within_s = 600;  // the window of the filters above (the server passes census.window)
  size_t limit = 1000;
  std::string after;          // the address to continue after (the previous page's "next")
  bool by_plaintext = false;  // sort=plaintext: the top plaintext senders first, one page
};
nlohmann::json peersPageJson(const PeerCensus& census, const PeersQuery& q);

// The context of a rollout check over `window` (census.window when not given).
CheckContext checkContext(const StatusInput& in, std::optional<uint32_t> within_s);
// The pools ("lan", "wan") whose primary key has fingerprint `fp`.
std::vector<std::string> primaryPools(const RuntimeState& state, std::string_view fp);
nlohmann::json checkJson(const CheckAnswer& a);
// The gossip member list as seen on the wire, and the agent's own name and address.
nlohmann::json membersJson(const PeerCensus& census);
// A document as JSON text that is always valid UTF-8: the renderers above already make wire text
// valid, and any invalid byte left becomes U+FFFD instead of an exception.
std::string jsonText(const nlohmann::json& j, int indent = 2);
// Prometheus text exposition format 0.0.4.
std::string metricsText(const StatusInput& in);

}  // namespace sidecrypt::proxy
