#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "proxy/net/address.h"

namespace sidecrypt::proxy {

// Where a UdpRelay sends the batch it filtered: queue() each datagram (its payload stays valid
// until flush()), then flush() once per batch. RawUdpSender in production; the relay's unit tests
// put an ordinary UDP socket behind it, so the batch path runs without CAP_NET_RAW.
class DatagramSender {
 public:
  virtual ~DatagramSender() = default;
  // Returns false if the datagram cannot be sent (too large for UDP, family mismatch).
  virtual bool queue(const SocketAddress& src, const SocketAddress& dst,
                     std::span<const uint8_t> payload) = 0;
  // Sends everything queued; returns the number of datagrams refused.
  virtual size_t flush() = 0;
  // Datagrams refused so far (queue() or the kernel).
  virtual uint64_t failed() const = 0;

 protected:
  DatagramSender() = default;
  DatagramSender(const DatagramSender&) = default;
  DatagramSender& operator=(const DatagramSender&) = default;
};

// Sends UDP datagrams with any source address and port through a raw IPPROTO_UDP socket
// (docs/spec/interception.md §B.3): the agent's own ip:port for outbound gossip (memberlist sends
// and receives on one port), the peer's exact ip:port for inbound delivery. The kernel builds the
// IP header and fragments; sidecrypt writes the UDP header (IPv4 checksum computed here, IPv6 by
// the kernel via IPV6_CHECKSUM). Needs CAP_NET_RAW. Batches with sendmmsg.
class RawUdpSender final : public DatagramSender {
 public:
  static constexpr size_t kBatch = 32;

  RawUdpSender() = default;
  ~RawUdpSender() override;
  RawUdpSender(const RawUdpSender&) = delete;
  RawUdpSender& operator=(const RawUdpSender&) = delete;

  bool open(int family, uint32_t mark, std::string& err);
  int family() const { return family_; }

  // Queues one datagram; the payload must stay valid until flush(). Flushes when the batch is
  // full. Returns false if the datagram cannot be sent (too large for UDP, family mismatch).
  bool queue(const SocketAddress& src, const SocketAddress& dst,
             std::span<const uint8_t> payload) override;
  // Sends everything queued; returns the number of datagrams the kernel refused.
  size_t flush() override;
  uint64_t sent() const { return sent_; }
  uint64_t failed() const override { return failed_; }
  int lastErrno() const { return last_errno_; }

 private:
  struct Entry {
    std::array<uint8_t, 8> udp_header;
    sockaddr_storage dst;
    std::array<uint8_t, 64> control;  // one IP_PKTINFO / IPV6_PKTINFO cmsg
    iovec iov[2];
  };
  int fd_ = -1;
  int family_ = 0;
  size_t count_ = 0;
  std::array<Entry, kBatch> entries_{};
  std::array<mmsghdr, kBatch> msgs_{};
  uint64_t sent_ = 0;
  uint64_t failed_ = 0;
  int last_errno_ = 0;
};

// RFC 768 checksum of a UDP datagram over the IPv4/IPv6 pseudo-header (0 becomes 0xffff).
uint16_t udpChecksum(const SocketAddress& src, const SocketAddress& dst,
                     std::span<const uint8_t, 8> header, std::span<const uint8_t> payload);

}  // namespace sidecrypt::proxy
