// UdpRelay on a real libuv loop with loopback UDP sockets, no root. The relay's receive side is
// the production one (an ordinary UDP socket from openUdpCapture, recvmmsg batches, the original
// destination from IP_ORIGDSTADDR, which without TPROXY is the socket's own address). Its send
// side is RawUdpSender in production, which needs CAP_NET_RAW to write any source address; here
// a DatagramSender seam puts an ordinary UDP socket behind the same queue/flush batch calls: it
// records the source and destination the relay asked for and delivers the payload to the test's
// receiving socket. Every test ends with the loop-close and descriptor-count leak check.
#include "proxy/datapath/udp_relay.h"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "filters/gossip/gossip_datagram_filter.h"
#include "proxy/net/sockets.h"
#include "tests/unit/filters/gossip/gossip_test_util.h"
#include "tests/unit/proxy/datapath/loop_test_util.h"

using namespace sidecrypt;
using namespace sidecrypt::test::loop;
using namespace sidecrypt::test::gossip;
namespace fg = sidecrypt::filters::gossip;
using proxy::Flow;
using proxy::SocketAddress;
using proxy::UdpRelay;

namespace {

// What the relay asked for, and the payload delivered with an ordinary socket to `deliver_to`.
class LoopbackSender final : public proxy::DatagramSender {
 public:
  struct Sent {
    SocketAddress src;
    SocketAddress dst;
  };

  explicit LoopbackSender(const SocketAddress& deliver_to)
      : deliver_to_(deliver_to), fd_(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
    REQUIRE(fd_.valid());
  }
  bool queue(const SocketAddress& src, const SocketAddress& dst,
             std::span<const uint8_t> payload) override {
    sent.push_back({src, dst});
    // Not copied: as RawUdpSender, it reads the payload only at flush(), so a relay that reused
    // a slot before the flush would deliver the wrong bytes.
    queued_.push_back(payload);
    return true;
  }
  size_t flush() override {
    if (queued_.empty()) {
      return 0;
    }
    batches.push_back(queued_.size());
    for (const auto& p : queued_) {
      REQUIRE(::sendto(fd_.get(), p.data(), p.size(), 0, deliver_to_.sa(), deliver_to_.len()) ==
              static_cast<ssize_t>(p.size()));
    }
    queued_.clear();
    return 0;
  }
  uint64_t failed() const override { return 0; }
  void close() { fd_.reset(); }

  std::vector<Sent> sent;
  std::vector<size_t> batches;  // datagrams per flush()

 private:
  SocketAddress deliver_to_;
  Fd fd_;
  std::vector<std::span<const uint8_t>> queued_;
};

Fd udpSocket(const char* ip) {
  Fd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  REQUIRE(fd.valid());
  const int size = 4 << 20;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  const SocketAddress a = SocketAddress::parse(std::string(ip) + ":0");
  REQUIRE(::bind(fd.get(), a.sa(), a.len()) == 0);
  return fd;
}

void sendTo(int fd, const Bytes& b, const SocketAddress& to) {
  REQUIRE(::sendto(fd, b.data(), b.size(), 0, to.sa(), to.len()) == static_cast<ssize_t>(b.size()));
}

std::vector<Bytes> receiveAll(int fd) {
  std::vector<Bytes> out;
  std::vector<uint8_t> buf(65536);
  for (;;) {
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n < 0) {
      return out;
    }
    out.emplace_back(buf.begin(), buf.begin() + n);
  }
}

// The real gossip packets of packets.json that memberlist sealed with one key: each as sealed
// and as plaintext.
struct Packets {
  filters::keyring::KeySetConstSharedPtr ring;
  std::vector<Bytes> sealed;
  std::vector<Bytes> plain;  // what memberlist sealed (the agent's view)
  std::vector<Bytes> nonce;  // the nonce it sealed with
};

