#pragma once

#include <sys/socket.h>
#include <uv.h>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "filters/common/direction.h"
#include "filters/gossip/gossip_datagram_filter.h"
#include "proxy/config/config.h"
#include "proxy/net/address.h"
#include "proxy/net/raw_udp_sender.h"

namespace sidecrypt::proxy {

using Flow = filters::Direction;  // Outbound: agent -> peer, Inbound: peer -> agent

// What a gossip port resolves to: its pool's filter (nullptr: not a gossip port) and the pool.
// Looked up once per datagram; the observer and the taps are given the pool, not the port to
// look up again. The filters outlive every relay (they are replaced in place on reload).
struct DatagramRoute {
  filters::gossip::GossipDatagramFilter* filter = nullptr;
  GossipPool pool = GossipPool::Lan;
};
using DatagramRouteLookup = std::function<DatagramRoute(uint16_t port)>;
// Called for every datagram from a peer (census, later issues): peer address and result.
using DatagramObserver =
    std::function<void(const SocketAddress& peer, uint16_t agent_port, GossipPool pool, Flow flow,
                       const filters::gossip::PacketResult& result)>;

// The plaintext on the agent's side of the filter (GossipObserver): outbound before sealing (it
// may rewrite the packet), inbound after opening, only for packets that will be delivered.
// Returns false to hold the packet back (the tap sends it later itself).
using OutboundTap = std::function<bool(const SocketAddress& agent, const SocketAddress& dst,
                                       GossipPool pool, filters::gossip::Datagram& packet)>;
using InboundTap =
    std::function<void(const SocketAddress& peer, GossipPool pool, std::span<const uint8_t> plain)>;

// Every counter of a UDP relay in one list (docs/architecture.md §4); the names are the ones the
// stats log line, /status JSON (`udp`) and /metrics (`sidecrypt_udp_relay_packets_total{result}`)
// use.
#define SIDECRYPT_UDP_RELAY_COUNTERS(COUNTER)                                \
  COUNTER(received)                                                          \
  COUNTER(forwarded)                                                         \
  /* The filter said drop. */                                                \
  COUNTER(dropped)                                                           \
  /* Captured but not one of the agent's gossip ports. */                    \
  COUNTER(unknown_port)                                                      \
  /* Larger than a slot (never sent by memberlist: 64 KiB max). */           \
  COUNTER(truncated)                                                         \
  COUNTER(no_destination)                                                    \
  COUNTER(send_failed)                                                       \
  /* The agent's packets to its own address (answers to its own queries). */ \
  COUNTER(to_self)

struct UdpRelayStats {
#define SIDECRYPT_UDP_RELAY_DECLARE(name) uint64_t name = 0;
  SIDECRYPT_UDP_RELAY_COUNTERS(SIDECRYPT_UDP_RELAY_DECLARE)
#undef SIDECRYPT_UDP_RELAY_DECLARE

  // Calls fn(name, value) for every counter, in list order.
  template <typename Fn>
  void forEach(Fn&& fn) const {
#define SIDECRYPT_UDP_RELAY_VISIT(name) fn(#name, name);
    SIDECRYPT_UDP_RELAY_COUNTERS(SIDECRYPT_UDP_RELAY_VISIT)
#undef SIDECRYPT_UDP_RELAY_VISIT
  }
  UdpRelayStats& operator+=(const UdpRelayStats& o) {
#define SIDECRYPT_UDP_RELAY_ADD(name) name += o.name;
    SIDECRYPT_UDP_RELAY_COUNTERS(SIDECRYPT_UDP_RELAY_ADD)
#undef SIDECRYPT_UDP_RELAY_ADD
    return *this;
  }
};

// One captured UDP socket (outbound or inbound, one family) on the event loop: reads batches
// with recvmmsg (the original destination comes from IP_ORIGDSTADDR control messages, which
// libuv's UDP API cannot give, so the socket is polled), runs the gossip filter in place, and
// sends the results with the raw sender in one sendmmsg batch. No allocation per packet: the
// slots are allocated once.
class UdpRelay {
 public:
  static constexpr size_t kBatch = 32;
  static constexpr size_t kHeadroom = 512;
  static constexpr size_t kSlotBytes = kHeadroom + 65536 + 64;
  static constexpr size_t kMemoryBytes = (kBatch + 1) * kSlotBytes;
  static constexpr size_t kWipeSlack = 4096;  // beyond the datagram: seal tag, rewritten answer

  UdpRelay(uv_loop_t* loop, Flow flow, int fd, DatagramSender& sender, DatagramRouteLookup lookup);
  ~UdpRelay();
  UdpRelay(const UdpRelay&) = delete;
  UdpRelay& operator=(const UdpRelay&) = delete;

  bool start(std::string& err);
  void close();  // stops polling; the fd is closed with the handle
  void setObserver(DatagramObserver o) { observer_ = std::move(o); }
  void setTaps(OutboundTap out, InboundTap in) {
    out_tap_ = std::move(out);
    in_tap_ = std::move(in);
  }
  // Outbound: the source port for the agent's packets to itself (its answer to its own Serf
  // query), delivered in plaintext from this port so no interception rule matches them again.
  void setSelfSourcePort(uint16_t port) { self_source_port_ = port; }
  const UdpRelayStats& stats() const { return stats_; }
  Flow flow() const { return flow_; }

 private:
  static void onPoll(uv_poll_t* handle, int status, int events);
  size_t receiveBatch();
  void handle(size_t i, const mmsghdr& msg);

  uv_loop_t* loop_;
  Flow flow_;
  int fd_;
  DatagramSender& sender_;
  DatagramRouteLookup lookup_;
  DatagramObserver observer_;
  OutboundTap out_tap_;
  InboundTap in_tap_;
  struct Poll {
    uv_poll_t handle;
    int fd;
  };
  Poll* poll_ = nullptr;  // heap: freed (and its fd closed) in the close callback
  // The slots: mmap'd and MADV_DONTDUMP (a Serf key query carries the raw key, and an answer
  // sidecrypt writes carries base64 keys), and the used part of each slot is wiped once its
  // batch is sent. Not mlock'd: 2 MiB per relay would exceed a default RLIMIT_MEMLOCK.
  uint8_t* memory_ = nullptr;
  std::array<uint8_t*, kBatch> slots_{};
  uint8_t* spare_ = nullptr;
  std::array<mmsghdr, kBatch> msgs_{};
  std::array<iovec, kBatch> iovs_{};
  std::array<sockaddr_storage, kBatch> names_{};
  std::array<std::array<uint8_t, 128>, kBatch> controls_{};
  UdpRelayStats stats_;
  uint16_t self_source_port_ = 0;
};

}  // namespace sidecrypt::proxy
