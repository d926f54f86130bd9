#include "proxy/intercept/netlink_routes.h"

#include <linux/fib_rules.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>

namespace sidecrypt::proxy {

namespace {

// Both request bodies (struct rtmsg, struct fib_rule_hdr) are 12 bytes.
struct DumpRequest {
  nlmsghdr header;
  rtmsg body;
};

uint32_t readU32(const rtattr* a) {
  uint32_t v = 0;
  if (RTA_PAYLOAD(a) >= sizeof v) {
    std::memcpy(&v, RTA_DATA(a), sizeof v);
  }
  return v;
}

// Sends one NLM_F_DUMP request and hands every answer message of `type` to `each`. Bounded: a
// 2 s receive timeout and at most 4096 reads.
bool dump(uint16_t request, uint16_t type, int family, std::string& error,
          const std::function<void(const nlmsghdr*)>& each) {
  const int fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) {
    error = std::string("netlink socket: ") + std::strerror(errno);
    return false;
  }
  timeval tv{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  DumpRequest req{};
  req.header.nlmsg_len = sizeof req;
  req.header.nlmsg_type = request;
  req.header.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.header.nlmsg_seq = 1;
  req.body.rtm_family = static_cast<unsigned char>(family);
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(fd, &req, sizeof req, 0, reinterpret_cast<const sockaddr*>(&kernel), sizeof kernel) <
      0) {
    error = std::string("netlink send: ") + std::strerror(errno);
    ::close(fd);
    return false;
  }
  alignas(nlmsghdr) static thread_local char buf[65536];
  for (int reads = 0; reads < 4096; ++reads) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      error = std::string("netlink receive: ") + std::strerror(errno);
      ::close(fd);
      return false;
    }
    auto len = static_cast<unsigned int>(n);
    for (auto* h = reinterpret_cast<const nlmsghdr*>(buf); NLMSG_OK(h, len);
         h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_seq != req.header.nlmsg_seq) {
        continue;
      }
      if (h->nlmsg_type == NLMSG_DONE) {
        ::close(fd);
        return true;
      }
      if (h->nlmsg_type == NLMSG_ERROR) {
        const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
        error = std::string("netlink dump: ") + std::strerror(-e->error);
        ::close(fd);
        return false;
      }
      if (h->nlmsg_type == type) {
        each(h);
      }
    }
  }
  error = "netlink dump: no end after 4096 reads";
  ::close(fd);
  return false;
}

}  // namespace

std::optional<std::vector<PolicyRule>> dumpPolicyRules(int family, std::string& error) {
  std::vector<PolicyRule> out;
  const bool ok = dump(RTM_GETRULE, RTM_NEWRULE, family, error, [&](const nlmsghdr* h) {
    if (h->nlmsg_len < NLMSG_LENGTH(sizeof(fib_rule_hdr))) {
      return;
    }
    const auto* frh = static_cast<const fib_rule_hdr*>(NLMSG_DATA(h));
    PolicyRule r;
    r.table = frh->table;
    r.action = frh->action;
    auto len = static_cast<unsigned int>(h->nlmsg_len - NLMSG_LENGTH(sizeof *frh));
    const auto* a = reinterpret_cast<const rtattr*>(reinterpret_cast<const char*>(frh) +
                                                    NLMSG_ALIGN(sizeof *frh));
    for (; RTA_OK(a, len); a = RTA_NEXT(a, len)) {
      switch (a->rta_type) {
        case FRA_PRIORITY:
          r.priority = readU32(a);
          break;
        case FRA_FWMARK:
          r.fwmark = readU32(a);
          r.has_fwmark = true;
          break;
        case FRA_TABLE:
          r.table = readU32(a);
          break;
        default:
          break;
      }
    }
    out.push_back(r);
  });
  if (!ok) {
    return std::nullopt;
  }
  return out;
}

std::optional<std::vector<Route>> dumpRoutes(int family, std::string& error) {
  std::vector<Route> out;
  const bool ok = dump(RTM_GETROUTE, RTM_NEWROUTE, family, error, [&](const nlmsghdr* h) {
    if (h->nlmsg_len < NLMSG_LENGTH(sizeof(rtmsg))) {
      return;
    }
    const auto* rtm = static_cast<const rtmsg*>(NLMSG_DATA(h));
    Route r;
    r.table = rtm->rtm_table;
    r.type = rtm->rtm_type;
    r.dst_len = rtm->rtm_dst_len;
    auto len = static_cast<unsigned int>(RTM_PAYLOAD(h));
    for (const rtattr* a = RTM_RTA(rtm); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
      switch (a->rta_type) {
        case RTA_TABLE:
          r.table = readU32(a);
          break;
        case RTA_DST:
          r.has_dst = true;
          break;
        case RTA_OIF:
          r.oif = static_cast<int>(readU32(a));
          break;
        default:
          break;
      }
    }
    out.push_back(r);
  });
  if (!ok) {
    return std::nullopt;
  }
  return out;
}

}  // namespace sidecrypt::proxy
