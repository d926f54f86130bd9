#include "proxy/decode/tcp_reassembly.h"

#include <algorithm>
#include <utility>

namespace sidecrypt::proxy::decode {

TcpReassembler::TcpReassembler(SinkFactory factory, TcpLimits limits)
    : factory_(std::move(factory)), limits_(limits) {}

TcpReassembler::~TcpReassembler() = default;

TcpReassembler::Direction* TcpReassembler::direction(const CapturedPacket& seg,
                                                     const std::string& key) {
  const bool syn = (seg.flags & kTcpSyn) != 0;
  auto it = dirs_.find(key);
  if (it != dirs_.end() && syn && (it->second->had_data || it->second->fin_at >= 0) &&
      seg.seq + 1 != it->second->next_seq - static_cast<uint32_t>(it->second->delivered)) {
    close(key, &seg, "a new connection reused the ports before this one ended");
    it = dirs_.end();
  }
  if (it != dirs_.end()) {
    if (syn && !it->second->had_data) {
      it->second->next_seq = seg.seq + 1;  // a retransmitted or late SYN before any data
    }
    return it->second.get();
  }
  if (!syn && seg.payload.empty()) {
    return nullptr;  // a pure ACK or FIN of a connection we never saw data of
  }
  if (dirs_.size() >= limits_.max_directions) {
    ++refused_;
    return nullptr;
  }
  auto d = std::make_unique<Direction>();
  d->sink = factory_(seg);
  d->order = next_order_++;
  d->next_seq = syn ? seg.seq + 1 : seg.seq;
  return dirs_.emplace(key, std::move(d)).first->second.get();
}

void TcpReassembler::add(const CapturedPacket& seg) {
  const std::string key = seg.src + ">" + seg.dst;
  Direction* d = direction(seg, key);
  if (d == nullptr) {
    return;
  }
  if ((seg.flags & kTcpRst) != 0) {
    close(key, &seg, "connection reset");
    return;
  }
  const uint32_t data_seq = (seg.flags & kTcpSyn) != 0 ? seg.seq + 1 : seg.seq;
  std::string why;
  if (!seg.payload.empty()) {
    payload(*d, seg, data_seq, why);
    if (!why.empty()) {
      close(key, &seg, why);
      return;
    }
  }
  if ((seg.flags & kTcpFin) != 0) {
    const auto offset = static_cast<int32_t>(data_seq - d->next_seq);
    d->fin_at = std::max<int64_t>(
        0, static_cast<int64_t>(d->delivered) + offset + static_cast<int64_t>(seg.payload.size()));
  }
  if (d->fin_at >= 0 && d->delivered >= static_cast<uint64_t>(d->fin_at)) {
    close(key, &seg, d->pending.empty() ? "" : "data after the FIN", !d->pending.empty());
  }
}

void TcpReassembler::payload(Direction& d, const CapturedPacket& seg, uint32_t data_seq,
                             std::string& why) {
  d.had_data = true;
  // Signed distance from the next expected byte: < 0 retransmit/overlap, > 0 a gap before it.
  const auto offset = static_cast<int32_t>(data_seq - d.next_seq);
  auto bytes = seg.payload;
  if (offset <= 0) {
    const auto skip = static_cast<size_t>(-static_cast<int64_t>(offset));
    if (skip >= bytes.size()) {
      return;  // entirely old: a retransmit
    }
    bytes = bytes.subspan(skip);
    d.sink->data(bytes, seg);
    d.delivered += bytes.size();
    d.next_seq += static_cast<uint32_t>(bytes.size());
    drain(d, seg);
    return;
  }
  if (d.pending_bytes + bytes.size() > limits_.max_pending_bytes ||
      total_pending_ + bytes.size() > limits_.max_total_pending_bytes ||
      d.pending.size() >= limits_.max_pending_segments) {
    ++refused_;
    why = "out-of-order data over the reassembly limit (" +
          std::to_string(limits_.max_pending_bytes) + " bytes)";
    return;
  }
  auto& slot = d.pending[d.delivered + static_cast<uint64_t>(offset)];
  if (slot.size() < bytes.size()) {  // keep the longer copy of a repeated segment
    d.pending_bytes += bytes.size() - slot.size();
    total_pending_ += bytes.size() - slot.size();
    slot.assign(bytes.begin(), bytes.end());
  }
}

void TcpReassembler::drain(Direction& d, const CapturedPacket& seg) {
  while (!d.pending.empty() && d.pending.begin()->first <= d.delivered) {
    auto node = d.pending.extract(d.pending.begin());
    const std::vector<uint8_t>& bytes = node.mapped();
    d.pending_bytes -= bytes.size();
    total_pending_ -= bytes.size();
    const uint64_t skip = d.delivered - node.key();
    if (skip < bytes.size()) {
      const auto fresh = std::span<const uint8_t>(bytes).subspan(static_cast<size_t>(skip));
      d.sink->data(fresh, seg);
      d.delivered += fresh.size();
      d.next_seq += static_cast<uint32_t>(fresh.size());
    }
  }
}

void TcpReassembler::close(const std::string& key, const CapturedPacket* at, std::string_view why,
                           bool lost_data) {
  auto it = dirs_.find(key);
  if (it == dirs_.end()) {
    return;
  }
  auto d = std::move(it->second);
  dirs_.erase(it);
  total_pending_ -= d->pending_bytes;
  d->sink->end(at, why, lost_data);
}

void TcpReassembler::finish() {
  std::vector<std::pair<uint64_t, std::string>> open;
  open.reserve(dirs_.size());
  for (const auto& [key, d] : dirs_) {
    open.emplace_back(d->order, key);
  }
  std::sort(open.begin(), open.end());
  for (const auto& [order, key] : open) {
    const Direction& d = *dirs_.at(key);
    std::string why = "the capture ended before the connection closed";
    bool lost = false;
    if (!d.pending.empty()) {
      why = std::to_string(d.pending.begin()->first - d.delivered) + " bytes at offset " +
            std::to_string(d.delivered) + " are missing from the capture";
      lost = true;
    } else if (d.fin_at > static_cast<int64_t>(d.delivered)) {
      why = std::to_string(static_cast<uint64_t>(d.fin_at) - d.delivered) +
            " bytes before the FIN are missing from the capture";
      lost = true;
    }
    close(key, nullptr, why, lost);
  }
}

}  // namespace sidecrypt::proxy::decode