Packets gossipPackets() {
  const auto vectors = loadVectors("packets.json");
  Packets p;
  for (const auto& v : vectors["vectors"]) {
    if (v["kind"] != "gossip" || v["keyring_hex"].empty()) {
      continue;
    }
    if (!p.ring) {
      p.ring = ringFromHex(v["keyring_hex"]);
    }
    REQUIRE(v["expected_key_index"] == 0);
    p.sealed.push_back(hex(v["sealed_hex"]));
    p.plain.push_back(hex(v["layers"]["inner_plaintext_hex"]));
    p.nonce.push_back(hex(v["nonce_hex"]));
  }
  REQUIRE(p.sealed.size() == 4);
  return p;
}

std::string hexOf(const Bytes& b) {
  return toHexString(b);
}

}  // namespace

TEST_CASE(
    "an inbound relay opens a burst of sealed gossip packets in batches and drops what does "
    "not open",
    "[udp_relay][loop]") {
  const Packets packets = gossipPackets();
  TestLoop loop;
  Fd peer = udpSocket("127.0.0.1");
  Fd agent = udpSocket("127.0.0.1");
  std::string err;
  const int capture = proxy::openUdpCapture(SocketAddress::parse("127.0.0.1:0"), false, err);
  INFO(err);
  REQUIRE(capture >= 0);
  const SocketAddress relay_addr = boundAddress(capture);
  auto policy = std::make_shared<fg::GossipPolicy>();  // verify_incoming: refuse what fails
  fg::GossipDatagramFilter filter(packets.ring, policy);
  LoopbackSender sender(boundAddress(agent.get()));
  // With TPROXY the original destination is the agent's port; here it is the relay's own.
  // The port resolves to the filter and its pool once; the observer is given that pool.
  UdpRelay relay(loop.get(), Flow::Inbound, capture, sender, [&](uint16_t port) {
    return port == relay_addr.port() ? proxy::DatagramRoute{&filter, proxy::GossipPool::Wan}
                                     : proxy::DatagramRoute{};
  });
  size_t observed = 0;
  relay.setObserver([&](const SocketAddress& from, uint16_t port, proxy::GossipPool pool, Flow flow,
                        const fg::PacketResult& r) {
    CHECK(from == boundAddress(peer.get()));
    CHECK(port == relay_addr.port());
    CHECK(pool == proxy::GossipPool::Wan);
    CHECK(flow == Flow::Inbound);
    CHECK((r.verdict == fg::Verdict::Forward) == (r.key_index == 0));
    ++observed;
  });
  const bool started = relay.start(err);
  INFO(err);
  REQUIRE(started);

  // More than one batch, queued in the socket before the loop runs: 40 sealed packets and 2
  // that do not open (one garbage, one sealed packet with a flipped tag byte).
  constexpr size_t kRounds = 10;
  std::vector<Bytes> expected;
  for (size_t round = 0; round < kRounds; ++round) {
    for (size_t i = 0; i < packets.sealed.size(); ++i) {
      sendTo(peer.get(), packets.sealed[i], relay_addr);
      expected.push_back(packets.plain[i]);
    }
    if (round == 3) {
      sendTo(peer.get(), Bytes(64, 0x41), relay_addr);
    }
    if (round == 7) {
      Bytes bad = packets.sealed[0];
      bad.back() ^= 1;
      sendTo(peer.get(), bad, relay_addr);
    }
  }
  const size_t total = expected.size() + 2;
  REQUIRE(total > UdpRelay::kBatch);

  std::vector<Bytes> delivered;
  REQUIRE(loop.runUntil(
      [&] {
        for (auto& d : receiveAll(agent.get())) {
          delivered.push_back(std::move(d));
        }
        return relay.stats().received == total && delivered.size() >= expected.size();
      },
      2000));
  const auto& st = relay.stats();
  CHECK(st.forwarded == expected.size());
  CHECK(st.dropped == 2);
  CHECK(st.unknown_port == 0);
  CHECK(st.no_destination == 0);
  CHECK(observed == total);
  REQUIRE(delivered.size() == expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    CAPTURE(i);
    CHECK(hexOf(delivered[i]) == hexOf(expected[i]));
  }
  // Delivered as from the peer to the original destination, one flush per batch read.
  for (const auto& s : sender.sent) {
    CHECK(s.src == boundAddress(peer.get()));
    CHECK(s.dst == relay_addr);
  }
  CHECK(sender.batches.size() >= 2);
  CHECK(sender.batches.size() < expected.size() / 4);
  for (size_t b : sender.batches) {
    CHECK(b <= UdpRelay::kBatch);
  }

  relay.close();
  peer.reset();
  agent.reset();
  sender.close();
  loop.finish();
}

