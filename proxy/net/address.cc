#include "proxy/net/address.h"

#include <arpa/inet.h>

namespace sidecrypt::proxy {

SocketAddress SocketAddress::fromSockaddr(const sockaddr* sa, socklen_t len) {
  SocketAddress a;
  if (sa != nullptr && len <= static_cast<socklen_t>(sizeof a.storage_) &&
      (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)) {
    std::memcpy(&a.storage_, sa, len);
  }
  return a;
}

SocketAddress SocketAddress::loopback(int family, uint16_t port) {
  SocketAddress a;
  if (family == AF_INET) {
    auto* s = reinterpret_cast<sockaddr_in*>(&a.storage_);
    s->sin_family = AF_INET;
    s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->sin_port = htons(port);
  } else {
    auto* s = reinterpret_cast<sockaddr_in6*>(&a.storage_);
    s->sin6_family = AF_INET6;
    s->sin6_addr = in6addr_loopback;
    s->sin6_port = htons(port);
  }
  return a;
}

SocketAddress SocketAddress::parse(const std::string& text) {
  SocketAddress a;
  std::string host;
  std::string port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string::npos || close + 2 > text.size() || text[close + 1] != ':') {
      return a;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos) {
      return a;
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  char* end = nullptr;
  unsigned long p = std::strtoul(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || p > 65535) {
    return a;
  }
  auto* s4 = reinterpret_cast<sockaddr_in*>(&a.storage_);
  auto* s6 = reinterpret_cast<sockaddr_in6*>(&a.storage_);
  if (inet_pton(AF_INET, host.c_str(), &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons(static_cast<uint16_t>(p));
  } else if (inet_pton(AF_INET6, host.c_str(), &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(static_cast<uint16_t>(p));
  }
  return a;
}

uint16_t SocketAddress::port() const {
  if (family() == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  }
  if (family() == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  }
  return 0;
}

void SocketAddress::setPort(uint16_t port) {
  if (family() == AF_INET) {
    reinterpret_cast<sockaddr_in*>(&storage_)->sin_port = htons(port);
  } else if (family() == AF_INET6) {
    reinterpret_cast<sockaddr_in6*>(&storage_)->sin6_port = htons(port);
  }
}

socklen_t SocketAddress::len() const {
  return family() == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
}

const uint8_t* SocketAddress::ipBytes() const {
  if (family() == AF_INET) {
    return reinterpret_cast<const uint8_t*>(
        &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr);
  }
  return reinterpret_cast<const uint8_t*>(
      &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr);
}

std::string SocketAddress::ip() const {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (valid()) {
    inet_ntop(family(), ipBytes(), buf, sizeof buf);
  }
  return buf;
}

std::string SocketAddress::toString() const {
  // Built by appending: gcc 12 at -O3 raises a false -Wrestrict on "[" + std::string.
  std::string out;
  const bool v6 = family() == AF_INET6;
  if (v6) {
    out += '[';
  }
  out += ip();
  if (v6) {
    out += ']';
  }
  out += ':';
  out += std::to_string(port());
  return out;
}

bool SocketAddress::sameIp(const SocketAddress& o) const {
  return family() == o.family() && valid() && std::memcmp(ipBytes(), o.ipBytes(), ipLen()) == 0;
}

bool SocketAddress::operator==(const SocketAddress& o) const {
  return sameIp(o) && port() == o.port();
}

Cidr Cidr::parse(const std::string& text) {
  Cidr c;
  const auto slash = text.find('/');
  const std::string ip = text.substr(0, slash);
  int family = ip.find(':') != std::string::npos ? AF_INET6 : AF_INET;
  if (inet_pton(family, ip.c_str(), c.bytes_) != 1) {
    return {};
  }
  const int max = family == AF_INET ? 32 : 128;
  int prefix = max;
  if (slash != std::string::npos) {
    const std::string p = text.substr(slash + 1);
    if (p.empty() || p.size() > 3 || p.find_first_not_of("0123456789") != std::string::npos) {
      return {};
    }
    prefix = std::stoi(p);
    if (prefix > max) {
      return {};
    }
  }
  c.family_ = family;
  c.prefix_ = prefix;
  return c;
}

bool Cidr::contains(const SocketAddress& a) const {
  if (!valid() || !a.valid()) {
    return false;
  }
  const uint8_t* bytes = a.ipBytes();
  if (a.family() != family_) {
    // An IPv4-mapped IPv6 peer (::ffff:a.b.c.d) against an IPv4 block.
    static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (family_ != AF_INET || a.family() != AF_INET6 || std::memcmp(bytes, kMapped, 12) != 0) {
      return false;
    }
    bytes += 12;
  }
  const int full = prefix_ / 8;
  if (std::memcmp(bytes, bytes_, static_cast<size_t>(full)) != 0) {
    return false;
  }
  const int rest = prefix_ % 8;
  if (rest == 0) {
    return true;
  }
  const auto mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (bytes[full] & mask) == (bytes_[full] & mask);
}

}  // namespace sidecrypt::proxy
