#include "proxy/net/sockets.h"

#include <fcntl.h>
#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace sidecrypt::proxy {

std::string errnoMessage(const char* call) {
  return std::string(call) + ": " + std::strerror(errno);
}

namespace {

bool setInt(int fd, int level, int opt, int value, const char* what, std::string& err) {
  if (::setsockopt(fd, level, opt, &value, sizeof value) != 0) {
    err = errnoMessage(what);
    return false;
  }
  return true;
}

bool setTransparent(int fd, int family, std::string& err) {
  const bool ok =
      family == AF_INET
          ? setInt(fd, SOL_IP, IP_TRANSPARENT, 1, "setsockopt(IP_TRANSPARENT)", err)
          : setInt(fd, SOL_IPV6, IPV6_TRANSPARENT, 1, "setsockopt(IPV6_TRANSPARENT)", err);
  if (!ok && errno == EPERM) {
    err += " (TPROXY mode needs CAP_NET_RAW)";
  }
  return ok;
}

int fail(int fd) {
  ::close(fd);
  return -1;
}

int newSocket(int family, int type, std::string& err) {
  int fd = ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    err = errnoMessage("socket");
    return -1;
  }
  if (family == AF_INET6 && !setInt(fd, SOL_IPV6, IPV6_V6ONLY, 1, "setsockopt(IPV6_V6ONLY)", err)) {
    return fail(fd);
  }
  return fd;
}

}  // namespace

constexpr int kListenBacklog = 4096;

int openTcpListener(const SocketAddress& addr, bool transparent, std::string& err) {
  int fd = newSocket(addr.family(), SOCK_STREAM, err);
  if (fd < 0) {
    return -1;
  }
  if (!setInt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "setsockopt(SO_REUSEADDR)", err) ||
      (transparent && !setTransparent(fd, addr.family(), err))) {
    return fail(fd);
  }
  if (::bind(fd, addr.sa(), addr.len()) != 0) {
    const bool in_use = errno == EADDRINUSE;
    err = errnoMessage(("bind " + addr.toString()).c_str());
    if (in_use) {
      // Besides another listener, an outgoing connection whose ephemeral port is this one holds
      // it (the port is inside net.ipv4.ip_local_port_range).
      err +=
          " (another listener, or an outgoing connection using it as its ephemeral port: "
          "keep listener ports out of net.ipv4.ip_local_port_range or list them in "
          "net.ipv4.ip_local_reserved_ports)";
    }
    return fail(fd);
  }
  // A reconnect storm (every client of a restarted server at once) queues its completed
  // connections here while the loop is busy with handshakes: a full queue drops the clients'
  // SYNs and ACKs, and each drop costs the client a retransmission (1 s, then 3 s). The kernel
  // caps this at net.core.somaxconn (4096 by default since Linux 5.4).
  if (::listen(fd, kListenBacklog) != 0) {
    err = errnoMessage("listen");
    return fail(fd);
  }
  return fd;
}

int openUdpCapture(const SocketAddress& addr, bool transparent, std::string& err) {
  int fd = newSocket(addr.family(), SOCK_DGRAM, err);
  if (fd < 0) {
    return -1;
  }
  const bool v4 = addr.family() == AF_INET;
  if (!setInt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "setsockopt(SO_REUSEADDR)", err) ||
      (transparent && !setTransparent(fd, addr.family(), err)) ||
      !(v4 ? setInt(fd, SOL_IP, IP_RECVORIGDSTADDR, 1, "setsockopt(IP_RECVORIGDSTADDR)", err)
           : setInt(fd, SOL_IPV6, IPV6_RECVORIGDSTADDR, 1, "setsockopt(IPV6_RECVORIGDSTADDR)",
                    err))) {
    return fail(fd);
  }
  // memberlist asks for 2 MiB; gossip bursts (push/pull fan-out) must not be dropped here.
  for (int size = 2 << 20; size >= 64 << 10; size /= 2) {
    if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size) == 0) {
      break;
    }
  }
  if (::bind(fd, addr.sa(), addr.len()) != 0) {
    err = errnoMessage(("bind " + addr.toString()).c_str());
    return fail(fd);
  }
  return fd;
}

int openTcpUpstream(int family, uint32_t mark, const SocketAddress* bind_to, std::string& err) {
  int fd = newSocket(family, SOCK_STREAM, err);
  if (fd < 0) {
    return -1;
  }
  if (mark != 0 &&
      !setInt(fd, SOL_SOCKET, SO_MARK, static_cast<int>(mark), "setsockopt(SO_MARK)", err)) {
    if (errno == EPERM) {
      err += " (needs CAP_NET_RAW on Linux >= 5.17, else CAP_NET_ADMIN)";
    }
    return fail(fd);
  }
  if (!setInt(fd, IPPROTO_TCP, TCP_NODELAY, 1, "setsockopt(TCP_NODELAY)", err)) {
    return fail(fd);
  }
  if (bind_to != nullptr && bind_to->valid()) {
    if (!setTransparent(fd, family, err)) {
      return fail(fd);
    }
    if (::bind(fd, bind_to->sa(), bind_to->len()) != 0) {
      err = errnoMessage(("bind " + bind_to->toString()).c_str());
      return fail(fd);
    }
  }
  return fd;
}

SocketAddress localAddress(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return {};
  }
  return SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

SocketAddress peerAddress(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return {};
  }
  return SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

SocketAddress redirectOriginalDst(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  const bool v6 = localAddress(fd).family() == AF_INET6;
  // IP6T_SO_ORIGINAL_DST and SO_ORIGINAL_DST share the value 80; only the level differs.
  static_assert(IP6T_SO_ORIGINAL_DST == SO_ORIGINAL_DST);
  if (::getsockopt(fd, v6 ? SOL_IPV6 : SOL_IP, SO_ORIGINAL_DST, &ss, &len) != 0) {
    return {};
  }
  return SocketAddress::fromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

}  // namespace sidecrypt::proxy
