#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "proxy/decode/capture_reader.h"

namespace sidecrypt::proxy::decode {

// Receives the in-order bytes of one TCP direction.
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  // New contiguous bytes; `at` is the segment that made them available.
  virtual void data(std::span<const uint8_t> bytes, const CapturedPacket& at) = 0;
  // The direction is over. `why` is empty after a FIN that completed the data, else the reason
  // it stopped early (reset, gap, capture ended, ...); `lost_data`: bytes the sender sent are
  // missing from the capture. `at` is null at the end of the capture.
  virtual void end(const CapturedPacket* at, std::string_view why, bool lost_data) = 0;
};

struct TcpLimits {
  size_t max_pending_bytes = size_t{4} * 1024 * 1024;  // out-of-order data held per direction
  size_t max_pending_segments = 4096;
  size_t max_total_pending_bytes = size_t{64} * 1024 * 1024;  // all directions together
  size_t max_directions = 16384;                              // open directions at once
};

// Reassembles each TCP direction (keyed by its 4-tuple) in sequence order: retransmits and
// overlaps are trimmed, out-of-order segments are held until the gap fills (bounded), a SYN
// starts a new stream. Without a SYN in the capture a direction starts at its first data
// segment.
class TcpReassembler {
 public:
  using SinkFactory = std::function<std::unique_ptr<StreamSink>(const CapturedPacket& first)>;
  explicit TcpReassembler(SinkFactory factory, TcpLimits limits = {});
  ~TcpReassembler();

  void add(const CapturedPacket& seg);
  // End of capture: every open direction ends (in the order they started).
  void finish();
  // Segments ignored because a limit was reached.
  size_t refused() const { return refused_; }

 private:
  struct Direction {
    std::unique_ptr<StreamSink> sink;
    uint64_t order = 0;
    uint32_t next_seq = 0;   // sequence number of the next byte to deliver
    uint64_t delivered = 0;  // bytes delivered so far
    int64_t fin_at = -1;     // stream offset of the FIN, once seen
    std::map<uint64_t, std::vector<uint8_t>> pending;  // by stream offset
    size_t pending_bytes = 0;
    bool had_data = false;
  };
  Direction* direction(const CapturedPacket& seg, const std::string& key);
  void payload(Direction& d, const CapturedPacket& seg, uint32_t data_seq, std::string& why);
  void drain(Direction& d, const CapturedPacket& seg);
  void close(const std::string& key, const CapturedPacket* at, std::string_view why,
             bool lost_data = false);

  SinkFactory factory_;
  TcpLimits limits_;
  std::unordered_map<std::string, std::unique_ptr<Direction>> dirs_;
  uint64_t next_order_ = 0;
  size_t total_pending_ = 0;
  size_t refused_ = 0;
};

}  // namespace sidecrypt::proxy::decode
