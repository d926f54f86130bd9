#include "proxy/admin/status_render.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <map>
#include <set>
#include <string>

#include "filters/common/safe_text.h"
#include "proxy/admin/ca_view.h"
#include "proxy/observe/cert_expiry.h"
#include "proxy/version.h"

namespace sidecrypt::proxy {

namespace fg = filters::gossip;
using nlohmann::json;

namespace {

int64_t unixSeconds(WallClock::time_point t) {
  if (t == WallClock::time_point{}) {
    return 0;
  }
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

json ringJson(const filters::keyring::KeySetConstSharedPtr& keys) {
  json out = json::array();
  if (keys) {
    for (size_t i = 0; i < keys->size(); ++i) {
      out.push_back({{"index", i}, {"fingerprint", keys->fingerprint(i)}, {"primary", i == 0}});
    }
  }
  return out;
}

// The UDP relays' counters summed per direction (one relay per family and direction), labelled
// as the gossip counters are (filters::flowName): agent_to_peer, peer_to_agent.
constexpr const char* kAgentToPeer = filters::flowName(Flow::Outbound);
constexpr const char* kPeerToAgent = filters::flowName(Flow::Inbound);
constexpr std::pair<const char*, Flow> kUdpDirections[] = {{kAgentToPeer, Flow::Outbound},
                                                           {kPeerToAgent, Flow::Inbound}};

UdpRelayStats udpStats(const Datapath& dp, Flow flow) {
  UdpRelayStats sum;
  for (const auto& r : dp.relays()) {
    if (r->flow() == flow) {
      sum += r->stats();
    }
  }
  return sum;
}

template <class Counters>
json countersJson(const Counters& c) {
  json out = json::object();
  fg::forEachCounter(c, [&out](const char* name, uint64_t v) { out[name] = v; });
  return out;
}

// A label value escaped for the Prometheus text format (and made valid UTF-8: it comes off the
// wire).
std::string esc(const std::string& v) {
  return filters::promLabelValue(v);
}

// Wire text (node names, certificate names) as a JSON string: nlohmann::json throws when it
// dumps invalid UTF-8, so invalid bytes become U+FFFD here (filters/common/safe_text.h).
std::string wireText(const std::string& v) {
  return filters::utf8Safe(v);
}

json wireTexts(const std::vector<std::string>& v) {
  json out = json::array();
  for (const auto& s : v) {
    out.push_back(wireText(s));
  }
  return out;
}

class MetricWriter {
 public:
  void family(const char* name, const char* type, const char* help) {
    out_ += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  }
  void sample(const char* name, const std::string& labels, uint64_t value) {
    out_ += name;
    if (!labels.empty()) {
      out_ += "{" + labels + "}";
    }
    out_ += " " + std::to_string(value) + "\n";
  }
  void signedSample(const char* name, const std::string& labels, int64_t value) {
    out_ += name;
    if (!labels.empty()) {
      out_ += "{" + labels + "}";
    }
    out_ += " " + std::to_string(value) + "\n";
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

namespace rt = filters::rpc_tls;

const rt::CertInventory* certificatesOf(const RuntimeState& state) {
  return state.rpc && state.rpc->certificates ? state.rpc->certificates.get() : nullptr;
}

// One series per certificate sidecrypt loaded itself: bounded by its own configuration, never
// by peers. Expiry is computed here, at scrape time, so it keeps falling below zero once the
// certificate has expired.
void certificateSamples(MetricWriter& w, const RuntimeState& state, int64_t now) {
  const auto* inventory = certificatesOf(state);
  if (inventory == nullptr || inventory->certs.empty()) {
    return;
  }
  std::vector<std::pair<std::string, const rt::CertificateInfo*>> series;
  std::set<std::string> seen;  // one series per label set, even for a CA listed twice
  for (const auto& c : inventory->certs) {
    std::string labels = std::string("role=\"") + rt::certRoleName(c.role) + "\",file=\"" +
                         esc(c.file) + "\",subject=\"" + esc(c.subject) + "\",serial=\"" +
                         esc(c.serial) + "\"";
    if (seen.insert(labels).second) {
      series.emplace_back(std::move(labels), &c);
    }
  }
  w.family("sidecrypt_tls_certificate_expiry_seconds", "gauge",
           "Seconds until the notAfter of each certificate sidecrypt loaded (leaf, intermediate, "
           "ca), computed at scrape time: negative once expired.");
  for (const auto& [labels, c] : series) {
    w.signedSample("sidecrypt_tls_certificate_expiry_seconds", labels, c->not_after - now);
  }
  w.family("sidecrypt_tls_certificate_not_before_seconds", "gauge",
           "Unix time of the notBefore of each certificate sidecrypt loaded (valid from then).");
  for (const auto& [labels, c] : series) {
    w.signedSample("sidecrypt_tls_certificate_not_before_seconds", labels, c->not_before);
  }
}

template <class Counters>
void gossipSamples(MetricWriter& w, const char* metric, const char* pool, const char* dir,
                   const Counters& c) {
  fg::forEachCounter(c, [&](const char* name, uint64_t v) {
    std::string n = name;
    std::string labels = std::string("pool=\"") + pool + "\",direction=\"" + dir + "\",";
    if (n.rfind("opened_key_", 0) == 0) {
      labels += "result=\"opened\",key_index=\"" + n.substr(11) + "\"";
    } else {
      labels += "result=\"" + n + "\"";
    }
    w.sample(metric, labels, v);
  });
}

uint64_t rolloutStage(bool outgoing, bool incoming) {
  if (incoming) {
    return outgoing ? 3 : 0;
  }
  return outgoing ? 2 : 1;
}

std::vector<std::string> ringFingerprints(const RuntimeState& state) {
  std::vector<std::string> out;
  for (const auto& keys : {state.lan_keys, state.wan_keys}) {
    for (size_t i = 0; keys && i < keys->size(); ++i) {
      if (std::find(out.begin(), out.end(), keys->fingerprint(i)) == out.end()) {
        out.push_back(keys->fingerprint(i));
      }
    }
  }
  return out;
}

// Per configured CA (never per peer): the remove-ca check, and which direction's peers present
// chains ending at it. Continues the sidecrypt_check_ok family (written just before).
void caSamples(MetricWriter& w, const StatusInput& in, const CheckContext& ctx) {
  const PeerCensus& census = *in.census;
  const auto cas = configuredCas(in.state);
  std::vector<CaFingerprint> fps;
  fps.reserve(cas.size());
  for (const auto& ca : cas) {
    w.sample("sidecrypt_check_ok", "check=\"remove_ca\",fingerprint=\"" + ca.hex + "\"",
             checkRemoveCa(census, ctx, caCheckSubject(cas, ca.hex)).ok ? 1 : 0);
    fps.push_back(ca.fingerprint);
  }
  const auto uses = caUseCounts(census, ctx.now, ctx.window, fps);
  static constexpr std::pair<filters::Direction, const char*> kDirections[] = {
      {filters::Direction::Inbound, "inbound"}, {filters::Direction::Outbound, "outbound"}};
  w.family("sidecrypt_tls_peer_ca_last_seen_seconds", "gauge",
           "Unix time a peer last presented an RPC TLS chain ending at this configured CA, by "
           "direction (inbound: a client certificate; outbound: the server dialled); 0 = none "
           "the census remembers.");
  for (size_t i = 0; i < cas.size(); ++i) {
    for (const auto& [d, name] : kDirections) {
      w.sample("sidecrypt_tls_peer_ca_last_seen_seconds",
               std::string("direction=\"") + name + "\",ca_fingerprint=\"" + cas[i].hex +
                   "\",ca_subject=\"" + esc(cas[i].subject) + "\"",
               static_cast<uint64_t>(
                   std::max<int64_t>(0, unixSeconds(uses[i].last[static_cast<size_t>(d)]))));
    }
  }
  w.family("sidecrypt_tls_peer_ca_peers", "gauge",
           "Peers whose RPC TLS chain ended at this configured CA within census.window, by "
           "direction.");
  for (size_t i = 0; i < cas.size(); ++i) {
    for (const auto& [d, name] : kDirections) {
      w.sample("sidecrypt_tls_peer_ca_peers",
               std::string("direction=\"") + name + "\",ca_fingerprint=\"" + cas[i].hex + "\"",
               uses[i].peers[static_cast<size_t>(d)]);
    }
  }
}

// The census as bounded gauges: counts over census.window, never one series per peer (unless
// metrics.peer_series asks for the top K plaintext senders).
void censusSamples(MetricWriter& w, const StatusInput& in) {
  const PeerCensus& census = *in.census;
  const Config& c = in.state.config;
  const auto window = std::chrono::seconds(c.census.window_s);
  const auto fps = ringFingerprints(in.state);
  const auto counts = censusCounts(census, census.now(), window, fps);
  w.family("sidecrypt_census_peers", "gauge", "Peers in the census.");
  w.sample("sidecrypt_census_peers", "", census.peers().size());
  w.family("sidecrypt_census_capacity", "gauge",
           "Peers (and, separately, members) the census keeps (census.max_peers).");
  w.sample("sidecrypt_census_capacity", "", census.capacity());
  w.family("sidecrypt_census_window_seconds", "gauge",
           "The window of the census gauges and of sidecrypt_check_ok (census.window).");
  w.sample("sidecrypt_census_window_seconds", "", c.census.window_s);
  w.family("sidecrypt_census_plaintext_peers", "gauge",
           "Peers that sent plaintext (accepted, or refused) within the window.");
  w.sample("sidecrypt_census_plaintext_peers", "", counts.plaintext_peers);
  w.family("sidecrypt_census_refused_peers", "gauge",
           "Peers whose plaintext was refused (verify_incoming on) within the window.");
  w.sample("sidecrypt_census_refused_peers", "", counts.refused_peers);
  w.family("sidecrypt_census_silent_members", "gauge",
           "Live gossip members (not this agent) that sent nothing within the window.");
  w.sample("sidecrypt_census_silent_members", "", counts.silent_members);
  w.family("sidecrypt_census_key_peers", "gauge",
           "Peers whose traffic opened with each keyring key within the window.");
  for (auto [pool, keys] :
       {std::pair{"lan", in.state.lan_keys}, std::pair{"wan", in.state.wan_keys}}) {
    for (size_t i = 0; keys && i < keys->size(); ++i) {
      const auto fp = keys->fingerprint(i);
      size_t n = 0;
      for (const auto& [f, count] : counts.key_peers) {
        n = f == fp ? count : n;
      }
      w.sample("sidecrypt_census_key_peers",
               std::string("pool=\"") + pool + "\",fingerprint=\"" + esc(fp) + "\"", n);
    }
  }
  w.family("sidecrypt_gossip_members", "gauge", "Gossip members seen on the wire, by state.");
  std::map<std::string, uint64_t> states;
  for (const auto& [name, m] : census.members()) {
    ++states[m.state];
  }
  for (const char* st : {"alive", "suspect", "dead", "left"}) {
    w.sample("sidecrypt_gossip_members", std::string("state=\"") + st + "\"", states[st]);
  }
  w.family("sidecrypt_census_evictions_total", "counter",
           "Peers evicted from the census because it was full.");
  w.sample("sidecrypt_census_evictions_total", "", census.evictions());
  w.family("sidecrypt_census_dropped_total", "counter",
           "Peers or members not recorded because the census was full of live members.");
  w.sample("sidecrypt_census_dropped_total", "", census.dropped());
  const CheckContext ctx = checkContext(in, std::nullopt);
  w.family("sidecrypt_check_ok", "gauge",
           "1 when the node-local rollout check would answer yes over the census window.");
  w.sample("sidecrypt_check_ok", "check=\"enforce_incoming\"",
           checkEnforceIncoming(census, ctx).ok ? 1 : 0);
  for (auto [pool, keys] :
       {std::pair{"lan", in.state.lan_keys}, std::pair{"wan", in.state.wan_keys}}) {
    for (size_t i = 0; keys && i < keys->size(); ++i) {
      const auto fp = keys->fingerprint(i);
      w.sample(
          "sidecrypt_check_ok",
          std::string("check=\"remove_key\",pool=\"") + pool + "\",fingerprint=\"" + esc(fp) + "\"",
          checkRemoveKey(census, ctx, fp, primaryPools(in.state, fp)).ok ? 1 : 0);
    }
  }
  caSamples(w, in, ctx);
  if (c.metrics.peer_series == 0) {
    return;
  }
  // Opt-in: the top K peers by plaintext volume (metrics.peer_series).
  std::vector<const PeerRecord*> top;
  top.reserve(census.peers().size());
  for (const auto& [ip, p] : census.peers()) {
    top.push_back(&p);
  }
  const size_t k = std::min<size_t>(c.metrics.peer_series, top.size());
  std::partial_sort(top.begin(), top.begin() + static_cast<std::ptrdiff_t>(k), top.end(),
                    [](const PeerRecord* a, const PeerRecord* b) {
                      return a->plaintextVolume() != b->plaintextVolume()
                                 ? a->plaintextVolume() > b->plaintextVolume()
                                 : a->address < b->address;
                    });
  top.resize(k);
  auto labels = [](const PeerRecord& p) {
    return "peer=\"" + esc(p.address) + "\",node=\"" + esc(p.node) + "\"";
  };
  w.family("sidecrypt_peer_plaintext_total", "counter",
           "Plaintext gossip packets, streams and RPC connections accepted from each peer (top "
           "metrics.peer_series peers by this count).");
  for (const auto* p : top) {
    w.sample("sidecrypt_peer_plaintext_total", labels(*p), p->plaintextVolume());
  }
  w.family("sidecrypt_peer_encrypted_total", "counter",
           "Encrypted gossip packets, streams and TLS RPC connections from each peer (the same "
           "peers).");
  for (const auto* p : top) {
    w.sample("sidecrypt_peer_encrypted_total", labels(*p), p->encryptedVolume());
  }
}

}  // namespace

json statusJson(const StatusInput& in) {
  const Config& c = in.state.config;
  json j;
  j["version"] = std::string(kVersion);
  j["config"] = in.config_path;
  j["ready"] = in.ready;
  j["ready_detail"] = in.ready_detail;
  j["started_unix"] = unixSeconds(in.started);
  j["stages"] = {
      {"gossip",
       {{"encrypt_verify_incoming", c.gossip.encrypt_verify_incoming},
        {"encrypt_verify_outgoing", c.gossip.encrypt_verify_outgoing}}},
      {"rpc",
       {{"verify_incoming", c.tls.verify_incoming},
        {"verify_outgoing", c.tls.verify_outgoing},
        {"verify_server_hostname", c.tls.verify_server_hostname}}},
  };
  j["keyrings"] = {{"lan", ringJson(in.state.lan_keys)}, {"wan", ringJson(in.state.wan_keys)}};
  j["reloads"] = {
      {"ok", in.reloads}, {"failed", in.reload_failures}, {"last_error", in.last_reload_error}};
  j["certificates"] = certificatesJson(in.state, in.now);
  {
    const auto& tw = in.tls_watch;
    json watch = {{"enabled", tw.enabled}, {"directories", tw.directories}};
    tw.counters.forEach([&watch](const char* name, uint64_t v) { watch[name] = v; });
    watch["last"] =
        tw.last_unix_ms == 0
            ? json(nullptr)
            : json{{"unix_ms", tw.last_unix_ms}, {"ok", tw.last_ok}, {"text", tw.last_text}};
    j["tls_watch"] = watch;
  }
  if (in.datapath != nullptr) {
    const auto& t = in.datapath->tcpCounters();
    json tcp = json::object();
    t.forEach([&tcp](const char* name, uint64_t v) { tcp[name] = v; });
    j["tcp"] = tcp;
    json tcp_closed = json::object();
    t.forEachClosed([&tcp_closed](const char* name, uint64_t v) { tcp_closed[name] = v; });
    j["tcp_closed"] = tcp_closed;
    // runtime.loops (docs/architecture.md, "Worker loops"): loop 0 and the RPC worker loops.
    json loops = json::array();
    const auto loads = in.datapath->loopLoads();
    for (size_t i = 0; i < loads.size(); ++i) {
      loops.push_back({{"loop", i},
                       {"sessions_active", loads[i].sessions},
                       {"rpc_handshakes", loads[i].rpc_handshakes}});
    }
    j["loops"] = loops;
    json gossip;
    for (auto [name, pool] :
         {std::pair{"lan", GossipPool::Lan}, std::pair{"wan", GossipPool::Wan}}) {
      const auto& p = in.datapath->pool(pool);
      gossip[name] = {{"packets",
                       {{kAgentToPeer, countersJson(p.datagrams->stats().agent_to_peer)},
                        {kPeerToAgent, countersJson(p.datagrams->stats().peer_to_agent)}}},
                      {"streams",
                       {{kAgentToPeer, countersJson(p.streams->agent_to_peer)},
                        {kPeerToAgent, countersJson(p.streams->peer_to_agent)}}}};
    }
    j["gossip"] = gossip;
    // Members on gossip ports the rules do not capture (intercept.member_ports): the agent's
    // streams to them would leave in plaintext.
    json uncovered = json::array();
    for (const auto* m : in.datapath->uncoveredMembers()) {
      uncovered.push_back(
          {{"name", wireText(m->name)}, {"address", m->address}, {"port", m->port}});
    }
    const auto& ic = c.intercept;
    j["member_ports"] = {
        {"lan", ic.member_ports}, {"wan", ic.wan_member_ports}, {"uncovered_members", uncovered}};
    json rpc = json::object();
    in.datapath->rpcStats().forEach([&rpc](const char* name, uint64_t v) { rpc[name] = v; });
    j["rpc"] = rpc;
    const auto& k = in.datapath->keyQueryStats();
    json key_queries = json::object();
    k.forEach([&key_queries](const char* name, uint64_t v) { key_queries[name] = v; });
    // Deprecated spellings from before the counter list was shared with /metrics, kept so
    // existing readers of /status go on working.
    for (auto [old_name, v] :
         {std::pair{"queries", k.queries}, std::pair{"answers_rewritten", k.answers_rewritten},
          std::pair{"answers_unmatched", k.answers_unmatched},
          std::pair{"self_answers_held", k.self_answers_held},
          std::pair{"self_answers_expired", k.self_answers_expired},
          std::pair{"answers_held_for_commit", k.answers_held_for_commit}}) {
      key_queries[old_name] = v;
    }
    j["key_queries"] = key_queries;
    json udp = json::object();
    for (auto [dir, flow] : kUdpDirections) {
      json one = json::object();
      udpStats(*in.datapath, flow).forEach([&one](const char* name, uint64_t v) { one[name] = v; });
      udp[dir] = one;
    }
    j["udp"] = udp;
  }
  if (in.census != nullptr) {
    const auto& cs = *in.census;
    const auto counts = censusCounts(cs, cs.now(), std::chrono::seconds(c.census.window_s),
                                     ringFingerprints(in.state));
    size_t plaintext = 0;
    for (const auto& [ip, p] : cs.peers()) {
      plaintext += p.last_plaintext != WallClock::time_point{} ? 1 : 0;
    }
    json key_peers = json::object();
    for (const auto& [fp, n] : counts.key_peers) {
      key_peers[fp] = n;
    }
    json by_state = {{"alive", 0}, {"suspect", 0}, {"dead", 0}, {"left", 0}};
    for (const auto& [name, m] : cs.members()) {
      by_state[m.state] = by_state.value(m.state, 0) + 1;
    }
    // Per configured CA: peers whose RPC chains ended at it within the window (a rotation's
    // progress at a glance; /peers?ca= names them).
    json ca_peers = json::object();
    const auto cas = configuredCas(in.state);
    std::vector<CaFingerprint> ca_fps;
    ca_fps.reserve(cas.size());
    for (const auto& ca : cas) {
      ca_fps.push_back(ca.fingerprint);
    }
    const auto ca_uses = caUseCounts(cs, cs.now(), std::chrono::seconds(c.census.window_s), ca_fps);
    for (size_t i = 0; i < cas.size(); ++i) {
      ca_peers[cas[i].hex] = {{"subject", cas[i].subject},
                              {"inbound", ca_uses[i].peers[0]},
                              {"outbound", ca_uses[i].peers[1]}};
    }
    j["census"] = {{"peers", cs.peers().size()},
                   {"ca_peers", ca_peers},
                   {"members", cs.members().size()},
                   {"members_by_state", by_state},
                   {"member_renames", cs.memberRenames()},
                   {"self", {{"node", wireText(cs.selfNode())}, {"address", cs.selfAddress()}}},
                   {"peers_seen_plaintext", plaintext},
                   {"window_seconds", c.census.window_s},
                   {"plaintext_peers", counts.plaintext_peers},
                   {"refused_peers", counts.refused_peers},
                   {"silent_members", counts.silent_members},
                   {"key_peers", key_peers},
                   {"capacity", cs.capacity()},
                   {"evictions", cs.evictions()},
                   {"dropped", cs.dropped()}};
  }
  return j;
}

std::string jsonText(const json& j, int indent) {
  return j.dump(indent, ' ', false, json::error_handler_t::replace);
}

namespace {

// A member's earlier names at its address and port (products that rename on restart).
json earlierNamesJson(const MemberRecord* m) {
  json out = json::array();
  if (m == nullptr) {
    return out;
  }
  for (const auto& u : m->earlier_names) {
    out.push_back({{"name", wireText(u.name)},
                   {"first_seen_unix", unixSeconds(u.first)},
                   {"last_seen_unix", unixSeconds(u.last)}});
  }
  return out;
}

}  // namespace

json membersJson(const PeerCensus& census) {
  json members = json::array();
  for (const auto& [name, m] : census.members()) {
    json entry = {{"name", wireText(m.name)},
                  {"address", m.address},
                  {"port", m.port},
                  {"endpoint", memberEndpoint(m.address, m.port)},
                  {"named_unix", unixSeconds(m.named)},
                  {"earlier_names", earlierNamesJson(&m)},
                  {"state", m.state},
                  {"incarnation", m.incarnation},
                  {"updated_unix", unixSeconds(m.updated)}};
    if (!filters::isValidUtf8(m.name)) {
      entry["name_hex"] = filters::hexOf(m.name);  // the exact bytes, when "name" had to change
    }
    members.push_back(std::move(entry));
  }
  return {{"self", {{"node", wireText(census.selfNode())}, {"address", census.selfAddress()}}},
          {"members", members},
          {"evictions", census.memberEvictions()}};
}

namespace {

json peerJson(const PeerCensus& census, const PeerRecord& p) {
  json keys = json::object();
  for (const auto& use : p.keys_used) {
    keys[use.fingerprint] = {{"count", use.count}, {"last_seen_unix", unixSeconds(use.last)}};
  }
  json cas = json::array();
  for (const auto& use : p.cas_used) {
    cas.push_back(
        {{"direction", use.direction == filters::Direction::Inbound ? "inbound" : "outbound"},
         {"fingerprint", caFingerprintHex(use.fingerprint)},
         {"count", use.count},
         {"last_seen_unix", unixSeconds(use.last)}});
  }
  return {{"address", p.address},
          {"node", wireText(p.node)},
          {"earlier_names", earlierNamesJson(census.memberAt(p.address))},
          {"gossip",
           {{"packets_encrypted", p.packets_encrypted},
            {"packets_plaintext", p.packets_plaintext},
            {"packets_refused", p.packets_refused},
            {"packets_open_failed", p.packets_open_failed},
            {"streams_encrypted", p.streams_encrypted},
            {"streams_plaintext", p.streams_plaintext},
            {"streams_failed", p.streams_failed},
            {"keys", keys}}},
          {"rpc",
           {{"tls", p.rpc_tls},
            {"plaintext", p.rpc_plaintext},
            {"refused", p.rpc_refused},
            {"tls_dns_names", wireTexts(p.tls_dns_names)},
            {"tls_cas", cas}}},
          {"shadow_refused", p.shadow_refused},
          {"first_seen_unix", unixSeconds(p.first_seen)},
          {"last_seen_unix", unixSeconds(p.last_seen)},
          {"last_plaintext_unix", unixSeconds(p.last_plaintext)},
          {"last_shadow_refused_unix", unixSeconds(p.last_shadow_refused)},
          {"last_refused_unix", unixSeconds(p.last_refused)}};
}

}  // namespace

json peersJson(const PeerCensus& census) {
  json out = json::array();
  for (const auto& [ip, p] : census.peers()) {
    out.push_back(peerJson(census, p));
  }
  return out;
}

std::string peersText(const PeerCensus& census) {
  std::string out = "[";
  bool first = true;
  for (const auto& entry : census.peers()) {
    out += first ? "\n" : ",\n";
    out += jsonText(peerJson(census, entry.second), -1);
    first = false;
  }
  out += "\n]\n";
  return out;
}

json peersPageJson(const PeerCensus& census, const PeersQuery& q) {
  const auto now = census.now();
  const auto since = now - std::chrono::seconds(q.within_s);
  // Every match (a peer, or for `silent` a member and its stale peer record if any).
  struct Match {
    std::string_view address;
    const PeerRecord* peer = nullptr;
    const MemberRecord* member = nullptr;
  };
  std::vector<Match> matches;
  if (q.silent) {
    for (const auto& entry : census.members()) {
      const MemberRecord& m = entry.second;
      if (!m.live() || census.isSelf(m)) {
        continue;
      }
      const PeerRecord* p = census.peer(m.address);
      if (p == nullptr || p->last_seen < since) {
        matches.push_back({m.address, p, &m});
      }
    }
  } else {
    for (const auto& entry : census.peers()) {
      const PeerRecord& p = entry.second;
      if (q.plaintext && p.lastPlaintextAny() < since) {
        continue;
      }
      if (!q.key.empty()) {
        const auto* use = p.keyUse(q.key);
        if (use == nullptr || use->last < since) {
          continue;
        }
      }
      if (!q.ca.empty() &&
          std::none_of(p.cas_used.begin(), p.cas_used.end(), [&q, since](const auto& use) {
            return use.last >= since && caFingerprintHex(use.fingerprint).rfind(q.ca, 0) == 0;
          })) {
        continue;
      }
      matches.push_back({p.address, &p, nullptr});
    }
  }
  auto entryJson = [&census](const Match& m) {
    if (m.member == nullptr) {
      return peerJson(census, *m.peer);
    }
    return json{{"address", m.member->address},
                {"node", wireText(m.member->name)},
                {"state", m.member->state},
                {"silent", true},
                {"last_seen_unix", m.peer != nullptr ? unixSeconds(m.peer->last_seen) : 0}};
  };
  const bool by_plaintext = q.by_plaintext && !q.silent;
  if (by_plaintext) {
    // The top plaintext senders first (one page: no `after` in this order).
    std::sort(matches.begin(), matches.end(), [](const Match& a, const Match& b) {
      return a.peer->plaintextVolume() != b.peer->plaintextVolume()
                 ? a.peer->plaintextVolume() > b.peer->plaintextVolume()
                 : a.address < b.address;
    });
  } else {
    std::sort(matches.begin(), matches.end(),
              [](const Match& a, const Match& b) { return a.address < b.address; });
  }
  auto it = matches.begin();
  if (!q.after.empty() && !by_plaintext) {
    it = std::upper_bound(matches.begin(), matches.end(), std::string_view(q.after),
                          [](std::string_view v, const Match& m) { return v < m.address; });
  }
  json page = json::array();
  std::string next;
  for (; it != matches.end(); ++it) {
    if (page.size() >= q.limit) {
      if (!by_plaintext) {
        next = std::string(std::prev(it)->address);
      }
      break;
    }
    page.push_back(entryJson(*it));
  }
  return {{"total", matches.size()},
          {"within_seconds", q.within_s},
          {"next", next.empty() ? json(nullptr) : json(next)},
          {"peers", page}};
}

CheckContext checkContext(const StatusInput& in, std::optional<uint32_t> within_s) {
  CheckContext ctx;
  ctx.now = in.census != nullptr ? in.census->now() : WallClock::now();
  ctx.window = std::chrono::seconds(within_s.value_or(in.state.config.census.window_s));
  ctx.started = in.started;
  if (in.datapath != nullptr) {
    ctx.uncovered = in.datapath->uncoveredMembers();
  }
  return ctx;
}

std::vector<std::string> primaryPools(const RuntimeState& state, std::string_view fp) {
  std::vector<std::string> out;
  for (auto [pool, keys] : {std::pair{"lan", state.lan_keys}, std::pair{"wan", state.wan_keys}}) {
    if (keys && !keys->empty() && keys->primary().fingerprint() == fp) {
      out.emplace_back(pool);
    }
  }
  return out;
}

json checkJson(const CheckAnswer& a) {
  json reasons = json::array();
  for (const auto& r : a.reasons) {
    reasons.push_back(
        {{"class", r.cls}, {"peer", r.peer}, {"node", wireText(r.node)}, {"why", wireText(r.why)}});
  }
  return {{"check", a.subject},
          {"ok", a.ok},
          {"within_seconds", a.within_s},
          {"summary",
           {{"peers_heard", a.peers_heard},
            {"plaintext_peers", a.plaintext_peers},
            {"refused_peers", a.refused_peers},
            {"live_members", a.live_members},
            {"silent_members", a.silent_members},
            {"key_peers", a.key_peers}}},
          {"reasons", reasons}};
}

json certificatesJson(const RuntimeState& state, WallClock::time_point now) {
  json out = json::array();
  const auto* inventory = certificatesOf(state);
  if (inventory == nullptr) {
    return out;
  }
  const int64_t t = unixSeconds(now);
  for (const auto& c : inventory->certs) {
    const int64_t left = c.not_after - t;
    json j = {{"role", rt::certRoleName(c.role)},
              {"file", wireText(c.file)},
              {"subject", wireText(c.subject)},
              {"issuer", wireText(c.issuer)},
              {"serial", c.serial},
              {"sha256", c.sha256},
              {"not_before_unix", c.not_before},
              {"not_before", utcText(c.not_before)},
              {"not_after_unix", c.not_after},
              {"not_after", utcText(c.not_after)},
              {"seconds_left", left},
              {"days_left", left / 86400},
              {"state", rt::certStateName(rt::certState(c, t))}};
    if (c.role == rt::CertRole::Leaf) {
      j["chains_to"] = c.chains_to;
      j["chain_error"] = wireText(c.chain_error);
    }
    out.push_back(std::move(j));
  }
  return out;
}

std::string metricsText(const StatusInput& in) {
  MetricWriter w;
  const Config& c = in.state.config;
  w.family("sidecrypt_up", "gauge", "1 while the process runs.");
  w.sample("sidecrypt_up", "", 1);
  w.family("sidecrypt_ready", "gauge", "1 when rules are installed and listeners bound.");
  w.sample("sidecrypt_ready", "", in.ready ? 1 : 0);
  w.family("sidecrypt_info", "gauge", "The version, and the agent's node name once known.");
  w.sample("sidecrypt_info",
           "version=\"" + esc(std::string(kVersion)) + "\",node=\"" +
               esc(in.census != nullptr ? in.census->selfNode() : c.agent.node_name) + "\"",
           1);
  w.family("sidecrypt_start_time_seconds", "gauge",
           "Unix time the process started (the census began then).");
  w.sample("sidecrypt_start_time_seconds", "", static_cast<uint64_t>(unixSeconds(in.started)));
  w.family("sidecrypt_rollout_stage", "gauge",
           "Rollout stage by track: 1 accept both, 2 encrypt (gossip) / verify (RPC) outgoing, 3 "
           "verify incoming; 0 an unusual mix (incoming verified, outgoing not).");
  w.sample("sidecrypt_rollout_stage", "track=\"gossip\"",
           rolloutStage(c.gossip.encrypt_verify_outgoing, c.gossip.encrypt_verify_incoming));
  w.sample("sidecrypt_rollout_stage", "track=\"rpc\"",
           rolloutStage(c.tls.verify_outgoing, c.tls.verify_incoming));
  w.family("sidecrypt_stage", "gauge", "Rollout settings in force (1 = on).");
  w.sample("sidecrypt_stage", "setting=\"encrypt_verify_incoming\"",
           c.gossip.encrypt_verify_incoming ? 1 : 0);
  w.sample("sidecrypt_stage", "setting=\"encrypt_verify_outgoing\"",
           c.gossip.encrypt_verify_outgoing ? 1 : 0);
  w.sample("sidecrypt_stage", "setting=\"verify_incoming\"", c.tls.verify_incoming ? 1 : 0);
  w.sample("sidecrypt_stage", "setting=\"verify_outgoing\"", c.tls.verify_outgoing ? 1 : 0);
  w.sample("sidecrypt_stage", "setting=\"verify_server_hostname\"",
           c.tls.verify_server_hostname ? 1 : 0);
  w.family("sidecrypt_keyring_keys", "gauge", "Keys in each keyring.");
  w.sample("sidecrypt_keyring_keys", "pool=\"lan\"",
           in.state.lan_keys ? in.state.lan_keys->size() : 0);
  w.sample("sidecrypt_keyring_keys", "pool=\"wan\"",
           in.state.wan_keys ? in.state.wan_keys->size() : 0);
  w.family("sidecrypt_keyring_key", "gauge",
           "One series per key in each keyring, by fingerprint (primary: the key that seals).");
  for (auto [pool, keys] :
       {std::pair{"lan", in.state.lan_keys}, std::pair{"wan", in.state.wan_keys}}) {
    for (size_t i = 0; keys && i < keys->size(); ++i) {
      w.sample("sidecrypt_keyring_key",
               std::string("pool=\"") + pool + "\",fingerprint=\"" + esc(keys->fingerprint(i)) +
                   "\",primary=\"" + (i == 0 ? "true" : "false") + "\"",
               1);
    }
  }
  w.family("sidecrypt_reload_last_success", "gauge",
           "1 when the last reload applied (or none was tried), 0 when it failed.");
  w.sample("sidecrypt_reload_last_success", "", in.last_reload_ok ? 1 : 0);
  w.family("sidecrypt_reloads_total", "counter", "Reloads by result.");
  w.sample("sidecrypt_reloads_total", "result=\"ok\"", in.reloads);
  w.sample("sidecrypt_reloads_total", "result=\"failed\"", in.reload_failures);
  certificateSamples(w, in.state, unixSeconds(in.now));
  w.family("sidecrypt_tls_watch_reloads_total", "counter",
           "Certificate file watch outcomes: applied (a new set swapped in), unchanged (same "
           "contents, nothing done), failed (the new set refused, the running one kept).");
  in.tls_watch.counters.forEach([&w](const char* name, uint64_t v) {
    w.sample("sidecrypt_tls_watch_reloads_total", std::string("result=\"") + name + "\"", v);
  });
  w.family("sidecrypt_tls_watch_last_success", "gauge",
           "1 when the last certificate file change was applied (or none was tried), 0 when it "
           "was refused.");
  w.sample("sidecrypt_tls_watch_last_success", "", in.tls_watch.last_ok ? 1 : 0);
  if (!in.http.empty()) {
    w.family("sidecrypt_http_connections_total", "counter",
             "Connections to the admin and metrics listeners, by listener and outcome.");
    for (const auto& [name, h] : in.http) {
      const std::string l = "listener=\"" + name + "\",result=\"";
      for (auto [result, v] :
           {std::pair{"accepted", h.accepted}, std::pair{"timed_out", h.timed_out},
            std::pair{"shed", h.shed}, std::pair{"refused", h.refused}, std::pair{"bad", h.bad}}) {
        w.sample("sidecrypt_http_connections_total", l + result + "\"", v);
      }
    }
    w.family("sidecrypt_http_requests_total", "counter",
             "Complete requests read by the admin and metrics listeners.");
    for (const auto& [name, h] : in.http) {
      w.sample("sidecrypt_http_requests_total", "listener=\"" + name + "\"", h.requests);
    }
    w.family("sidecrypt_http_connections_active", "gauge",
             "Open connections to the admin and metrics listeners.");
    for (const auto& [name, h] : in.http) {
      w.sample("sidecrypt_http_connections_active", "listener=\"" + name + "\"", h.active);
    }
  }
  if (in.datapath != nullptr) {
    const auto& t = in.datapath->tcpCounters();
    w.family("sidecrypt_tcp_sessions_total", "counter", "TCP sessions by outcome.");
    t.forEach([&w](const char* name, uint64_t v) {
      if (std::string_view(name) != "active" && std::string_view(name) != "accept_errors") {
        w.sample("sidecrypt_tcp_sessions_total", std::string("result=\"") + name + "\"", v);
      }
    });
    w.family("sidecrypt_tcp_sessions_closed_total", "counter",
             "Closed TCP sessions by close reason (done and reset are routine ends).");
    t.forEachClosed([&w](const char* name, uint64_t v) {
      w.sample("sidecrypt_tcp_sessions_closed_total", std::string("reason=\"") + name + "\"", v);
    });
    w.family("sidecrypt_tcp_accept_errors_total", "counter",
             "Failed accepts (each pauses the listener 10 ms to 1 s).");
    w.sample("sidecrypt_tcp_accept_errors_total", "", t.accept_errors);
    w.family("sidecrypt_gossip_members_uncovered", "gauge",
             "Alive or suspect members on a gossip port the netfilter rules do not capture "
             "(the agent's streams to them leave in plaintext; see intercept.member_ports).");
    w.sample("sidecrypt_gossip_members_uncovered", "", in.datapath->uncoveredMembers().size());
    w.family("sidecrypt_tcp_sessions_active", "gauge", "Open TCP sessions.");
    w.sample("sidecrypt_tcp_sessions_active", "", t.active);
    const auto loads = in.datapath->loopLoads();
    w.family("sidecrypt_loop_sessions_active", "gauge",
             "Open TCP sessions by event loop (loop 0: all but the RPC sessions handed to the "
             "worker loops; runtime.loops).");
    for (size_t i = 0; i < loads.size(); ++i) {
      w.sample("sidecrypt_loop_sessions_active", "loop=\"" + std::to_string(i) + "\"",
               loads[i].sessions);
    }
    w.family("sidecrypt_loop_rpc_handshakes_total", "counter",
             "Completed RPC TLS handshakes by the event loop that ran them.");
    for (size_t i = 0; i < loads.size(); ++i) {
      w.sample("sidecrypt_loop_rpc_handshakes_total", "loop=\"" + std::to_string(i) + "\"",
               loads[i].rpc_handshakes);
    }
    const std::pair<const char*, GossipPool> pools[] = {{"lan", GossipPool::Lan},
                                                        {"wan", GossipPool::Wan}};
    w.family("sidecrypt_gossip_packets_total", "counter",
             "Gossip UDP packets by pool, direction and result (opened: by key index).");
    for (auto [name, pool] : pools) {
      const auto& p = in.datapath->pool(pool);
      gossipSamples(w, "sidecrypt_gossip_packets_total", name, kAgentToPeer,
                    p.datagrams->stats().agent_to_peer);
      gossipSamples(w, "sidecrypt_gossip_packets_total", name, kPeerToAgent,
                    p.datagrams->stats().peer_to_agent);
    }
    w.family("sidecrypt_gossip_streams_total", "counter",
             "Gossip TCP stream messages by pool, direction and result.");
    for (auto [name, pool] : pools) {
      const auto& p = in.datapath->pool(pool);
      gossipSamples(w, "sidecrypt_gossip_streams_total", name, kAgentToPeer,
                    p.streams->agent_to_peer);
      gossipSamples(w, "sidecrypt_gossip_streams_total", name, kPeerToAgent,
                    p.streams->peer_to_agent);
    }
    w.family("sidecrypt_key_queries_total", "counter",
             "Serf key-manager queries handled for the agent, by outcome.");
    const auto& k = in.datapath->keyQueryStats();
    k.forEach([&w](const char* name, uint64_t v) {
      w.sample("sidecrypt_key_queries_total", std::string("outcome=\"") + name + "\"", v);
    });
    w.family("sidecrypt_udp_relay_packets_total", "counter",
             "Gossip UDP packets through the capture sockets, by direction and result.");
    for (const auto& [dir, flow] : kUdpDirections) {
      const std::string label = std::string("direction=\"") + dir + "\",result=\"";
      udpStats(*in.datapath, flow).forEach([&w, &label](const char* name, uint64_t v) {
        w.sample("sidecrypt_udp_relay_packets_total", label + name + "\"", v);
      });
    }
    w.family("sidecrypt_rpc_total", "counter", "RPC port events (Consul 8300).");
    in.datapath->rpcStats().forEach([&w](const char* name, uint64_t v) {
      w.sample("sidecrypt_rpc_total", std::string("event=\"") + name + "\"", v);
    });
  }
  if (in.census != nullptr) {
    censusSamples(w, in);
  }
  return w.take();
}

}  // namespace sidecrypt::proxy