TEST_CASE(
    "an outbound relay seals the agent's packets byte for byte as memberlist and skips ports "
    "that are not gossip ports",
    "[udp_relay][loop]") {
  const Packets packets = gossipPackets();
  TestLoop loop;
  // The agent on 127.0.0.1, the capture socket standing for a peer on 127.0.0.2 (the agent's
  // packets to its own address take another path, UdpRelay::setSelfSourcePort).
  Fd agent = udpSocket("127.0.0.1");
  Fd stranger = udpSocket("127.0.0.1");  // a port that is not a gossip port
  Fd peer = udpSocket("127.0.0.1");
  std::string err;
  const int capture = proxy::openUdpCapture(SocketAddress::parse("127.0.0.2:0"), false, err);
  INFO(err);
  REQUIRE(capture >= 0);
  const SocketAddress relay_addr = boundAddress(capture);
  const SocketAddress agent_addr = boundAddress(agent.get());
  auto policy = std::make_shared<fg::GossipPolicy>();
  QueuedNonces nonces;  // memberlist's recorded nonces, so the sealed bytes must equal its own
  fg::GossipDatagramFilter filter(packets.ring, policy, nonces);
  LoopbackSender sender(boundAddress(peer.get()));
  UdpRelay relay(loop.get(), Flow::Outbound, capture, sender, [&](uint16_t port) {
    return port == agent_addr.port() ? proxy::DatagramRoute{&filter, proxy::GossipPool::Lan}
                                     : proxy::DatagramRoute{};
  });
  const bool started = relay.start(err);
  INFO(err);
  REQUIRE(started);

  constexpr size_t kRounds = 12;
  std::vector<Bytes> expected;
  for (size_t round = 0; round < kRounds; ++round) {
    for (size_t i = 0; i < packets.plain.size(); ++i) {
      sendTo(agent.get(), packets.plain[i], relay_addr);
      nonces.push(packets.nonce[i]);
      expected.push_back(packets.sealed[i]);
    }
  }
  sendTo(stranger.get(), packets.plain[0], relay_addr);
  const size_t total = expected.size() + 1;

  std::vector<Bytes> delivered;
  REQUIRE(loop.runUntil(
      [&] {
        for (auto& d : receiveAll(peer.get())) {
          delivered.push_back(std::move(d));
        }
        return relay.stats().received == total && delivered.size() >= expected.size();
      },
      2000));
  const auto& st = relay.stats();
  CHECK(st.forwarded == expected.size());
  CHECK(st.unknown_port == 1);
  CHECK(st.dropped == 0);
  CHECK(st.to_self == 0);
  REQUIRE(delivered.size() == expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    CAPTURE(i);
    CHECK(hexOf(delivered[i]) == hexOf(expected[i]));
    // And it opens with the ring (the peer's view).
    Bytes out(delivered[i].size());
    const auto r = fg::openPayload(*packets.ring, delivered[i], {}, out);
    CHECK(r.ok());
  }
  CHECK(nonces.left() == 0);
  for (const auto& s : sender.sent) {
    CHECK(s.src == agent_addr);
    CHECK(s.dst == relay_addr);
  }
  CHECK(sender.batches.size() >= 2);

  relay.close();
  agent.reset();
  stranger.reset();
  peer.reset();
  sender.close();
  loop.finish();
}
