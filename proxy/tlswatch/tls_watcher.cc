#include "proxy/tlswatch/tls_watcher.h"

#include <spdlog/spdlog.h>

#include <utility>

namespace sidecrypt::proxy::tlswatch {

namespace {

// A burst that never pauses (a file rewritten continuously) is still checked this many debounce
// periods after its first event.
constexpr uint64_t kMaxDelayFactor = 10;

struct Watch {
  uv_fs_event_t h{};
  TlsWatcher* owner = nullptr;
  std::string dir;
};

}  // namespace

TlsWatcher::TlsWatcher(uv_loop_t* loop, uint32_t debounce_ms, std::function<void()> settled)
    : loop_(loop),
      timer_(new uv_timer_t{}),
      debounce_(debounce_ms, debounce_ms * kMaxDelayFactor),
      settled_(std::move(settled)) {
  uv_timer_init(loop_, timer_);
  timer_->data = this;
}

TlsWatcher::~TlsWatcher() {
  for (auto& [dir, handle] : handles_) {
    closeHandle(handle.h);
  }
  uv_timer_stop(timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(timer_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}

void TlsWatcher::closeHandle(uv_fs_event_t* h) {
  uv_fs_event_stop(h);
  uv_close(reinterpret_cast<uv_handle_t*>(h),
           [](uv_handle_t* closed) { delete static_cast<Watch*>(closed->data); });
}

void TlsWatcher::setDebounce(uint32_t debounce_ms) {
  debounce_.setQuiet(debounce_ms, debounce_ms * kMaxDelayFactor);
}

size_t TlsWatcher::apply(const WatchPlan& plan) {
  for (auto it = handles_.begin(); it != handles_.end();) {
    auto p = plan.dirs.find(it->first);
    if (p == plan.dirs.end() || p->second.dev != it->second.dev ||
        p->second.ino != it->second.ino) {
      closeHandle(it->second.h);
      it = handles_.erase(it);
    } else {
      ++it;
    }
  }
  size_t started = 0;
  for (const auto& [dir, d] : plan.dirs) {
    if (handles_.count(dir) > 0) {
      continue;
    }
    auto* w = new Watch;
    w->owner = this;
    w->dir = dir;
    w->h.data = w;
    uv_fs_event_init(loop_, &w->h);
    const int rc = uv_fs_event_start(
        &w->h,
        [](uv_fs_event_t* h, const char* name, int /*events*/, int status) {
          auto* watch = static_cast<Watch*>(h->data);
          if (status != 0) {
            spdlog::warn("tls watch: {}: {}", watch->dir, uv_strerror(status));
          }
          watch->owner->onEvent(watch->dir, name);
        },
        dir.c_str(), 0);
    if (rc != 0) {
      // Not a failure of the watch as a whole: the next check plans again (and `sidecrypt
      // reload` always re-reads the files).
      spdlog::warn("tls watch: cannot watch {}: {}", dir, uv_strerror(rc));
      uv_close(reinterpret_cast<uv_handle_t*>(&w->h),
               [](uv_handle_t* closed) { delete static_cast<Watch*>(closed->data); });
      continue;
    }
    handles_[dir] = Handle{&w->h, d.dev, d.ino};
    ++started;
  }
  plan_ = plan;
  return started;
}

void TlsWatcher::onEvent(const std::string& dir, const char* name) {
  if (!plan_.concerns(dir, name == nullptr ? std::string_view() : std::string_view(name))) {
    return;
  }
  spdlog::debug("tls watch: {}/{} changed", dir, name == nullptr ? "" : name);
  const uint64_t wait = debounce_.onEvent(uv_now(loop_));
  uv_timer_start(
      timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<TlsWatcher*>(t->data);
        self->debounce_.fired();
        self->settled_();
      },
      wait, 0);
}

}  // namespace sidecrypt::proxy::tlswatch
