#pragma once

#include <chrono>
#include <cstdint>

namespace sidecrypt::proxy {

// Allows `burst` events per `window_ms`; the rest are only counted. For log lines that peers can
// trigger (refused connections, bad packets): the counters carry the totals.
class RateLimit {
 public:
  RateLimit(uint32_t burst, uint64_t window_ms) : burst_(burst), window_ms_(window_ms) {}
  bool allow() {
    const auto now = std::chrono::steady_clock::now();
    if (now - window_start_ > std::chrono::milliseconds(window_ms_)) {
      window_start_ = now;
      used_ = 0;
    }
    if (used_ < burst_) {
      ++used_;
      return true;
    }
    ++suppressed_;
    return false;
  }
  uint64_t suppressed() const { return suppressed_; }

 private:
  uint32_t burst_;
  uint64_t window_ms_;
  uint32_t used_ = 0;
  uint64_t suppressed_ = 0;
  std::chrono::steady_clock::time_point window_start_{};
};

}  // namespace sidecrypt::proxy
