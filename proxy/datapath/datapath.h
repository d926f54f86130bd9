#pragma once

#include <uv.h>

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "filters/gossip/gossip_datagram_filter.h"
#include "filters/gossip/gossip_policy.h"
#include "proxy/datapath/gossip_observer.h"
#include "proxy/datapath/source_shares.h"
#include "proxy/datapath/stream_session.h"
#include "proxy/datapath/udp_relay.h"
#include "proxy/datapath/worker_loop.h"
#include "proxy/net/raw_udp_sender.h"
#include "proxy/observe/peer_census.h"
#include "proxy/observe/rate_limit.h"
#include "proxy/runtime_state.h"

namespace sidecrypt::proxy {

// Every TCP session counter in one list (docs/architecture.md §4), rendered from it as the stats
// log line's `tcp` section, /status `tcp` and /metrics: `active` is sidecrypt_tcp_sessions_active,
// `accept_errors` sidecrypt_tcp_accept_errors_total, the rest sidecrypt_tcp_sessions_total{result}.
#define SIDECRYPT_TCP_COUNTERS(COUNTER)                       \
  COUNTER(accepted)                                           \
  COUNTER(active)                                             \
  COUNTER(closed_ok)                                          \
  COUNTER(closed_error)                                       \
  COUNTER(unknown_port)                                       \
  COUNTER(upstream_failed)                                    \
  /* Refused by rpc_max_conns_per_client. */                  \
  COUNTER(rpc_conn_limited)                                   \
  /* Refused by gossip.max_streams_per_source. */             \
  COUNTER(gossip_stream_limited)                              \
  /* No first message / handshake by the deadline. */         \
  COUNTER(deadline_closed)                                    \
  /* Greediest unfinished first message over the budget. */   \
  COUNTER(preamble_budget_closed)                             \
  /* At the descriptor limit: accepted and closed at once. */ \
  COUNTER(accept_shed)                                        \
  /* Accept failures (each pauses the listener a while). */   \
  COUNTER(accept_errors)

struct TcpCounters {
#define SIDECRYPT_TCP_DECLARE(name) uint64_t name = 0;
  SIDECRYPT_TCP_COUNTERS(SIDECRYPT_TCP_DECLARE)
#undef SIDECRYPT_TCP_DECLARE

  // Calls fn(name, value) for every counter, in list order.
  template <typename Fn>
  void forEach(Fn&& fn) const {
#define SIDECRYPT_TCP_VISIT(name) fn(#name, name);
    SIDECRYPT_TCP_COUNTERS(SIDECRYPT_TCP_VISIT)
#undef SIDECRYPT_TCP_VISIT
  }

  // Closed sessions by CloseReason (the list in filters/filter.h): each close counts in exactly
  // one, so they sum to closed_ok + closed_error. Rendered as the stats log line's `tcp closed`
  // section, /status `tcp_closed` and sidecrypt_tcp_sessions_closed_total{reason}.
  std::array<uint64_t, filters::kCloseReasonCount> closed{};
  uint64_t closedBy(CloseReason r) const {
    return closed[static_cast<size_t>(r)];
  }
  // Calls fn(reason name, value) for every reason, in list order.
  template <typename Fn>
  void forEachClosed(Fn&& fn) const {
    for (CloseReason r : filters::kCloseReasons) {
      fn(filters::describe(r), closedBy(r));
    }
  }
};

// The data path: capture sockets and listeners for both directions and both families, the
// gossip filters per pool (LAN/WAN), and every live TCP session. Lives on loop 0's thread; with
// runtime.loops > 1 it starts the worker loops and hands RPC sessions to them, keeping a record
// of each (docs/architecture.md, "Worker loops").
class Datapath {
 public:
  Datapath(uv_loop_t* loop, const RuntimeState& state);
  ~Datapath();
  Datapath(const Datapath&) = delete;
  Datapath& operator=(const Datapath&) = delete;

