#include "proxy/datapath/datapath.h"

// The Datapath's listening sockets (docs/architecture.md §3): the interception listeners and the
// explicit [[listener]]s, opened, reloaded and closed; accepting (bounded per wake-up) and what
// happens when accept fails (at the descriptor limit: admit or shed the pending connections,
// pause).

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "proxy/net/sockets.h"

namespace sidecrypt::proxy {

namespace {

constexpr uint64_t kAcceptBackoffFirstMs = 10;
constexpr uint64_t kAcceptBackoffMaxMs = 1000;

}  // namespace

int Datapath::openSpareFd() {
  return ::open("/dev/null", O_RDONLY | O_CLOEXEC);
}

bool Datapath::openFixedListener(size_t index, std::string& err) {
  const ListenerConfig& lc = config_.listeners[index];
  int fd = openTcpListener(lc.listen, false, err);
  if (fd < 0) {
    err = "listener " + lc.name + " on " + lc.listen.toString() + ": " + err;
    return false;
  }
  if (!pollListener(lc.direction, fd, static_cast<int>(index), err)) {
    err = "listener " + lc.name + " on " + lc.listen.toString() + ": " + err;
    return false;
  }
  logListener(lc, "");
  return true;
}

std::vector<SocketAddress> Datapath::listenerAddresses() const {
  std::vector<SocketAddress> out(config_.listeners.size());
  for (const auto& l : listeners_) {
    if (l->fixed >= 0 && static_cast<size_t>(l->fixed) < out.size()) {
      out[static_cast<size_t>(l->fixed)] = localAddress(l->fd);
    }
  }
  return out;
}

void Datapath::logListener(const ListenerConfig& lc, const char* what) const {
  spdlog::info("listener {}{}: {} {} -> {}", lc.name, what,
               lc.direction == ListenerDirection::Outbound ? "outbound (plaintext in, TLS out)"
                                                           : "inbound (TLS in, plaintext out)",
               lc.listen.toString(), lc.upstream.toString());
}

bool Datapath::applyListeners(const std::vector<ListenerConfig>& next, std::string& err) {
  if (!listening_) {
    config_.listeners = next;  // start() opens them
    return true;
  }
  // Phase 1: find the sockets that stay and open the new ones; undo everything on a failure.
  std::vector<Listener*> kept(next.size(), nullptr);
  std::vector<int> opened(next.size(), -1);
  for (size_t j = 0; j < next.size(); ++j) {
    for (auto& l : listeners_) {
      if (l->fixed >= 0 &&
          config_.listeners[static_cast<size_t>(l->fixed)].listen == next[j].listen) {
        kept[j] = l.get();
      }
    }
    if (kept[j] != nullptr) {
      continue;
    }
    std::string why;
    opened[j] = openTcpListener(next[j].listen, false, why);
    if (opened[j] < 0) {
      err = "listener " + next[j].name + " on " + next[j].listen.toString() + ": " + why;
      for (int fd : opened) {
        if (fd >= 0) {
          ::close(fd);
        }
      }
      return false;
    }
  }
  // Phase 2: close the removed ones, renumber the kept ones, poll the new ones.
  for (auto it = listeners_.begin(); it != listeners_.end();) {
    Listener* l = it->get();
    if (l->fixed >= 0 && std::find(kept.begin(), kept.end(), l) == kept.end()) {
      spdlog::info("listener {} on {} removed; its connections go on",
                   config_.listeners[static_cast<size_t>(l->fixed)].name,
                   config_.listeners[static_cast<size_t>(l->fixed)].listen.toString());
      closeListener(std::move(*it));
      it = listeners_.erase(it);
    } else {
      ++it;
    }
  }
  config_.listeners = next;
  for (size_t j = 0; j < next.size(); ++j) {
    if (kept[j] != nullptr) {
      kept[j]->fixed = static_cast<int>(j);
      kept[j]->origin = next[j].direction;
      continue;
    }
    std::string why;
    if (!pollListener(next[j].direction, opened[j], static_cast<int>(j), why)) {
      spdlog::error("listener {} on {}: {}", next[j].name, next[j].listen.toString(), why);
      continue;
    }
    logListener(next[j], " added");
  }
  return true;
}

void Datapath::closeListener(std::unique_ptr<Listener> l) {
  dropPendingOf(l.get());
  auto* raw = l.release();
  uv_poll_stop(&raw->poll);
  auto closed = [](uv_handle_t* h) {
    auto* listener = static_cast<Listener*>(h->data);
    if (--listener->open_handles == 0) {
      ::close(listener->fd);
      delete listener;
    }
  };
  raw->open_handles = raw->backoff_initialised ? 2 : 1;
  if (raw->backoff_initialised) {
    uv_timer_stop(&raw->backoff);
    uv_close(reinterpret_cast<uv_handle_t*>(&raw->backoff), closed);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&raw->poll), closed);
}

