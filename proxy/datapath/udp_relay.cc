#include "proxy/datapath/udp_relay.h"

#include <netinet/in.h>
#include <sodium.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <new>

#include <cerrno>
#include <cstring>

namespace sidecrypt::proxy {

using filters::gossip::Datagram;
using filters::gossip::PacketResult;
using filters::gossip::Verdict;

UdpRelay::UdpRelay(uv_loop_t* loop, Flow flow, int fd, DatagramSender& sender,
                   DatagramRouteLookup lookup)
    : loop_(loop), flow_(flow), fd_(fd), sender_(sender), lookup_(std::move(lookup)) {
  // kBatch slots plus one spare for opening out of place. Pages are touched only as datagrams
  // arrive, so resident memory follows the real datagram sizes.
  void* mem =
      ::mmap(nullptr, kMemoryBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    throw std::bad_alloc();
  }
  ::madvise(mem, kMemoryBytes, MADV_DONTDUMP);
  memory_ = static_cast<uint8_t*>(mem);
  for (size_t i = 0; i < kBatch; ++i) {
    slots_[i] = memory_ + i * kSlotBytes;
  }
  spare_ = memory_ + kBatch * kSlotBytes;
}

UdpRelay::~UdpRelay() {
  if (poll_ == nullptr && fd_ >= 0) {
    ::close(fd_);
  }
  sodium_memzero(memory_, kMemoryBytes);
  ::munmap(memory_, kMemoryBytes);
}

bool UdpRelay::start(std::string& err) {
  poll_ = new Poll{{}, fd_};
  int rc = uv_poll_init(loop_, &poll_->handle, fd_);
  if (rc != 0) {
    err = std::string("uv_poll_init: ") + uv_strerror(rc);
    delete poll_;
    poll_ = nullptr;
    return false;
  }
  poll_->handle.data = this;
  rc = uv_poll_start(&poll_->handle, UV_READABLE, &UdpRelay::onPoll);
  if (rc != 0) {
    err = std::string("uv_poll_start: ") + uv_strerror(rc);
    close();
    return false;
  }
  return true;
}

void UdpRelay::close() {
  if (poll_ != nullptr) {
    uv_poll_stop(&poll_->handle);
    poll_->handle.data = poll_;
    uv_close(reinterpret_cast<uv_handle_t*>(&poll_->handle), [](uv_handle_t* h) {
      auto* p = static_cast<Poll*>(h->data);
      ::close(p->fd);
      delete p;
    });
    poll_ = nullptr;
    fd_ = -1;
  }
}

void UdpRelay::onPoll(uv_poll_t* handle, int status, int /*events*/) {
  auto* self = static_cast<UdpRelay*>(handle->data);
  if (status < 0) {
    return;
  }
  // Bounded: at most 8 batches per wake-up so one busy socket cannot starve the loop.
  for (int round = 0; round < 8; ++round) {
    if (self->receiveBatch() < kBatch) {
      break;
    }
  }
}

size_t UdpRelay::receiveBatch() {
  for (size_t i = 0; i < kBatch; ++i) {
    iovs_[i] = {slots_[i] + kHeadroom, kSlotBytes - kHeadroom - 64};
    msghdr& m = msgs_[i].msg_hdr;
    m = msghdr{};
    m.msg_name = &names_[i];
    m.msg_namelen = sizeof names_[i];
    m.msg_iov = &iovs_[i];
    m.msg_iovlen = 1;
    m.msg_control = controls_[i].data();
    m.msg_controllen = controls_[i].size();
  }
  int n = ::recvmmsg(fd_, msgs_.data(), kBatch, MSG_DONTWAIT, nullptr);
  if (n <= 0) {
    return 0;
  }
  for (size_t i = 0; i < static_cast<size_t>(n); ++i) {
    handle(i, msgs_[i]);
  }
  sender_.flush();
  stats_.send_failed = sender_.failed();
  // Sent (the kernel copied them): wipe what the batch used, headroom and the room an answer
  // rewritten in place may take, so no plaintext (key queries carry keys) stays behind.
  for (size_t i = 0; i < static_cast<size_t>(n); ++i) {
    sodium_memzero(slots_[i], std::min(kSlotBytes, kHeadroom + msgs_[i].msg_len + kWipeSlack));
  }
  return static_cast<size_t>(n);
}

namespace {

SocketAddress originalDestination(const msghdr& m) {
  for (cmsghdr* c = CMSG_FIRSTHDR(const_cast<msghdr*>(&m)); c != nullptr;
       c = CMSG_NXTHDR(const_cast<msghdr*>(&m), c)) {
    if (c->cmsg_level == SOL_IP && c->cmsg_type == IP_ORIGDSTADDR) {
      return SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(CMSG_DATA(c)),
                                         sizeof(sockaddr_in));
    }
    if (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_ORIGDSTADDR) {
      return SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(CMSG_DATA(c)),
                                         sizeof(sockaddr_in6));
    }
  }
  return {};
}

}  // namespace

