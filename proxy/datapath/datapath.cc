#include "proxy/datapath/datapath.h"

// The Datapath's life (start, reload, stop, stats) and its TCP sessions: which filter a
// connection gets, its upstream socket, the per-source limits and deadlines, what a closed session
// leaves in the counters and the census, and the shared preamble budget. The listeners that
// accept the connections are in datapath_listeners.cc, the UDP path in datapath_udp.cc.

#include <malloc.h>
#include <sodium.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "filters/gossip/dskit_stream_processor.h"
#include "filters/gossip/gossip_stream_processor.h"
#include "filters/rpc_tls/rpc_processor.h"
#include "proxy/datapath/cpu_budget.h"
#include "proxy/net/sockets.h"

namespace sidecrypt::proxy {

namespace fg = filters::gossip;
using filters::gossip::GossipStreamProcessor;
using filters::rpc_tls::RpcProcessor;

namespace {

std::shared_ptr<fg::GossipPolicy> policyFrom(const Config& cfg) {
  auto p = std::make_shared<fg::GossipPolicy>();
  p->verify_incoming = cfg.gossip.encrypt_verify_incoming;
  p->verify_outgoing = cfg.gossip.encrypt_verify_outgoing;
  p->label = cfg.gossip.label;
  return p;
}

void setupPool(Datapath::Pool& pool, const Config& cfg,
               const filters::keyring::KeySetConstSharedPtr& keys) {
  pool.policy = policyFrom(cfg);
  pool.keys = keys;
  pool.datagrams = std::make_shared<fg::GossipDatagramFilter>(keys, pool.policy);
  pool.streams = std::make_shared<fg::GossipStreamStats>();
}

// memberlist's TCPTimeout: the receiving agent gives a whole stream this long from its accept
// (DefaultLANConfig 10 s, DefaultWANConfig 30 s). sidecrypt connects the agent only once the
// peer's message passed, so the peer gets the same time for that message.
constexpr uint32_t kGossipStreamDeadlineLanMs = 10'000;
constexpr uint32_t kGossipStreamDeadlineWanMs = 30'000;
// Memory for unfinished first messages, all sessions together (one message may be up to
// memberlist's 20 MiB push/pull limit; a real cluster's are kilobytes to a few MiB).
constexpr size_t kPreambleBudgetBytes = size_t{64} << 20;
constexpr size_t kTrimAfterBytes = size_t{1} << 20;
// Ports of intercept.tproxy_source_ports tried for one spoofed connection (each taken one fails
// its bind at once).
constexpr int kSourcePortAttempts = 16;
}  // namespace

Datapath::Datapath(uv_loop_t* loop, const RuntimeState& state)
    : loop_(loop), config_(state.config), rpc_(state.rpc) {
  // agent.profile needs a restart, so this holds for the life of the data path.
  observer_.setSerfKeyQueries(profileSpeaksSerf(config_.agent.profile));
  // The agent's held answers to its own queries, once sidecrypt has answered for it: delivered
  // in plaintext from the outbound capture port (see UdpRelay::setSelfSourcePort).
  observer_.setSelfSend(
      [this](const SocketAddress& agent, const SocketAddress& dst, std::span<const uint8_t> b) {
        SocketAddress from = agent;
        from.setPort(config_.intercept.outbound_port);
        RawUdpSender& s = dst.family() == AF_INET ? sender4_ : sender6_;
        if (s.queue(from, dst, b)) {
          s.flush();
        }
      });
  // A held answer to a peer's key query, released once the keyring write finished: sealed like
  // any packet of the agent's (the filter applies verify_outgoing and the label), sent from the
  // agent's own address and port. Rare (key rotations only), so it may allocate.
  observer_.setSealedSend([this](GossipPool which, const SocketAddress& agent,
                                 const SocketAddress& dst, std::span<const uint8_t> bytes) {
    Pool& p = which == GossipPool::Lan ? lan_ : wan_;
    std::vector<uint8_t> slot(fg::GossipDatagramFilter::kSealHeadroom + bytes.size() +
                              fg::GossipDatagramFilter::kSealTailroom);
    auto d = fg::Datagram::inSlot(slot, fg::GossipDatagramFilter::kSealHeadroom, bytes.size());
    std::copy(bytes.begin(), bytes.end(), d.data().begin());
    const auto r = p.datagrams->onAgentPacket(d);
    RawUdpSender& s = dst.family() == AF_INET ? sender4_ : sender6_;
    if (r.verdict == fg::Verdict::Forward && s.queue(agent, dst, d.data())) {
      s.flush();
    }
    sodium_memzero(slot.data(), slot.size());
  });
  if (!config_.agent.node_name.empty()) {
    census_.fixSelfName(config_.agent.node_name);
  }
  census_.setCapacity(config_.census.max_peers);
  setupPool(lan_, config_, state.lan_keys);
  setupPool(wan_, config_, state.wan_keys ? state.wan_keys : state.lan_keys);
  preamble_budget_.limit = kPreambleBudgetBytes;
  preamble_budget_.on_over = [this] { shedPreambles(); };
  // The fleet's other gossip ports map to the pool they belong to (intercept.member_ports).
  for (auto [pool, ports] : {std::pair{GossipPool::Lan, &config_.intercept.member_ports},
                             std::pair{GossipPool::Wan, &config_.intercept.wan_member_ports}}) {
    for (uint16_t m : *ports) {
      if (portFor(m) == nullptr) {
        member_specs_.push_back({m, PortProtocol::Gossip, Transport::Both, pool,
                                 std::string(pool == GossipPool::Lan ? "member" : "wan_member") +
                                     "_" + std::to_string(m)});
      }
    }
  }
  census_.setAliveHook([this](const MemberRecord& m) {
    if (m.port == 0 || memberPortCovered(m.port) || m.address == census_.selfAddress()) {
      return;
    }
    const bool first = uncovered_ports_.size() < 256 && uncovered_ports_.insert(m.port).second;
    if (first || uncovered_log_.allow()) {
      spdlog::warn(
          "member {} advertises {}:{}, a gossip port the netfilter rules do not capture: the "
          "agent's TCP streams to it leave in PLAINTEXT. Add {} to intercept.member_ports (or "
          "wan_member_ports), then `sidecrypt rules install` and restart",
          m.name, m.address, m.port, m.port);
    }
  });
}

bool Datapath::memberPortCovered(uint16_t port) const {
  return destPortFor(port) != nullptr;
}

std::vector<const MemberRecord*> Datapath::uncoveredMembers() const {
  std::vector<const MemberRecord*> out;
  for (const auto& [name, m] : census_.members()) {
    if ((m.state == "alive" || m.state == "suspect") && m.port != 0 && !memberPortCovered(m.port) &&
        m.address != census_.selfAddress()) {
      out.push_back(&m);
    }
  }
  return out;
}

Datapath::~Datapath() {
  stop();
  if (spare_fd_ >= 0) {
    ::close(spare_fd_);
  }
}

const PortSpec* Datapath::portFor(uint16_t agent_port) const {
  for (const auto& p : config_.intercept.ports) {
    if (p.port == agent_port) {
      return &p;
    }
  }
  return nullptr;
}

const PortSpec* Datapath::destPortFor(uint16_t port) const {
  if (const PortSpec* p = portFor(port)) {
    return p;
  }
  for (const auto& m : member_specs_) {
    if (m.port == port) {
      return &m;
    }
  }
  return nullptr;
}

bool Datapath::start(std::string& err) {
  if (spare_fd_ < 0) {
    spare_fd_ = openSpareFd();
  }
  if (!startWorkers(err)) {
    stop();
    return false;
  }
  if (trim_timer_ == nullptr) {
    trim_timer_ = new uv_timer_t{};
    uv_timer_init(loop_, trim_timer_);
  }
  const auto& ic = config_.intercept;
  const bool tproxy = ic.mode == InterceptMode::Tproxy;
  bool any_udp = false;
  for (const auto& p : ic.ports) {
    any_udp = any_udp || (p.protocol == PortProtocol::Gossip && p.transport != Transport::Tcp);
  }
  std::vector<int> families = {AF_INET};
  if (ic.ipv6) {
    families.push_back(AF_INET6);
  }
  if (ic.ports.empty()) {
    families.clear();  // explicit listeners only: nothing is intercepted
  }
  for (int family : families) {
    if (!openListener(Origin::Outbound, family, err) ||
        !openListener(Origin::Inbound, family, err)) {
      stop();
      return false;
    }
    if (any_udp && tproxy) {
      RawUdpSender& sender = family == AF_INET ? sender4_ : sender6_;
      if (!sender.open(family, ic.proxy_mark, err) || !openRelay(Flow::Outbound, family, err) ||
          !openRelay(Flow::Inbound, family, err)) {
        err = "UDP gossip path: " + err;
        stop();
        return false;
      }
    }
  }
  for (size_t i = 0; i < config_.listeners.size(); ++i) {
    if (!openFixedListener(i, err)) {
      stop();
      return false;
    }
  }
  listening_ = true;
  return true;
}

void Datapath::shedPreambles() {
  tcp_.preamble_budget_closed +=
      proxy::shedPreambles(preamble_budget_, sessions_, [](StreamSession* s) { return s; });
}

StreamFilterPtr Datapath::processorFor(const PortSpec& port, Origin origin, const SessionInfo& info,
                                       uint32_t loop) {
  if (port.protocol == PortProtocol::Rpc) {
    // Client agents dial only their own datacenter's servers (docs/spec/consul-rpc-tls.md §1.3); a
    // server dialling another datacenter's server (WAN) expects server.<that dc>.<domain>, by
    // [[tls.datacenter]].
    std::string dc = config_.agent.datacenter;
    if (origin == Origin::Outbound) {
      for (const auto& route : config_.tls.datacenters) {
        if (std::any_of(route.addresses.begin(), route.addresses.end(),
                        [&info](const Cidr& c) { return c.contains(info.peer); })) {
          dc = route.name;
          break;
        }
      }
    }
    return std::make_unique<RpcProcessor>(origin == Origin::Inbound, rpc_, std::move(dc),
                                          rpc_stats_[loop < rpc_stats_.size() ? loop : 0],
                                          origin == Origin::Outbound ? info.peer.toString() : "");
  }
  Pool& pool = port.pool == GossipPool::Lan ? lan_ : wan_;
  auto filter =
      std::make_unique<fg::GossipStreamFilter>(origin, pool.keys, pool.policy, pool.streams);
  const GossipPool which = port.pool;
  filter->setMessageTap([this, which, info](bool from_agent, std::span<const uint8_t> msg) {
    observer_.stream(which, from_agent ? info.agent : info.peer, from_agent, msg);
  });
  if (port.protocol == PortProtocol::Dskit) {
    // dskit's TCP-only transport (docs/spec/dskit-transport.md): packets through the pool's
    // datagram filter inside dskit's frame, streams after their type byte through `filter`.
    return std::make_unique<fg::DskitStreamProcessor>(origin, std::move(filter), pool.keys,
                                                      pool.datagrams);
  }
  return std::make_unique<GossipStreamProcessor>(std::move(filter), pool.keys,
                                                 origin == Origin::Inbound);
}

int Datapath::upstreamFor(Origin origin, const SocketAddress& agent, const SocketAddress& peer,
                          std::string& err) {
  const auto& ic = config_.intercept;
  if (origin == Origin::Outbound || ic.mode == InterceptMode::Redirect) {
    return openTcpUpstream(agent.family(), ic.proxy_mark, nullptr, err);
  }
  // Inbound TPROXY: connect to the agent from the peer's own address (docs/spec/interception.md
  // §C.2), from a port of intercept.tproxy_source_ports picked at random. The kernel's own choice
  // would come from this host's ephemeral range, which is usually the peers' range too: the
  // peer could then already hold, or later open, a connection with the same 4-tuple (its source
  // port, the agent's address), and the two would hang (docs/deployment.md, "Source ports of
  // spoofed connections"). The peer's own source port would give the accepted connection's
  // tuple; a port in use on this host (a wildcard listener) fails the bind: pick another.
  SocketAddress from = peer;
  const uint32_t first = ic.tproxy_source_port_min;
  const uint32_t span = uint32_t{ic.tproxy_source_port_max} - first + 1;
  for (int attempt = 0; attempt < kSourcePortAttempts; ++attempt) {
    const auto port = static_cast<uint16_t>(first + randombytes_uniform(span));
    if (port == peer.port()) {
      continue;
    }
    from.setPort(port);
    int fd = openTcpUpstream(peer.family(), ic.divert_mark, &from, err);
    if (fd >= 0 || errno != EADDRINUSE) {
      return fd;
    }
  }
  err = "no free source port for " + peer.ip() + " in intercept.tproxy_source_ports after " +
        std::to_string(kSourcePortAttempts) + " tries";
  errno = EADDRINUSE;
  return -1;
}

bool Datapath::accept(Listener& l, int own_fd, bool admitted) {
  auto info = SessionInfo{next_id_++, l.origin, "", {}, {}};
  if (!admitted) {
    ++tcp_.accepted;
  }
  const bool tproxy = config_.intercept.mode == InterceptMode::Tproxy;
  const SocketAddress remote = peerAddress(own_fd);
  const ListenerConfig* fixed =
      l.fixed >= 0 ? &config_.listeners[static_cast<size_t>(l.fixed)] : nullptr;
  // An explicit listener's other end is its fixed upstream; an intercepted connection's is its
  // original destination.
  const SocketAddress local = fixed != nullptr ? fixed->upstream
                              : tproxy         ? localAddress(own_fd)
                                               : redirectOriginalDst(own_fd);
  // Outbound: the agent dialled `local` (the original destination). Inbound: a peer dialled the
  // agent's `local`.
  info.agent = l.origin == Origin::Outbound ? remote : local;
  info.peer = l.origin == Origin::Outbound ? local : remote;
  static const PortSpec kFixedRpc{0, PortProtocol::Rpc, Transport::Tcp, GossipPool::Lan, "rpc"};
  const PortSpec* port = fixed != nullptr               ? &kFixedRpc
                         : l.origin == Origin::Outbound ? destPortFor(info.peer.port())
                                                        : portFor(info.agent.port());
  if (port == nullptr || port->transport == Transport::Udp || !local.valid()) {
    ++tcp_.unknown_port;
    ::close(own_fd);
    return true;
  }
  info.kind = toString(port->protocol);
  const bool inbound_rpc = port->protocol == PortProtocol::Rpc && l.origin == Origin::Inbound;
  if (inbound_rpc) {
    // Consul's per-IP limit and first-byte deadline (docs/spec/consul-rpc-tls.md §1.2 steps 1-2),
    // applied by sidecrypt because with REDIRECT the agent sees one address for every peer.
    const uint32_t limit = config_.tls.rpc_max_conns_per_client;
    uint32_t& n = rpc_conns_per_ip_[info.peer.ip()];
    if (limit != 0 && n >= limit) {
      ++tcp_.rpc_conn_limited;
      spdlog::warn(
          "[C{}] rejecting RPC conn from {} because rpc_max_conns_per_client ({}) "
          "exceeded",
          info.id, info.peer.ip(), limit);
      ::close(own_fd);
      return true;
    }
    ++n;
    info.ready_deadline_ms = config_.tls.rpc_handshake_timeout_ms;
  }
  const bool inbound_gossip = port->protocol != PortProtocol::Rpc && l.origin == Origin::Inbound;
  if (inbound_gossip) {
    // Nothing in memberlist needs more than a few streams from one node at a time; without a
    // cap one address could hold every descriptor (each stream for up to the deadline below).
    const uint32_t limit = config_.gossip.max_streams_per_source;
    uint32_t& n = gossip_streams_per_ip_[info.peer.ip()];
    if (limit != 0 && n >= limit) {
      ++tcp_.gossip_stream_limited;
      if (refusal_log_.allow()) {
        spdlog::warn(
            "[C{}] refusing gossip stream from {}: gossip.max_streams_per_source ({}) "
            "reached",
            info.id, info.peer.ip(), limit);
      }
      ::close(own_fd);
      return true;
    }
    ++n;
    info.ready_deadline_ms =
        port->pool == GossipPool::Lan ? kGossipStreamDeadlineLanMs : kGossipStreamDeadlineWanMs;
  }
  // The per-address slot taken above, given back when the session closes (or none is made).
  const Slot slot = inbound_rpc ? Slot::Rpc : inbound_gossip ? Slot::Gossip : Slot::None;
  std::string err;
  auto open_upstream = [&] {
    return fixed != nullptr ? openTcpUpstream(fixed->upstream.family(),
                                              config_.intercept.proxy_mark, nullptr, err)
                            : upstreamFor(l.origin, info.agent, info.peer, err);
  };
  int up = open_upstream();
  if (up < 0 && (errno == EMFILE || errno == ENFILE)) {
    // The accept took the last descriptor: as at the accept (admitAtLimit), a source holding
    // fewer than the heaviest takes the place of that source's newest unfinished session; else
    // the connection is shed and the caller pauses the listener (acceptFailed).
    Shares shares;
    sourceShares(shares);
    const Holder* victim =
        shares.shares.victimFor(slot != Slot::None ? info.peer.ip() : std::string());
    if (victim != nullptr && victim->remote != nullptr && pending_.size() >= kPendingLimit) {
      victim = nullptr;
    }
    if (victim == nullptr) {
      ++tcp_.accept_shed;
      releaseSlot(slot, info.peer.ip());
      ::close(own_fd);
      return false;
    }
    if (!closeForLimit(*victim)) {
      // A worker loop's session gives its descriptors up: this connection waits for them (and
      // takes its per-address slot again then).
      releaseSlot(slot, info.peer.ip());
      addPending(l, own_fd, victim->remote->id, true);
      return true;
    }
    up = open_upstream();
  }
  if (up < 0) {
    ++tcp_.upstream_failed;
    if (refusal_log_.allow()) {
      spdlog::warn("[C{}] {} {}: cannot open the upstream socket: {}", info.id, info.kind,
                   info.peer.toString(), err);
    }
    releaseSlot(slot, info.peer.ip());
    ::close(own_fd);
    return true;
  }
  const SocketAddress connect_to = l.origin == Origin::Outbound ? info.peer : info.agent;
  const bool rpc = port->protocol == PortProtocol::Rpc;
  if (rpc && loops_ > 1) {
    // docs/architecture.md, "Worker loops": the loop with the fewest RPC sessions runs it.
    const uint32_t target = pickLoop();
    if (target != 0 && handOff(target, own_fd, up, info, connect_to, *port, slot)) {
      return true;
    }
  }
  auto* session = new StreamSession(
      loop_, info, processorFor(*port, l.origin, info),
      [this, slot](StreamSession& s, CloseReason reason, const std::string& detail) {
        sessions_.erase(&s);
        sessionEnded(SessionEnd::of(s, reason, detail), slot, 0, &s);
      });
  session->setPreambleBudget(&preamble_budget_);
  int rc = uv_tcp_open(session->acceptedHandle(), own_fd);
  sessions_.insert(session);
  ++tcp_.active;
  if (rpc) {
    ++rpc_on_loop_[0];
  }
  if (rc != 0) {
    ::close(own_fd);
    ::close(up);
    session->close(CloseReason::SocketError, std::string("uv_tcp_open: ") + uv_strerror(rc));
    return true;
  }
  spdlog::trace("[C{}] {} {} agent {} peer {}", info.id, info.kind,
                l.origin == Origin::Inbound ? "inbound" : "outbound", info.agent.toString(),
                info.peer.toString());
  session->begin(up, connect_to);
  return true;
}

uint32_t Datapath::pickLoop() {
  uint32_t best = next_loop_ % loops_;
  for (uint32_t k = 1; k < loops_; ++k) {
    const uint32_t i = (next_loop_ + k) % loops_;
    if (rpc_on_loop_[i] < rpc_on_loop_[best]) {
      best = i;
    }
  }
  next_loop_ = (best + 1) % loops_;
  return best;
}

bool Datapath::handOff(uint32_t target, int own_fd, int up, const SessionInfo& info,
                       const SocketAddress& connect_to, const PortSpec& port, Slot slot) {
  // The processor is made here, on loop 0, with the current RpcTlsSetup snapshot (so a reload
  // needs no message to the workers) and the target loop's counters.
  WorkerLoop::Handoff h{own_fd, up, info, connect_to,
                        processorFor(port, info.origin, info, target)};
  if (!workers_[target - 1]->handoff(h)) {
    return false;  // its inbox is full: loop 0 runs it
  }
  remote_.emplace(info.id, RemoteSession{info.id, target, info.peer.ip(), info.origin, slot});
  ++rpc_on_loop_[target];
  ++tcp_.active;
  spdlog::trace("[C{}] {} {} agent {} peer {} on loop {}", info.id, info.kind,
                info.origin == Origin::Inbound ? "inbound" : "outbound", info.agent.toString(),
                info.peer.toString(), target);
  return true;
}

void Datapath::releaseSlot(Slot slot, const std::string& ip) {
  auto* m = slot == Slot::Rpc      ? &rpc_conns_per_ip_
            : slot == Slot::Gossip ? &gossip_streams_per_ip_
                                   : nullptr;
  if (m == nullptr) {
    return;
  }
  auto it = m->find(ip);
  if (it != m->end() && --it->second == 0) {
    m->erase(it);
  }
}

void Datapath::sessionEnded(const SessionEnd& e, Slot slot, uint32_t loop,
                            const StreamSession* local) {
  const CloseReason reason = e.reason;
  releaseSlot(slot, e.info.peer.ip());
  if (e.info.kind == "rpc" && loop < rpc_on_loop_.size()) {
    --rpc_on_loop_[loop];
  }
  --tcp_.active;
  ++tcp_.closed[static_cast<size_t>(reason)];
  if (reason == CloseReason::ReadyDeadline) {
    ++tcp_.deadline_closed;
  }
  if (local == nullptr && reason == CloseReason::PreambleBudget) {
    ++tcp_.preamble_budget_closed;  // a worker loop's budget (loop 0's counts in shedPreambles)
  }
  // A peer's reset or broken pipe is a normal end, as a FIN is.
  if (filters::routine(reason)) {
    ++tcp_.closed_ok;
  } else {
    ++tcp_.closed_error;
  }
  recordSession(e, local);
  if (e.preamble_peak >= kTrimAfterBytes && trim_timer_ != nullptr &&
      uv_is_active(reinterpret_cast<uv_handle_t*>(trim_timer_)) == 0) {
    // The buffer is freed after this callback; trim once the burst of closes is over.
    uv_timer_start(
        trim_timer_, [](uv_timer_t*) { ::malloc_trim(0); }, 200, 0);
  }
  const auto& i = e.info;
  if (!filters::routine(reason) && refusal_log_.allow()) {
    spdlog::warn("[C{}] {} {} from {}: {} ({})", i.id, i.kind,
                 i.origin == Origin::Inbound ? "inbound" : "outbound", i.peer.toString(), e.detail,
                 filters::describe(reason));
  }
  spdlog::debug(
      "[C{}] {} {} agent {} peer {} closed: {}{}{} ({} bytes from agent, {} from peer, loop {})",
      i.id, i.kind, i.origin == Origin::Inbound ? "inbound" : "outbound", i.agent.toString(),
      i.peer.toString(), filters::describe(reason), e.detail.empty() ? "" : ": ", e.detail,
      e.from_agent, e.from_peer, loop);
}

void Datapath::recordSession(const SessionEnd& e, const StreamSession* local) {
  const bool failed = !filters::routine(e.reason);
  const auto& info = e.info;
  const auto ip_text = fg::ipText({info.peer.ipBytes(), info.peer.ipLen()});
  const std::string_view ip = ip_text.view();
  if (const auto* g = local != nullptr ? GossipStreamProcessor::of(local->filter()) : nullptr) {
    const int index = g->filter().keyIndex();
    std::string fp;
    const auto& keys = g->keys();
    if (index >= 0 && keys && static_cast<size_t>(index) < keys->size()) {
      fp = keys->fingerprint(static_cast<size_t>(index));
    }
    // Whatever the peer sent (a request it dialled in with, or its reply to our agent) says
    // whether it speaks plaintext.
    if (e.from_peer > 0 || failed) {
      census_.onStream(ip, index >= 0, fp, g->filter().shadowRefused(), failed);
    }
    return;
  }
  if (e.rpc) {
    if (info.origin == Origin::Inbound) {
      census_.onRpc(ip, e.handshake, !e.ready, e.handshake ? &e.dns_names : nullptr);
    }
    if (e.handshake && e.has_anchor) {
      census_.onPeerChain(ip, info.origin, e.anchor_sha256);
    }
  }
}

void Datapath::apply(const RuntimeState& state) {
  const Config& cfg = state.config;
  for (Pool* pool : {&lan_, &wan_}) {
    // A new snapshot, never a change in place: established gossip streams keep the policy they
    // started with (docs/architecture.md, "Reload"); packets and new streams take this one.
    pool->policy = policyFrom(cfg);
    pool->datagrams->setPolicy(pool->policy);
  }
  lan_.keys = state.lan_keys;
  wan_.keys = state.wan_keys ? state.wan_keys : state.lan_keys;
  lan_.datagrams->setKeys(lan_.keys);
  wan_.datagrams->setKeys(wan_.keys);
  config_.agent.datacenter = cfg.agent.datacenter;  // new RPC connections (processorFor)
  config_.agent.domain = cfg.agent.domain;
  config_.gossip = cfg.gossip;
  config_.tls = cfg.tls;
  config_.census = cfg.census;
  config_.metrics = cfg.metrics;
  config_.intercept.tproxy_source_port_min = cfg.intercept.tproxy_source_port_min;
  config_.intercept.tproxy_source_port_max = cfg.intercept.tproxy_source_port_max;
  census_.setCapacity(cfg.census.max_peers);
  rpc_ = state.rpc;  // new connections only; live ones keep their setup
}

uint32_t Datapath::resolveLoops(uint32_t configured) {
  constexpr uint32_t kMaxLoops = 64;
  // "auto": the affinity mask, capped by the cgroup CPU quota (cpu_budget.h).
  const uint32_t n = configured != 0 ? configured : availableCpus();
  return std::clamp<uint32_t>(n, 1, kMaxLoops);
}

bool Datapath::startWorkers(std::string& err) {
  loops_ = resolveLoops(config_.runtime.loops);
  rpc_on_loop_.assign(loops_, 0);
  while (rpc_stats_.size() < loops_) {
    rpc_stats_.push_back(std::make_shared<filters::rpc_tls::RpcTlsStats>());
  }
  if (loops_ == 1) {
    return true;  // today's process: one loop, no thread
  }
  // docs/architecture.md, "Worker loops": loop 0 keeps three quarters of the preamble budget (its
  // gossip streams' first messages may be MiB), the workers share the rest; the sum is the limit.
  preamble_budget_.limit = kPreambleBudgetBytes / 4 * 3;
  const size_t worker_budget = kPreambleBudgetBytes / 4 / (loops_ - 1);
  events_wake_ = new uv_async_t{};
  uv_async_init(loop_, events_wake_,
                [](uv_async_t* a) { static_cast<Datapath*>(a->data)->onEvents(); });
  events_wake_->data = this;
  pending_timer_ = new uv_timer_t{};
  uv_timer_init(loop_, pending_timer_);
  pending_timer_->data = this;
  for (uint32_t i = 1; i < loops_; ++i) {
    auto w = std::make_unique<WorkerLoop>(i, worker_budget,
                                          [this](LoopEvent&& e) { postEvent(std::move(e)); });
    if (!w->start(err)) {
      return false;
    }
    workers_.push_back(std::move(w));
  }
  spdlog::info("{} event loops: loop 0 and {} worker loop(s) for RPC connections", loops_,
               loops_ - 1);
  return true;
}

void Datapath::postEvent(LoopEvent&& e) {
  {
    std::lock_guard<std::mutex> lock(events_mu_);
    events_.push_back(std::move(e));
  }
  uv_async_send(events_wake_);
}

void Datapath::onEvents() {
  std::vector<LoopEvent> batch;
  {
    std::lock_guard<std::mutex> lock(events_mu_);
    batch.swap(events_);
  }
  for (auto& e : batch) {
    auto it = remote_.find(e.id);
    if (it == remote_.end()) {
      continue;
    }
    switch (e.kind) {
      case LoopEvent::Kind::Ready:
        it->second.ready = true;
        break;
      case LoopEvent::Kind::Kept:  // finished before the close for the limit reached it
        it->second.ready = true;
        it->second.closing = false;
        retryPending(e.id);
        break;
      case LoopEvent::Kind::Closed: {
        const Slot slot = it->second.slot;
        const uint32_t loop = it->second.loop;
        remote_.erase(it);
        sessionEnded(e.end, slot, loop, nullptr);
        retryPending(e.id);  // its two descriptors are closed
        break;
      }
    }
  }
  if (spare_fd_ < 0 && listening_) {
    spare_fd_ = openSpareFd();
  }
}

void Datapath::stopWorkers() {
  for (auto& w : workers_) {
    w->stop();  // closes its sessions and joins its thread
  }
  workers_.clear();
  if (events_wake_ != nullptr) {
    onEvents();  // every Closed the workers posted: counted, released, in the census
    uv_close(reinterpret_cast<uv_handle_t*>(events_wake_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
    events_wake_ = nullptr;
  }
  expirePending(true);
  if (pending_timer_ != nullptr) {
    uv_timer_stop(pending_timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(pending_timer_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    pending_timer_ = nullptr;
  }
}

filters::rpc_tls::RpcTlsStats Datapath::rpcStats() const {
  filters::rpc_tls::RpcTlsStats sum;
  for (const auto& s : rpc_stats_) {
    sum.add(*s);
  }
  return sum;
}

std::vector<Datapath::LoopLoad> Datapath::loopLoads() const {
  std::vector<LoopLoad> out(loops_);
  for (uint32_t i = 0; i < loops_; ++i) {
    out[i].sessions = i == 0 ? sessions_.size() : rpc_on_loop_[i];
    out[i].rpc_handshakes =
        i < rpc_stats_.size() ? rpc_stats_[i]->handshakes_ok.load(std::memory_order_relaxed) : 0;
  }
  return out;
}

void Datapath::stop() {
  for (auto& r : relays_) {
    r->close();
  }
  relays_.clear();
  for (auto& l : listeners_) {
    closeListener(std::move(l));
  }
  listeners_.clear();
  auto live = sessions_;
  for (auto* s : live) {
    s->close(CloseReason::Stopping, "sidecrypt is stopping");
  }
  stopWorkers();
  if (trim_timer_ != nullptr) {
    uv_timer_stop(trim_timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(trim_timer_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    trim_timer_ = nullptr;
  }
  listening_ = false;
}

std::string Datapath::statsText() const {
  std::string out = "tcp";
  tcp_.forEach([&out](const char* name, uint64_t v) {
    out += std::string(" ") + name + "=" + std::to_string(v);
  });
  std::string closed_line;
  tcp_.forEachClosed([&closed_line](const char* name, uint64_t v) {
    if (v != 0) {
      closed_line += std::string(" ") + name + "=" + std::to_string(v);
    }
  });
  if (!closed_line.empty()) {
    out += "; tcp closed" + closed_line;
  }
  for (const auto& r : relays_) {
    const auto& s = r->stats();
    out += std::string("; udp ") + (r->flow() == Flow::Outbound ? "out" : "in");
    s.forEach([&out](const char* name, uint64_t v) {
      out += std::string(" ") + name + "=" + std::to_string(v);
    });
  }
  std::string rpc_line;
  rpcStats().forEach([&rpc_line](const char* name, uint64_t v) {
    if (v != 0) {
      rpc_line += std::string(" ") + name + "=" + std::to_string(v);
    }
  });
  if (!rpc_line.empty()) {
    out += "; rpc" + rpc_line;
  }
  std::string key_line;
  observer_.stats().forEach([&key_line](const char* name, uint64_t v) {
    if (v != 0) {
      key_line += std::string(" ") + name + "=" + std::to_string(v);
    }
  });
  if (!key_line.empty()) {
    out += "; key_queries" + key_line;
  }
  auto dump = [&out](const char* pool, const char* dir, const auto& counters) {
    std::string line;
    fg::forEachCounter(counters, [&line](const char* name, uint64_t v) {
      if (v != 0) {
        line += std::string(" ") + name + "=" + std::to_string(v);
      }
    });
    if (!line.empty()) {
      out += std::string("; ") + pool + " " + dir + line;
    }
  };
  for (auto [name, p] : {std::pair{"lan", &lan_}, std::pair{"wan", &wan_}}) {
    dump(name, "packets agent->peer", p->datagrams->stats().agent_to_peer);
    dump(name, "packets peer->agent", p->datagrams->stats().peer_to_agent);
    dump(name, "streams agent->peer", p->streams->agent_to_peer);
    dump(name, "streams peer->agent", p->streams->peer_to_agent);
  }
  if (loops_ > 1) {
    const auto loads = loopLoads();
    for (size_t i = 0; i < loads.size(); ++i) {
      out += "; loop " + std::to_string(i) + " sessions=" + std::to_string(loads[i].sessions) +
             " rpc_handshakes=" + std::to_string(loads[i].rpc_handshakes);
    }
  }
  return out;
}

}  // namespace sidecrypt::proxy