bool Datapath::openListener(Origin origin, int family, std::string& err) {
  const auto& ic = config_.intercept;
  const bool tproxy = ic.mode == InterceptMode::Tproxy;
  const uint16_t port = origin == Origin::Outbound ? ic.outbound_port : ic.inbound_port;
  SocketAddress addr = SocketAddress::loopback(family, port);
  if (!tproxy && origin == Origin::Inbound) {
    // REDIRECT in PREROUTING rewrites to the incoming interface's address
    // (docs/spec/interception.md §C.3): listen on all, and accept only connections whose original
    // destination is an agent port.
    addr = SocketAddress::parse(family == AF_INET ? "0.0.0.0:0" : "[::]:0");
    addr.setPort(port);
  }
  int fd = openTcpListener(addr, tproxy, err);
  if (fd < 0) {
    err = std::string(origin == Origin::Outbound ? "outbound" : "inbound") + " TCP listener " +
          addr.toString() + ": " + err;
    return false;
  }
  if (!pollListener(origin, fd, -1, err)) {
    err = "listen on " + addr.toString() + ": " + err;
    return false;
  }
  return true;
}

bool Datapath::pollListener(Origin origin, int fd, int fixed, std::string& err) {
  auto l = std::make_unique<Listener>();
  l->owner = this;
  l->origin = origin;
  l->fd = fd;
  l->fixed = fixed;
  int rc = uv_poll_init(loop_, &l->poll, fd);
  l->poll.data = l.get();
  if (rc == 0) {
    rc = uv_poll_start(&l->poll, UV_READABLE, &Datapath::onConnection);
  }
  listeners_.push_back(std::move(l));  // stop() closes it, whether or not polling started
  if (rc != 0) {
    err = uv_strerror(rc);
    return false;
  }
  return true;
}

void Datapath::onConnection(uv_poll_t* handle, int status, int /*events*/) {
  auto* l = static_cast<Listener*>(handle->data);
  if (status < 0) {
    spdlog::warn("listener poll: {}", uv_strerror(status));
    return;
  }
  // Bounded per wake-up, so a connection flood cannot starve the loop.
  for (int i = 0; i < 64; ++i) {
    int fd = ::accept4(l->fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err != EAGAIN && err != EWOULDBLOCK && err != EINTR && err != ECONNABORTED) {
        l->owner->acceptFailed(*l, err);
      }
      return;
    }
    if (!l->owner->accept(*l, fd)) {
      l->owner->acceptFailed(*l, EMFILE);  // its upstream socket hit the limit
      return;
    }
    l->backoff_ms = 0;
  }
}

void Datapath::acceptFailed(Listener& l, int err) {
  const bool no_fds = err == EMFILE || err == ENFILE;
  uint64_t shed = 0;
  int taken = 0;  // connections the spare round took off the queue (admitted or shed)
  if (no_fds && spare_fd_ >= 0) {
    // Give up the spare so the pending connections can be taken: one from a source holding fewer
    // sessions than the heaviest takes the place of that source's newest unfinished one (a
    // flood's tail must not close a peer's connection queued among it); any other is closed at
    // once, so its peer sees a close instead of waiting in the backlog.
    ::close(spare_fd_);
    spare_fd_ = -1;
    std::optional<Shares> shares;  // built at the first connection taken
    for (int i = 0; i < 64; ++i) {
      const int fd = ::accept4(l.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        break;
      }
      ++taken;
      if (!shares) {
        sourceShares(shares.emplace());
      }
      if (!admitAtLimit(*shares, l, fd)) {
        ::close(fd);
        ++shed;
      }
    }
    spare_fd_ = openSpareFd();
    tcp_.accept_shed += shed;
  }
  ++tcp_.accept_errors;
  // The pause doubles only while nothing moves. A round that took connections made progress:
  // at the limit every descriptor a round frees goes back into it, so the next accept fails
  // again at once whether or not the queue is draining (it depends only on whether the count of
  // free descriptors is even). Doubling then would serve one round of 64 a second while a flood
  // queues thousands in front of a legitimate peer.
  l.backoff_ms = l.backoff_ms == 0 || taken > 0 ? kAcceptBackoffFirstMs
                                                : std::min(l.backoff_ms * 2, kAcceptBackoffMaxMs);
  if (accept_log_.allow()) {
    spdlog::warn(
        "accept: {}{}; listener paused {} ms ({} accept errors, {} connections shed so far{})",
        std::strerror(err),
        no_fds ? " (at the open-file limit: connections are closed at once until descriptors "
                 "free up)"
               : "",
        l.backoff_ms, tcp_.accept_errors, tcp_.accept_shed, spare_fd_ < 0 ? "; no spare fd" : "");
  }
  uv_poll_stop(&l.poll);
  if (!l.backoff_initialised) {
    uv_timer_init(loop_, &l.backoff);
    l.backoff.data = &l;
    l.backoff_initialised = true;
  }
  uv_timer_start(
      &l.backoff,
      [](uv_timer_t* t) {
        auto* listener = static_cast<Listener*>(t->data);
        uv_poll_start(&listener->poll, UV_READABLE, &Datapath::onConnection);
      },
      l.backoff_ms, 0);
}

