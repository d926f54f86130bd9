#include "proxy/datapath/worker_loop.h"

// A worker loop (docs/architecture.md, "Worker loops"): a libuv loop on its own thread that runs
// the RPC sessions loop 0 hands it, and reports back what loop 0 accounts for.

#include <unistd.h>

#include <utility>

#include "filters/rpc_tls/rpc_processor.h"

namespace sidecrypt::proxy {

SessionEnd SessionEnd::of(const StreamSession& s, CloseReason reason, const std::string& detail) {
  SessionEnd e;
  e.info = s.info();
  e.reason = reason;
  e.detail = detail;
  e.from_agent = s.bytesFromAgent();
  e.from_peer = s.bytesFromPeer();
  e.preamble_peak = s.preamblePeak();
  if (const auto* r = filters::rpc_tls::RpcProcessor::of(s.filter())) {
    e.rpc = true;
    e.ready = r->ready();
    const auto* engine = r->engine();
    e.handshake = engine != nullptr && engine->handshakeDone();
    if (e.handshake) {
      e.dns_names = engine->peer().dns_names;
      e.has_anchor = engine->peer().has_anchor;
      e.anchor_sha256 = engine->peer().anchor_sha256;
    }
  }
  return e;
}

WorkerLoop::WorkerLoop(uint32_t index, size_t preamble_budget, Post post)
    : index_(index), post_(std::move(post)) {
  budget_.limit = preamble_budget;
  budget_.on_over = [this] {
    shedPreambles(budget_, sessions_, [](const auto& e) { return e.second; });
  };
}

WorkerLoop::~WorkerLoop() {
  stop();
}

bool WorkerLoop::start(std::string& err) {
  int rc = uv_loop_init(&loop_);
  if (rc != 0) {
    err = std::string("worker loop ") + std::to_string(index_) + ": " + uv_strerror(rc);
    return false;
  }
  rc = uv_async_init(&loop_, &wake_,
                     [](uv_async_t* a) { static_cast<WorkerLoop*>(a->data)->onInbox(); });
  if (rc != 0) {
    uv_loop_close(&loop_);
    err = std::string("worker loop ") + std::to_string(index_) + ": " + uv_strerror(rc);
    return false;
  }
  wake_.data = this;
  started_ = true;
  thread_ = std::thread([this] { run(); });
  return true;
}

void WorkerLoop::wake() {
  uv_async_send(&wake_);  // thread-safe; coalesces; called with mu_ held (see Stop)
}

void WorkerLoop::run() {
  uv_run(&loop_, UV_RUN_DEFAULT);  // until stop() closed every session and the wake-up handle
  uv_loop_close(&loop_);
}

bool WorkerLoop::handoff(Handoff& h) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!started_ || stopping_ || handoffs_ >= kInboxLimit) {
      return false;
    }
    Message m;
    m.kind = Message::Kind::Handoff;
    m.handoff = std::move(h);
    inbox_.push_back(std::move(m));
    ++handoffs_;
    wake();
  }
  return true;
}

void WorkerLoop::closeSession(uint64_t id, CloseReason reason, std::string detail,
                              bool only_unfinished) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!started_ || stopping_) {
      return;
    }
    Message m;
    m.kind = Message::Kind::Close;
    m.id = id;
    m.reason = reason;
    m.detail = std::move(detail);
    m.only_unfinished = only_unfinished;
    inbox_.push_back(std::move(m));
    wake();
  }
}

void WorkerLoop::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!started_ || stopping_) {
      return;
    }
    stopping_ = true;
    Message m;
    m.kind = Message::Kind::Stop;
    inbox_.push_back(std::move(m));  // the last message: nothing is sent after it
    wake();
  }
  thread_.join();
}

void WorkerLoop::onInbox() {
  std::deque<Message> batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    batch.swap(inbox_);
    handoffs_ = 0;
  }
  for (auto& m : batch) {
    switch (m.kind) {
      case Message::Kind::Handoff:
        begin(m.handoff);
        break;
      case Message::Kind::Close: {
        auto it = sessions_.find(m.id);
        if (it == sessions_.end() || it->second->closing()) {
          break;  // already ending: its Closed event is (or will be) on its way
        }
        if (m.only_unfinished && it->second->driver().ready()) {
          LoopEvent e;
          e.kind = LoopEvent::Kind::Kept;
          e.loop = index_;
          e.id = m.id;
          post_(std::move(e));
          break;
        }
        it->second->close(m.reason, std::move(m.detail));
        break;
      }
      case Message::Kind::Stop: {
        std::vector<StreamSession*> live;
        live.reserve(sessions_.size());
        for (auto& [id, s] : sessions_) {
          live.push_back(s);
        }
        for (auto* s : live) {
          s->close(CloseReason::Stopping, "sidecrypt is stopping");
        }
        {
          // Under the lock: the wake-up for this Stop (sent under it too) has returned, and no
          // other can follow, so the handle is never sent to once closing.
          std::lock_guard<std::mutex> lock(mu_);
          uv_close(reinterpret_cast<uv_handle_t*>(&wake_), nullptr);
        }
        break;
      }
    }
  }
}

void WorkerLoop::begin(Handoff& h) {
  const uint64_t id = h.info.id;
  auto* session =
      new StreamSession(&loop_, h.info, std::move(h.processor),
                        [this](StreamSession& s, CloseReason reason, const std::string& detail) {
                          onClosed(s, reason, detail);
                        });
  session->setPreambleBudget(&budget_);
  session->setReadyHook([this](const StreamSession& s) {
    LoopEvent e;
    e.kind = LoopEvent::Kind::Ready;
    e.loop = index_;
    e.id = s.info().id;
    post_(std::move(e));
  });
  sessions_.emplace(id, session);
  const int rc = uv_tcp_open(session->acceptedHandle(), h.accepted_fd);
  if (rc != 0) {
    ::close(h.accepted_fd);
    ::close(h.upstream_fd);
    session->close(CloseReason::SocketError, std::string("uv_tcp_open: ") + uv_strerror(rc));
    return;
  }
  session->begin(h.upstream_fd, h.connect_to);
}

void WorkerLoop::onClosed(StreamSession& s, CloseReason reason, const std::string& detail) {
  sessions_.erase(s.info().id);
  LoopEvent e;
  e.kind = LoopEvent::Kind::Closed;
  e.loop = index_;
  e.id = s.info().id;
  e.end = SessionEnd::of(s, reason, detail);
  post_(std::move(e));
}

}  // namespace sidecrypt::proxy
