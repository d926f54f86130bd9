#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstring>
#include <string>

namespace sidecrypt::proxy {

// An IPv4 or IPv6 socket address (value type). IPv4-mapped IPv6 addresses are kept as they come.
class SocketAddress {
 public:
  SocketAddress() { std::memset(&storage_, 0, sizeof storage_); }
  static SocketAddress fromSockaddr(const sockaddr* sa, socklen_t len);
  // "10.250.0.1:7946", "[fd00:250::1]:7946"; nullopt-like: family() == AF_UNSPEC on failure.
  static SocketAddress parse(const std::string& text);
  static SocketAddress loopback(int family, uint16_t port);

  int family() const { return storage_.ss_family; }
  bool valid() const { return family() == AF_INET || family() == AF_INET6; }
  uint16_t port() const;
  void setPort(uint16_t port);
  const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&storage_); }
  sockaddr* sa() { return reinterpret_cast<sockaddr*>(&storage_); }
  socklen_t len() const;
  std::string ip() const;
  std::string toString() const;
  // Address bytes (4 or 16) for checksums and comparisons.
  const uint8_t* ipBytes() const;
  size_t ipLen() const { return family() == AF_INET ? 4 : 16; }
  bool sameIp(const SocketAddress& o) const;
  bool operator==(const SocketAddress& o) const;

 private:
  sockaddr_storage storage_;
};

// An address block ("10.2.0.0/16", "fd00:2::/64", or one address). Matches IPv4-mapped IPv6
// peers against IPv4 blocks too.
class Cidr {
 public:
  // nullopt-like: valid() false when the text is not an address or the prefix is out of range.
  static Cidr parse(const std::string& text);
  bool valid() const { return family_ != 0; }
  bool contains(const SocketAddress& a) const;

 private:
  int family_ = 0;
  uint8_t bytes_[16] = {};
  int prefix_ = 0;
};

}  // namespace sidecrypt::proxy
