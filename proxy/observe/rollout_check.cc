#include "proxy/observe/rollout_check.h"

#include <algorithm>
#include <string>

namespace sidecrypt::proxy {

namespace {

std::string durationText(std::chrono::seconds d) {
  const auto s = d.count();
  if (s < 120) {
    return std::to_string(s) + "s";
  }
  if (s < 7200) {
    return std::to_string(s / 60) + "m";
  }
  return std::to_string(s / 3600) + "h";
}

bool within(WallClock::time_point t, WallClock::time_point since) {
  return t != WallClock::time_point{} && t >= since;
}

// The reasons every check shares: the census cannot answer for a window it did not see whole.
void censusCoverage(const PeerCensus& census, const CheckContext& ctx, CheckAnswer& a) {
  const auto since = ctx.now - ctx.window;
  if (ctx.started > since) {
    a.reasons.push_back(
        {"census_young", "", "",
         "sidecrypt started " +
             durationText(std::chrono::duration_cast<std::chrono::seconds>(ctx.now - ctx.started)) +
             " ago, less than the " + durationText(ctx.window) +
             " window: what peers sent before that is unknown"});
  }
  if (within(census.lossSince(), since)) {
    a.reasons.push_back({"census_full", "", "",
                         "the census was full within the window (" +
                             std::to_string(census.capacity()) + " records; " +
                             std::to_string(census.evictions()) + " evicted, " +
                             std::to_string(census.dropped()) +
                             " not kept): a peer it could not keep may have sent plaintext; raise "
                             "census.max_peers"});
  }
}

}  // namespace

std::string agoText(WallClock::time_point t, WallClock::time_point now) {
  if (t == WallClock::time_point{}) {
    return "never";
  }
  return durationText(std::chrono::duration_cast<std::chrono::seconds>(now - t)) + " ago";
}

CheckAnswer checkEnforceIncoming(const PeerCensus& census, const CheckContext& ctx) {
  CheckAnswer a;
  a.subject = "enforce-incoming (turn gossip encrypt_verify_incoming / RPC verify_incoming on)";
  a.within_s = static_cast<uint32_t>(ctx.window.count());
  const auto since = ctx.now - ctx.window;
  bool gossip_seen = false;
  for (const auto& [ip, p] : census.peers()) {
    if (p.last_seen >= since) {
      ++a.peers_heard;
    }
    gossip_seen =
        gossip_seen ||
        p.packets_encrypted + p.packets_plaintext + p.streams_encrypted + p.streams_plaintext > 0;
    if (within(p.last_refused, since)) {
      ++a.refused_peers;
    }
    const auto last = std::max(p.last_plaintext, p.last_shadow_refused);
    if (within(last, since)) {
      ++a.plaintext_peers;
      a.reasons.push_back(
          {"plaintext", p.address, p.node, "sent plaintext " + agoText(last, ctx.now)});
    } else if (within(p.last_refused, since)) {
      ++a.plaintext_peers;
      a.reasons.push_back({"refused", p.address, p.node,
                           "sent plaintext " + agoText(p.last_refused, ctx.now) +
                               ", refused because verify_incoming is on: it is cut off until it "
                               "encrypts"});
    }
  }
  if (a.peers_heard == 0) {
    a.reasons.push_back(
        {"no_traffic", "", "", "no peer traffic seen in the window: cannot tell who is safe"});
  }
  // A live member that sent nothing in the window is unknown, not safe (memberlist probes every
  // member, so a live one is heard sooner or later; a window shorter than that says "no").
  for (const auto& [name, m] : census.members()) {
    if (!m.live() || census.isSelf(m)) {
      continue;
    }
    ++a.live_members;
    const PeerRecord* p = census.peer(m.address);
    if (p == nullptr || p->last_seen < since) {
      ++a.silent_members;
      a.reasons.push_back({"silent", m.address, m.name,
                           "a live gossip member (" + m.state +
                               ") sent nothing in the window: silent, so not known to be safe"});
    }
  }
  // A member on a gossip port the rules do not capture gets this agent's streams in plaintext.
  for (const auto* m : ctx.uncovered) {
    a.reasons.push_back(
        {"uncovered", m->address, m->name,
         "advertises gossip port " + std::to_string(m->port) +
             ", which the rules do not capture: this agent's streams to it leave in plaintext "
             "(add it to intercept.member_ports)"});
  }
  if (gossip_seen && a.live_members == 0) {
    a.reasons.push_back(
        {"no_members", "", "", "no gossip member list learned yet: cannot cross-check"});
  }
  censusCoverage(census, ctx, a);
  a.ok = a.reasons.empty();
  return a;
}

CheckAnswer checkRemoveKey(const PeerCensus& census, const CheckContext& ctx, std::string_view fp,
                           const std::vector<std::string>& primaries) {
  CheckAnswer a;
  a.subject = "remove-key " + std::string(fp);
  a.within_s = static_cast<uint32_t>(ctx.window.count());
  const auto since = ctx.now - ctx.window;
  for (const auto& pool : primaries) {
    a.reasons.push_back(
        {"primary", "", "",
         "it is the primary key of the " + pool + " keyring: make another key primary first"});
  }
  for (const auto& [ip, p] : census.peers()) {
    if (p.last_seen >= since) {
      ++a.peers_heard;
    }
    const auto* use = p.keyUse(fp);
    if (use != nullptr && use->last >= since) {
      ++a.key_peers;
      a.reasons.push_back({"key_in_use", p.address, p.node,
                           "still sends with this key (" + agoText(use->last, ctx.now) + ")"});
    }
  }
  censusCoverage(census, ctx, a);
  a.ok = a.reasons.empty();
  return a;
}

CheckAnswer checkRemoveCa(const PeerCensus& census, const CheckContext& ctx,
                          const CaCheckSubject& ca) {
  CheckAnswer a;
  a.subject = "remove-ca " + (ca.shown.empty() ? caFingerprintHex(ca.fingerprint) : ca.shown) +
              (ca.subject.empty() ? "" : " (" + ca.subject + ")");
  a.within_s = static_cast<uint32_t>(ctx.window.count());
  const auto since = ctx.now - ctx.window;
  if (!ca.configured) {
    a.reasons.push_back({"unknown_ca", "", "",
                         "no CA loaded from ca_file / ca_path has this SHA-256 fingerprint: "
                         "check the fingerprint (`sidecrypt status` lists the CAs)"});
  }
  for (const auto& local : ca.local_dependents) {
    a.reasons.push_back({"local_certificate", "", "",
                         local +
                             " chains only to this CA: peers could no longer verify it; reissue "
                             "it from another configured CA first"});
  }
  for (const auto& [ip, p] : census.peers()) {
    if (p.last_seen >= since) {
      ++a.peers_heard;
    }
    bool counted = false;
    for (const auto direction : {filters::Direction::Inbound, filters::Direction::Outbound}) {
      const auto* use = p.caUse(direction, ca.fingerprint);
      if (use == nullptr || use->last < since) {
        continue;
      }
      if (!counted) {
        ++a.ca_peers;
        counted = true;
      }
      a.reasons.push_back(
          {"ca_in_use", p.address, p.node,
           std::string(direction == filters::Direction::Inbound
                           ? "dialled in with a client certificate chain ending at this CA ("
                           : "answered our agent's RPC with a server certificate chain ending at "
                             "this CA (") +
               agoText(use->last, ctx.now) + ")"});
    }
  }
  censusCoverage(census, ctx, a);
  a.ok = a.reasons.empty();
  return a;
}

std::vector<CaUseCounts> caUseCounts(const PeerCensus& census, WallClock::time_point now,
                                     std::chrono::seconds window,
                                     const std::vector<CaFingerprint>& cas) {
  std::vector<CaUseCounts> out(cas.size());
  for (size_t i = 0; i < cas.size(); ++i) {
    out[i].fingerprint = cas[i];
  }
  const auto since = now - window;
  for (const auto& [ip, p] : census.peers()) {
    for (const auto& use : p.cas_used) {
      for (auto& c : out) {
        if (c.fingerprint != use.fingerprint) {
          continue;
        }
        const auto d = static_cast<size_t>(use.direction);
        c.last[d] = std::max(c.last[d], use.last);
        if (use.last >= since) {
          ++c.peers[d];
        }
      }
    }
  }
  return out;
}

CensusCounts censusCounts(const PeerCensus& census, WallClock::time_point now,
                          std::chrono::seconds window,
                          const std::vector<std::string>& fingerprints) {
  CensusCounts c;
  const auto since = now - window;
  for (const auto& fp : fingerprints) {
    c.key_peers.emplace_back(fp, 0);
  }
  for (const auto& [ip, p] : census.peers()) {
    if (within(std::max(p.last_plaintext, p.last_shadow_refused), since) ||
        within(p.last_refused, since)) {
      ++c.plaintext_peers;
    }
    if (within(p.last_refused, since)) {
      ++c.refused_peers;
    }
    for (auto& [fp, n] : c.key_peers) {
      const auto* use = p.keyUse(fp);
      if (use != nullptr && use->last >= since) {
        ++n;
      }
    }
  }
  for (const auto& [name, m] : census.members()) {
    if (m.live() && !census.isSelf(m)) {
      const PeerRecord* p = census.peer(m.address);
      if (p == nullptr || p->last_seen < since) {
        ++c.silent_members;
      }
    }
  }
  return c;
}

}  // namespace sidecrypt::proxy
