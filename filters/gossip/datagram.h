#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace sidecrypt::filters::gossip {

// One UDP payload inside a packet slot with headroom and tailroom (docs/architecture.md §3), so a
// filter can grow it in place: sealing writes [version][nonce] into the headroom and the tag into
// the tailroom. A non-owning view: the proxy owns the slots. (To be hoisted into filters/filter.h
// with the other shared filter types.)
struct Datagram {
  std::span<uint8_t> slot;  // the whole slot
  size_t offset = 0;        // payload start within the slot (= headroom)
  size_t length = 0;        // payload bytes

  static Datagram inSlot(std::span<uint8_t> slot, size_t headroom, size_t length) {
    return Datagram{slot, headroom, length};
  }
  std::span<uint8_t> data() const { return slot.subspan(offset, length); }
  size_t headroom() const { return offset; }
  size_t tailroom() const { return slot.size() - offset - length; }
  // Callers check headroom()/tailroom()/length first; these never validate.
  void prepend(size_t n) {
    offset -= n;
    length += n;
  }
  void extend(size_t n) { length += n; }
  void trimFront(size_t n) {
    offset += n;
    length -= n;
  }
  void trimBack(size_t n) { length -= n; }
};

}  // namespace sidecrypt::filters::gossip