void Datapath::sourceShares(Shares& out) {
  for (auto* s : sessions_) {
    if (s->info().origin == Origin::Inbound && !s->closing()) {
      out.holders.push_back({s, nullptr});
      out.shares.add(s->info().peer.ip(), s->info().id, &out.holders.back(), !s->driver().ready());
    }
  }
  // Worker loops' sessions, by loop 0's record (docs/architecture.md, "Worker loops").
  for (auto& [id, r] : remote_) {
    if (r.origin == Origin::Inbound && !r.closing) {
      out.holders.push_back({nullptr, &r});
      out.shares.add(r.ip, id, &out.holders.back(), !r.ready);
    }
  }
}

namespace {
constexpr const char* kLimitDetail =
    "at the open-file limit, closed for a connection from a source holding fewer";
}  // namespace

bool Datapath::closeForLimit(const Holder& victim) {
  if (victim.local != nullptr) {
    // Its two descriptors are free at once (uv_close closes the sockets).
    victim.local->close(CloseReason::DescriptorLimit, kLimitDetail);
    return true;
  }
  // Its loop closes it unless it finished its handshake meanwhile (then a Kept comes back).
  victim.remote->closing = true;
  workers_[victim.remote->loop - 1]->closeSession(victim.remote->id, CloseReason::DescriptorLimit,
                                                  kLimitDetail, true);
  return false;
}

bool Datapath::admitAtLimit(Shares& shares, Listener& l, int fd) {
  // Our agent's own connections (outbound) hold no share: any source's unfinished session yields.
  Holder* victim =
      shares.shares.victimFor(l.origin == Origin::Inbound ? peerAddress(fd).ip() : std::string());
  if (victim == nullptr || (victim->remote != nullptr && pending_.size() >= kPendingLimit)) {
    return false;
  }
  if (closeForLimit(*victim)) {
    // One descriptor for this connection's upstream, one for the spare.
    accept(l, fd);
    return true;
  }
  return addPending(l, fd, victim->remote->id, false);
}

bool Datapath::addPending(Listener& l, int fd, uint64_t victim, bool counted) {
  if (pending_.size() >= kPendingLimit || pending_timer_ == nullptr) {
    return false;
  }
  pending_.push_back(Pending{&l, fd, victim, uv_now(loop_) + kPendingDeadlineMs, counted});
  if (uv_is_active(reinterpret_cast<uv_handle_t*>(pending_timer_)) == 0) {
    uv_timer_start(
        pending_timer_,
        [](uv_timer_t* t) { static_cast<Datapath*>(t->data)->expirePending(false); }, 100, 100);
  }
  return true;
}

void Datapath::retryPending(uint64_t id) {
  for (size_t i = 0; i < pending_.size();) {
    if (pending_[i].victim != id) {
      ++i;
      continue;
    }
    const Pending p = pending_[i];
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
    // The victim's descriptors are free (or it was kept: then accept chooses again or sheds).
    accept(*p.listener, p.fd, p.counted);
  }
}

void Datapath::expirePending(bool all) {
  const uint64_t now = uv_now(loop_);
  for (size_t i = 0; i < pending_.size();) {
    if (!all && pending_[i].deadline_ms > now) {
      ++i;
      continue;
    }
    ::close(pending_[i].fd);
    ++tcp_.accept_shed;
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
  }
  if (pending_.empty() && pending_timer_ != nullptr) {
    uv_timer_stop(pending_timer_);
  }
}

void Datapath::dropPendingOf(const Listener* l) {
  for (size_t i = 0; i < pending_.size();) {
    if (pending_[i].listener != l) {
      ++i;
      continue;
    }
    ::close(pending_[i].fd);
    ++tcp_.accept_shed;
    pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
  }
}

}  // namespace sidecrypt::proxy