void UdpRelay::handle(size_t i, const mmsghdr& msg) {
  ++stats_.received;
  if ((msg.msg_hdr.msg_flags & MSG_TRUNC) != 0) {
    ++stats_.truncated;
    return;
  }
  const SocketAddress src = SocketAddress::fromSockaddr(
      static_cast<const sockaddr*>(msg.msg_hdr.msg_name), msg.msg_hdr.msg_namelen);
  const SocketAddress dst = originalDestination(msg.msg_hdr);
  if (!src.valid() || !dst.valid()) {
    ++stats_.no_destination;
    return;
  }
  // memberlist sends from its bind port: outbound, the agent is the source; inbound, the agent
  // is the original destination.
  const SocketAddress& agent = flow_ == Flow::Outbound ? src : dst;
  const SocketAddress& peer = flow_ == Flow::Outbound ? dst : src;
  uint16_t port = agent.port();
  DatagramRoute route = lookup_(port);
  if (route.filter == nullptr && flow_ == Flow::Outbound) {
    port = dst.port();  // the agent's packet to another member's gossip port
    route = lookup_(port);
  }
  if (route.filter == nullptr) {
    ++stats_.unknown_port;
    return;
  }
  Datagram d = Datagram::inSlot({slots_[i], kSlotBytes}, kHeadroom, msg.msg_len);
  PacketResult r;
  if (flow_ == Flow::Outbound && dst.sameIp(src)) {
    // The agent talking to itself never crosses the wire: no seal; the tap may answer for it.
    ++stats_.to_self;
    if (out_tap_ && !out_tap_(agent, dst, route.pool, d)) {
      return;
    }
    SocketAddress from = src;
    from.setPort(self_source_port_);
    if (self_source_port_ != 0 && sender_.queue(from, dst, d.data())) {
      ++stats_.forwarded;
    }
    return;
  }
  if (flow_ == Flow::Outbound) {
    if (out_tap_ && !out_tap_(agent, dst, route.pool, d)) {
      return;
    }
    r = route.filter->onAgentPacket(d);
  } else {
    Datagram spare = Datagram::inSlot({spare_, kSlotBytes}, kHeadroom, 0);
    r = route.filter->onPeerPacket(d, spare);
    if (d.slot.data() != slots_[i]) {
      std::swap(slots_[i], spare_);  // the plaintext lives in the old spare now
    }
  }
  if (observer_) {
    observer_(peer, port, route.pool, flow_, r);
  }
  if (r.verdict != Verdict::Forward) {
    ++stats_.dropped;
    return;
  }
  if (flow_ == Flow::Inbound && in_tap_) {
    in_tap_(peer, route.pool, d.data());
  }
  if (sender_.queue(src, dst, d.data())) {
    ++stats_.forwarded;
  }
}

}  // namespace sidecrypt::proxy
