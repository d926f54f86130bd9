#pragma once

#include <algorithm>
#include <cstdint>
#include <queue>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace sidecrypt::proxy {

// Who gives a descriptor up when a connection arrives at the open-file limit
// (Datapath::acceptFailed): the live inbound sessions counted by source address, and for each
// source the ones that may be closed to admit another (still waiting for their first message or
// handshake). A new connection from a source that holds fewer sessions than the heaviest source
// with such a session takes the place of that source's newest one; a connection from a source
// that holds as many as any other is shed. So a flood's connections only ever displace each
// other, and a peer holding few descriptors is served even while the table is full; blindly
// shedding whatever is queued would close it as often as the flood's.
//
// A snapshot, built once per listener wake-up at the limit and updated by each choice it makes:
// no per-session bookkeeping outside it. Choices cost O(log sources) each.
template <typename Session>
class SourceShares {
 public:
  // One live inbound session of `ip` (`id` orders sessions: higher is newer); `evictable` if it
  // may be closed to admit another.
  void add(const std::string& ip, uint64_t id, Session* s, bool evictable) {
    Source& src = sources_[ip];
    ++src.held;
    if (evictable) {
      src.evictable.emplace_back(id, s);
    }
    dirty_ = true;
  }

  // For a new connection from `ip` (empty: our own agent, which holds no share): the session to
  // close in its favour, or nullptr to shed it. Counts the choice (the victim's source holds one
  // less, `ip` one more).
  Session* victimFor(const std::string& ip) {
    if (dirty_) {
      heaviest_ = {};
      for (auto& [addr, src] : sources_) {
        heaviest_.emplace(src.held, &src);
      }
      dirty_ = false;
    }
    uint32_t mine = 0;
    Source* own = nullptr;
    if (!ip.empty()) {
      own = &sources_[ip];  // node-based map: pointers in the heap stay valid
      mine = own->held;
    }
    // Entries are pushed on every change; an entry whose count is no longer its source's is stale.
    while (!heaviest_.empty()) {
      auto [held, src] = heaviest_.top();
      if (held != src->held || src->evictable.empty()) {
        heaviest_.pop();
        continue;
      }
      if (held <= mine) {
        return nullptr;
      }
      heaviest_.pop();
      auto newest = std::max_element(src->evictable.begin(), src->evictable.end());
      Session* victim = newest->second;
      *newest = src->evictable.back();
      src->evictable.pop_back();
      --src->held;
      heaviest_.emplace(src->held, src);
      if (own != nullptr) {
        ++own->held;
        heaviest_.emplace(own->held, own);
      }
      return victim;
    }
    return nullptr;
  }

 private:
  struct Source {
    uint32_t held = 0;
    std::vector<std::pair<uint64_t, Session*>> evictable;
  };
  std::unordered_map<std::string, Source> sources_;
  std::priority_queue<std::pair<uint32_t, Source*>> heaviest_;
  bool dirty_ = false;
};

}  // namespace sidecrypt::proxy