  // Opens every socket the config needs and starts the worker loops. A failure names the socket
  // and the reason; nothing is left half-open.
  bool start(std::string& err);
  // Reload: new keys and rollout stages apply to the next packet and the next connection;
  // established TCP sessions keep what they started with.
  void apply(const RuntimeState& state);
  // Reload of the explicit listeners ([[listener]]), before apply(): a listener whose listen
  // address stays keeps its socket (its upstream, direction and name may change), a removed one
  // stops accepting (its connections go on), a new one is opened. All or nothing: if a new
  // socket cannot be opened, nothing changes and `err` says why.
  bool applyListeners(const std::vector<ListenerConfig>& next, std::string& err);
  // Stops accepting and capturing; live sessions are closed (on worker loops too: the workers'
  // threads are joined and their sessions accounted for before this returns).
  void stop();

  bool listening() const { return listening_; }
  // Where each explicit listener is bound, in [[listener]] order (a listen port 0 shows the
  // kernel's choice; the unit tests listen on such ports). Invalid for one that is not open.
  std::vector<SocketAddress> listenerAddresses() const;
  // Every loop's sessions (loop 0's own and its records of the workers').
  size_t activeSessions() const { return sessions_.size() + remote_.size(); }
  // The event loops: runtime.loops resolved ("auto": the CPUs this process may use), set by
  // start(). Per loop: its sessions and its completed RPC handshakes.
  uint32_t loops() const { return loops_; }
  struct LoopLoad {
    uint64_t sessions = 0;
    uint64_t rpc_handshakes = 0;
  };
  std::vector<LoopLoad> loopLoads() const;
  // "auto" (0) as a number of loops: the CPUs this process may use, at most 64.
  static uint32_t resolveLoops(uint32_t configured);
  std::string statsText() const;

  struct Pool {
    std::shared_ptr<const filters::gossip::GossipPolicy>
        policy;  // replaced on reload, never changed
    filters::keyring::KeySetConstSharedPtr keys;
    // The UDP relays' filter; dskit ports seal their packets through it too (shared).
    std::shared_ptr<filters::gossip::GossipDatagramFilter> datagrams;
    std::shared_ptr<filters::gossip::GossipStreamStats> streams;
  };
  const Pool& pool(GossipPool p) const { return p == GossipPool::Lan ? lan_ : wan_; }
  const TcpCounters& tcpCounters() const { return tcp_; }
  // The RPC TLS counters of every loop, summed (a snapshot).
  filters::rpc_tls::RpcTlsStats rpcStats() const;
  const PeerCensus& census() const { return census_; }
  PeerCensus& census() { return census_; }
  const std::vector<std::unique_ptr<UdpRelay>>& relays() const { return relays_; }
  // Members advertising a gossip port the rules do not capture: the agent's TCP to them would
  // leave in plaintext (intercept.member_ports). Alive and suspect members only.
  std::vector<const MemberRecord*> uncoveredMembers() const;
  bool memberPortCovered(uint16_t port) const;
  // Distinct uncovered ports seen since start (bounded).
  const std::set<uint16_t>& uncoveredPortsSeen() const { return uncovered_ports_; }
  // Key rotation by Serf key queries: how a changed keyring is persisted and installed.
  void setKeyringCommit(GossipObserver::KeyringCommit commit) {
    observer_.setKeyringCommit(std::move(commit));
  }
  const KeyQueryStats& keyQueryStats() const { return observer_.stats(); }

 private:
  // A listening socket polled for readability; connections are taken with accept4 so the fd
  // goes straight into the session's own handle.
  struct Listener {
    Datapath* owner = nullptr;
    Origin origin = Origin::Outbound;
    int fd = -1;
    int fixed = -1;  // index into config_.listeners for an explicit listener, else intercepted
    uv_poll_t poll{};
    // After an accept error the listener is not polled for backoff_ms (10 ms, doubling to 1 s
    // while errors go on and no connection is taken, back to 10 ms once one is): no busy loop
    // on a pending connection, and no slow drain of a queue at the descriptor limit.
    uv_timer_t backoff{};
    bool backoff_initialised = false;
    uint64_t backoff_ms = 0;
    int open_handles = 0;
  };

