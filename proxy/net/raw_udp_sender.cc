#include "proxy/net/raw_udp_sender.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "proxy/net/sockets.h"

namespace sidecrypt::proxy {

namespace {

uint32_t sum16(const uint8_t* p, size_t n, uint32_t acc) {
  for (size_t i = 0; i + 1 < n; i += 2) {
    acc += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  }
  if ((n & 1) != 0) {
    acc += static_cast<uint32_t>(p[n - 1] << 8);
  }
  return acc;
}

}  // namespace

uint16_t udpChecksum(const SocketAddress& src, const SocketAddress& dst,
                     std::span<const uint8_t, 8> header, std::span<const uint8_t> payload) {
  uint32_t acc = 0;
  acc = sum16(src.ipBytes(), src.ipLen(), acc);
  acc = sum16(dst.ipBytes(), dst.ipLen(), acc);
  const uint32_t udp_len = static_cast<uint32_t>(8 + payload.size());
  acc += IPPROTO_UDP;
  acc += udp_len >> 16;
  acc += udp_len & 0xffff;
  acc = sum16(header.data(), 6, acc);  // skip the checksum field itself
  acc = sum16(payload.data(), payload.size(), acc);
  while ((acc >> 16) != 0) {
    acc = (acc & 0xffff) + (acc >> 16);
  }
  const auto sum = static_cast<uint16_t>(~acc & 0xffff);
  return sum == 0 ? 0xffff : sum;
}

RawUdpSender::~RawUdpSender() {
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

bool RawUdpSender::open(int family, uint32_t mark, std::string& err) {
  fd_ = ::socket(family, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
  if (fd_ < 0) {
    err = errnoMessage("socket(SOCK_RAW, IPPROTO_UDP) (needs CAP_NET_RAW)");
    return false;
  }
  family_ = family;
  int one = 1;
  const bool v4 = family == AF_INET;
  if (::setsockopt(fd_, v4 ? SOL_IP : SOL_IPV6, v4 ? IP_TRANSPARENT : IPV6_TRANSPARENT, &one,
                   sizeof one) != 0) {
    err = errnoMessage("setsockopt(IP_TRANSPARENT) on the raw sender");
    return false;
  }
  if (mark != 0 && ::setsockopt(fd_, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
    err = errnoMessage("setsockopt(SO_MARK) on the raw sender");
    return false;
  }
  // A raw IPPROTO_UDP socket receives a copy of every UDP datagram in the namespace: drop all.
  sock_filter drop_all{BPF_RET | BPF_K, 0, 0, 0};
  sock_fprog prog{1, &drop_all};
  if (::setsockopt(fd_, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0) {
    err = errnoMessage("setsockopt(SO_ATTACH_FILTER) on the raw sender");
    return false;
  }
  if (!v4) {
    int offset = 6;  // the kernel fills the UDP checksum (mandatory in IPv6)
    if (::setsockopt(fd_, SOL_IPV6, IPV6_CHECKSUM, &offset, sizeof offset) != 0) {
      err = errnoMessage("setsockopt(IPV6_CHECKSUM)");
      return false;
    }
  }
  return true;
}

bool RawUdpSender::queue(const SocketAddress& src, const SocketAddress& dst,
                         std::span<const uint8_t> payload) {
  if (src.family() != family_ || dst.family() != family_ || payload.size() > 65507) {
    ++failed_;
    return false;
  }
  if (count_ == kBatch) {
    flush();
  }
  Entry& e = entries_[count_];
  const uint16_t len = static_cast<uint16_t>(8 + payload.size());
  const uint16_t sport = src.port();
  const uint16_t dport = dst.port();
  e.udp_header = {static_cast<uint8_t>(sport >> 8),
                  static_cast<uint8_t>(sport),
                  static_cast<uint8_t>(dport >> 8),
                  static_cast<uint8_t>(dport),
                  static_cast<uint8_t>(len >> 8),
                  static_cast<uint8_t>(len),
                  0,
                  0};
  if (family_ == AF_INET) {
    const uint16_t sum = udpChecksum(src, dst, e.udp_header, payload);
    e.udp_header[6] = static_cast<uint8_t>(sum >> 8);
    e.udp_header[7] = static_cast<uint8_t>(sum);
  }
  // Raw sockets take the destination with port 0; the port lives in our UDP header.
  SocketAddress zero = SocketAddress::fromSockaddr(dst.sa(), dst.len());
  zero.setPort(0);
  std::memcpy(&e.dst, zero.sa(), zero.len());
  e.iov[0] = {e.udp_header.data(), e.udp_header.size()};
  e.iov[1] = {const_cast<uint8_t*>(payload.data()), payload.size()};
  msghdr& m = msgs_[count_].msg_hdr;
  m = msghdr{};
  m.msg_name = &e.dst;
  m.msg_namelen = dst.len();
  m.msg_iov = e.iov;
  m.msg_iovlen = 2;
  m.msg_control = e.control.data();
  std::memset(e.control.data(), 0, e.control.size());
  // The source address goes in a PKTINFO control message; IP_TRANSPARENT allows a non-local one.
  if (family_ == AF_INET) {
    m.msg_controllen = CMSG_SPACE(sizeof(in_pktinfo));
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
    in_pktinfo info{};
    std::memcpy(&info.ipi_spec_dst, src.ipBytes(), 4);
    std::memcpy(CMSG_DATA(c), &info, sizeof info);
  } else {
    m.msg_controllen = CMSG_SPACE(sizeof(in6_pktinfo));
    cmsghdr* c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_IPV6;
    c->cmsg_type = IPV6_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(in6_pktinfo));
    in6_pktinfo info{};
    std::memcpy(&info.ipi6_addr, src.ipBytes(), 16);
    std::memcpy(CMSG_DATA(c), &info, sizeof info);
  }
  ++count_;
  return true;
}

size_t RawUdpSender::flush() {
  size_t refused = 0;
  size_t done = 0;
  while (done < count_) {
    int n = ::sendmmsg(fd_, msgs_.data() + done, static_cast<unsigned>(count_ - done), 0);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      // Skip the datagram the kernel refused (EAGAIN on a full queue, EMSGSIZE...) and go on:
      // UDP may drop, but one bad datagram must not hold back the rest of the batch.
      last_errno_ = errno;
      ++refused;
      ++done;
      continue;
    }
    done += static_cast<size_t>(n);
  }
  sent_ += count_ - refused;
  failed_ += refused;
  count_ = 0;
  return refused;
}

}  // namespace sidecrypt::proxy
