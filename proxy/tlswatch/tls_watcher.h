#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "proxy/tlswatch/tls_watch.h"

namespace sidecrypt::proxy::tlswatch {

// libuv inotify watches (uv_fs_event_t, one per directory of a WatchPlan) and the debounce
// timer, on the loop thread. Events that concern a watched file start or extend the debounce;
// when it settles, `settled` runs (the Server then queues a check on a worker thread). Nothing
// here reads a file: the plan comes from that check.
class TlsWatcher {
 public:
  TlsWatcher(uv_loop_t* loop, uint32_t debounce_ms, std::function<void()> settled);
  ~TlsWatcher();  // closes the handles (their memory goes in the close callbacks)
  TlsWatcher(const TlsWatcher&) = delete;
  TlsWatcher& operator=(const TlsWatcher&) = delete;

  // Watches the plan's directories: a directory kept with the same identity keeps its watch, a
  // new or replaced one gets a new watch, one no longer planned loses its watch. Returns how many
  // watches were started (a caller checks once more after new watches: a change made before
  // they were in place is then not missed). A directory that cannot be watched is logged.
  size_t apply(const WatchPlan& plan);
  void setDebounce(uint32_t debounce_ms);
  size_t directories() const { return handles_.size(); }
  // An event as the inotify callback sees it (public for the unit tests).
  void onEvent(const std::string& dir, const char* name);

 private:
  struct Handle {
    uv_fs_event_t* h = nullptr;
    uint64_t dev = 0;
    uint64_t ino = 0;
  };
  static void closeHandle(uv_fs_event_t* h);
  uv_loop_t* loop_;
  uv_timer_t* timer_;
  Debouncer debounce_;
  std::function<void()> settled_;
  WatchPlan plan_;
  std::map<std::string, Handle> handles_;
};

}  // namespace sidecrypt::proxy::tlswatch