  const PortSpec* portFor(uint16_t agent_port) const;
  // An agent port, else a member port of the fleet's plan (outbound destinations).
  const PortSpec* destPortFor(uint16_t port) const;
  DatagramRoute datagramRouteFor(uint16_t agent_port);
  bool openListener(Origin origin, int family, std::string& err);
  bool openFixedListener(size_t index, std::string& err);
  // Registers an open listening socket with the loop (fixed: index into config_.listeners, or
  // -1 for an interception listener).
  bool pollListener(Origin origin, int fd, int fixed, std::string& err);
  void closeListener(std::unique_ptr<Listener> l);
  void logListener(const ListenerConfig& lc, const char* what) const;
  bool openRelay(Flow flow, int family, std::string& err);
  static void onConnection(uv_poll_t* handle, int status, int events);
  // An accept error: at EMFILE/ENFILE the spare descriptor is given up to take the pending
  // connections (admitAtLimit, else closed: shed), then reopened; every error pauses the
  // listener.
  void acceptFailed(Listener& l, int err);
  // A session on a worker loop, as loop 0 knows it (docs/architecture.md, "Worker loops").
  enum class Slot : uint8_t { None, Rpc, Gossip };  // the per-address limit a session counts in
  struct RemoteSession {
    uint64_t id = 0;
    uint32_t loop = 0;
    std::string ip;  // the peer's
    Origin origin = Origin::Inbound;
    Slot slot = Slot::None;
    bool ready = false;    // its processor said so (LoopEvent::Ready)
    bool closing = false;  // loop 0 asked its loop to close it
  };
  // A session the descriptor-limit choice may close: one of loop 0's, or a record of a worker's.
  struct Holder {
    StreamSession* local = nullptr;
    RemoteSession* remote = nullptr;
  };
  struct Shares {
    std::deque<Holder> holders;  // stable addresses for `shares`
    SourceShares<Holder> shares;
  };
  // A connection accepted at the descriptor limit whose place a worker's session is giving up:
  // admitted when that session's Closed (or Kept) arrives, shed at its deadline.
  struct Pending {
    Listener* listener = nullptr;
    int fd = -1;
    uint64_t victim = 0;
    uint64_t deadline_ms = 0;  // uv_now
    bool counted = false;      // already counted in tcp accepted
  };
  static constexpr size_t kPendingLimit = 64;
  static constexpr uint64_t kPendingDeadlineMs = 1000;

  // The live inbound sessions of every loop by source, for choices at the descriptor limit.
  void sourceShares(Shares& out);
  // Closes `victim` for the descriptor limit. True: its descriptors are free now (loop 0's);
  // false: its worker loop was asked to close it (free once its Closed arrives).
  bool closeForLimit(const Holder& victim);
  // At the descriptor limit, with connection `fd` taken on the spare descriptor: if its source
  // holds fewer sessions than the heaviest (SourceShares), closes that source's newest unfinished
  // session and accepts `fd` (at once, or pending until a worker closed it); else returns false
  // (the caller sheds it).
  bool admitAtLimit(Shares& shares, Listener& l, int fd);
  bool addPending(Listener& l, int fd, uint64_t victim, bool counted);
  // The victim `id` of pending connections is gone (or kept): admit them (or choose again).
  void retryPending(uint64_t id);
  // Sheds the pending connections past their deadline (all of them: stopping).
  void expirePending(bool all);
  void dropPendingOf(const Listener* l);
  // /dev/null, held so that one descriptor can be given up at the limit.
  static int openSpareFd();
  // The loop-0 preamble budget is exceeded: closes the sessions holding the most.
  void shedPreambles();
  // Makes a session of an accepted connection (or refuses it). False: at the descriptor limit
  // its upstream socket could not be opened and it was shed (the caller pauses the listener).
  // `admitted`: a pending connection, already counted as accepted.
  bool accept(Listener& l, int fd, bool admitted = false);
  // Where a new RPC session goes: the loop with the fewest RPC sessions, ties in turn.
  uint32_t pickLoop();
  // Hands a connection to worker loop `target`; false (nothing taken) if its inbox is full.
  bool handOff(uint32_t target, int own_fd, int up, const SessionInfo& info,
               const SocketAddress& connect_to, const PortSpec& port, Slot slot);
  // Every session's end, whichever loop ran it: counters, the per-address slot, the census, the
  // log. `local`: loop 0's session (gossip census facts come from it).
  void sessionEnded(const SessionEnd& e, Slot slot, uint32_t loop, const StreamSession* local);
  void releaseSlot(Slot slot, const std::string& ip);
  void recordSession(const SessionEnd& e, const StreamSession* local);
  // Any thread: a worker loop's event for loop 0.
  void postEvent(LoopEvent&& e);
  void onEvents();  // loop 0
  bool startWorkers(std::string& err);
  void stopWorkers();
  int upstreamFor(Origin origin, const SocketAddress& agent, const SocketAddress& peer,
                  std::string& err);
  StreamFilterPtr processorFor(const PortSpec& port, Origin origin, const SessionInfo& info,
                               uint32_t loop = 0);

