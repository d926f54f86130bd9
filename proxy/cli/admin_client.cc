#include "proxy/cli/admin_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "proxy/config/config_loader.h"
#include "proxy/net/address.h"

namespace sidecrypt::proxy::cli {

std::string adminAddressFrom(const std::string& config_path) {
  auto r = loadConfig(config_path);
  if (auto* c = std::get_if<Config>(&r)) {
    return c->admin.listen;
  }
  return AdminConfig{}.listen;
}

AdminReply adminRequest(const std::string& listen, const std::string& method,
                        const std::string& path, int timeout_ms) {
  const SocketAddress addr = SocketAddress::parse(listen);
  if (!addr.valid()) {
    return {0, "invalid admin address " + listen};
  }
  int fd = ::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return {0, std::string("socket: ") + std::strerror(errno)};
  }
  timeval tv{timeout_ms / 1000, static_cast<suseconds_t>(timeout_ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd, addr.sa(), addr.len()) != 0) {
    std::string err = "cannot reach sidecrypt's admin endpoint at " + listen + ": " +
                      std::strerror(errno) + " (is `sidecrypt run` running?)";
    ::close(fd);
    return {0, err};
  }
  // Host is the address literal and X-Sidecrypt marks a request no browser page can send
  // cross-site: the admin endpoint's guards (browserGuard) refuse state changes without it.
  const std::string req = method + " " + path + " HTTP/1.1\r\nHost: " + listen +
                          "\r\nX-Sidecrypt: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return {0, "cannot send the request"};
  }
  std::string raw;
  char buf[8192];
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      break;
    }
    raw.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  auto reply = parseHttpReply(raw);
  if (!reply) {
    return {0, "malformed reply from the admin endpoint"};
  }
  return std::move(*reply);
}

std::optional<AdminReply> parseHttpReply(const std::string& raw) {
  const size_t sp = raw.find(' ');
  const size_t hdr_end = raw.find("\r\n\r\n");
  if (sp == std::string::npos || hdr_end == std::string::npos) {
    return std::nullopt;
  }
  return AdminReply{std::atoi(raw.c_str() + sp + 1), raw.substr(hdr_end + 4)};
}

std::string urlEncode(const std::string& v) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const unsigned char c : v) {
    if (std::isalnum(c) != 0 || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace sidecrypt::proxy::cli
