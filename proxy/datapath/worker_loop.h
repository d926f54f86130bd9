#pragma once

#include <uv.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "proxy/datapath/stream_session.h"

namespace sidecrypt::proxy {

// What loop 0 needs of a session that ended, wherever it ran (docs/architecture.md, "Worker
// loops"): the close for the counters and the log, and what the census records of an RPC
// connection. Built on the session's own loop; a copy, so it may cross threads.
struct SessionEnd {
  SessionInfo info;
  CloseReason reason = CloseReason::Done;
  std::string detail;
  uint64_t from_agent = 0;
  uint64_t from_peer = 0;
  size_t preamble_peak = 0;
  // RPC (an RpcProcessor ran the session): its TLS handshake finished, the processor was ready,
  // and the peer's certificate names and trust anchor.
  bool rpc = false;
  bool handshake = false;
  bool ready = false;
  std::vector<std::string> dns_names;
  bool has_anchor = false;
  std::array<uint8_t, 32> anchor_sha256{};

  static SessionEnd of(const StreamSession& s, CloseReason reason, const std::string& detail);
};

// What a worker loop tells loop 0 (any thread may post; loop 0 reads them in order per worker).
struct LoopEvent {
  enum class Kind : uint8_t {
    Ready,   // the session's processor is ready (handshake and first message done)
    Kept,    // a close for the descriptor limit found the session ready: it was not closed
    Closed,  // the session ended and its descriptors are closed; `end` says how
  };
  Kind kind = Kind::Closed;
  uint32_t loop = 0;
  uint64_t id = 0;
  SessionEnd end;
};

// Closes the sessions holding the most unfinished first-message bytes (the newest among equals)
// until `budget` is back under its limit; returns how many it closed. `session_of` maps an
// element of `sessions` to its StreamSession*.
template <typename Range, typename SessionOf>
size_t shedPreambles(PreambleBudget& budget, const Range& sessions, SessionOf session_of) {
  size_t closed = 0;
  // Closing gives each session's share back at once (StreamSession::close), so this ends.
  while (budget.used > budget.limit) {
    StreamSession* greediest = nullptr;
    for (const auto& e : sessions) {
      StreamSession* s = session_of(e);
      if (s->closing() || s->preambleBytes() == 0) {
        continue;
      }
      if (greediest == nullptr || s->preambleBytes() > greediest->preambleBytes() ||
          (s->preambleBytes() == greediest->preambleBytes() &&
           s->info().id > greediest->info().id)) {
        greediest = s;
      }
    }
    if (greediest == nullptr) {
      break;
    }
    ++closed;
    greediest->close(CloseReason::PreambleBudget,
                     "its unfinished first message (" +
                         std::to_string(greediest->preambleBytes() >> 10) +
                         " KiB) was the largest when all of them passed " +
                         std::to_string(budget.limit >> 10) + " KiB");
  }
  return closed;
}

// One worker event loop on its own thread (docs/architecture.md, "Worker loops"). It runs only
// the RPC sessions loop 0 hands it after the accept: their sockets, timers, TLS and buffers are
// its own for their whole life. Loop 0 talks to it through a locked inbox and a uv_async_t
// (a hand-off, a close, stop); it answers through `post` (LoopEvent). Nothing else is shared.
class WorkerLoop {
 public:
  // An accepted connection and its opened (unconnected) upstream socket, with the processor
  // loop 0 made for it.
  struct Handoff {
    int accepted_fd = -1;
    int upstream_fd = -1;
    SessionInfo info;
    SocketAddress connect_to;
    StreamFilterPtr processor;
  };
  using Post = std::function<void(LoopEvent&&)>;
  // Hand-offs waiting in the inbox at most; past it loop 0 keeps the connection itself.
  static constexpr size_t kInboxLimit = 4096;

  WorkerLoop(uint32_t index, size_t preamble_budget, Post post);
  ~WorkerLoop();  // stop()
  WorkerLoop(const WorkerLoop&) = delete;
  WorkerLoop& operator=(const WorkerLoop&) = delete;

  // Starts the loop's thread.
  bool start(std::string& err);
  // Loop 0: queues `h` for this loop and takes it (true), or leaves it untouched when the inbox
  // is full or the loop stopped (false).
  bool handoff(Handoff& h);
  // Loop 0: closes session `id` with `reason`; `only_unfinished`: unless its processor is ready
  // (then a Kept event answers). A session already gone is left alone (its Closed is on its way).
  void closeSession(uint64_t id, CloseReason reason, std::string detail, bool only_unfinished);
  // Loop 0: closes every session (CloseReason::Stopping), lets their Closed events out and waits
  // for the thread. Idempotent.
  void stop();
  uint32_t index() const { return index_; }

 private:
  struct Message {
    enum class Kind : uint8_t { Handoff, Close, Stop };
    Kind kind = Kind::Handoff;
    Handoff handoff;
    uint64_t id = 0;
    CloseReason reason = CloseReason::Done;
    std::string detail;
    bool only_unfinished = false;
  };
  void wake();             // loop 0, with mu_ held
  void run();              // the thread
  void onInbox();          // on this loop: the messages loop 0 sent
  void begin(Handoff& h);  // on this loop: the session of a hand-off
  void onClosed(StreamSession& s, CloseReason reason, const std::string& detail);

  const uint32_t index_;
  Post post_;
  std::mutex mu_;  // inbox_, handoffs_, stopping_
  std::deque<Message> inbox_;
  size_t handoffs_ = 0;  // Handoff messages in inbox_
  bool stopping_ = false;
  bool started_ = false;
  std::thread thread_;
  // The loop's own state, touched only by its thread (after start, before the join).
  uv_loop_t loop_{};
  uv_async_t wake_{};
  std::unordered_map<uint64_t, StreamSession*> sessions_;
  PreambleBudget budget_;
};

}  // namespace sidecrypt::proxy