  uv_loop_t* loop_;
  Config config_;
  RpcTlsSetupConstPtr rpc_;
  // One per loop ([0]: loop 0's), each bumped only by its loop's thread.
  std::vector<std::shared_ptr<filters::rpc_tls::RpcTlsStats>> rpc_stats_{
      std::make_shared<filters::rpc_tls::RpcTlsStats>()};
  std::unordered_map<std::string, uint32_t> rpc_conns_per_ip_;
  std::unordered_map<std::string, uint32_t> gossip_streams_per_ip_;  // inbound, by peer address
  PreambleBudget preamble_budget_;
  int spare_fd_ = -1;  // /dev/null, given up at the descriptor limit to shed a connection
  // After a session that held a large unfinished message is freed, malloc_trim returns the
  // pages (glibc keeps freed heap memory resident otherwise). Heap-allocated: closed by stop().
  uv_timer_t* trim_timer_ = nullptr;
  Pool lan_;
  Pool wan_;
  std::vector<PortSpec> member_specs_;  // member ports that are not agent ports
  std::set<uint16_t> uncovered_ports_;
  RateLimit uncovered_log_{5, 60'000};
  RawUdpSender sender4_;
  RawUdpSender sender6_;
  std::vector<std::unique_ptr<UdpRelay>> relays_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unordered_set<StreamSession*> sessions_;  // loop 0's
  // Worker loops 1..loops_-1 (workers_[i - 1] is loop i) and loop 0's record of their sessions.
  uint32_t loops_ = 1;
  std::vector<std::unique_ptr<WorkerLoop>> workers_;
  std::unordered_map<uint64_t, RemoteSession> remote_;
  std::vector<uint32_t> rpc_on_loop_ = {0};  // RPC sessions per loop (the hand-off's choice)
  uint32_t next_loop_ = 0;                   // where the next tie goes
  std::mutex events_mu_;                     // events_: written by the workers, read by loop 0
  std::vector<LoopEvent> events_;
  uv_async_t* events_wake_ = nullptr;  // heap: closed by stop()
  std::vector<Pending> pending_;
  uv_timer_t* pending_timer_ = nullptr;  // heap: closed by stop()
  TcpCounters tcp_;
  PeerCensus census_;
  GossipObserver observer_{census_, [this](GossipPool p) { return pool(p).keys; }};
  RateLimit refusal_log_{10, 10'000};  // connection refusals: at most 10 warnings per 10 s
  RateLimit accept_log_{1, 10'000};    // accept errors: one line per 10 s (counters: the rest)
  uint64_t next_id_ = 1;
  bool listening_ = false;
};

}  // namespace sidecrypt::proxy
