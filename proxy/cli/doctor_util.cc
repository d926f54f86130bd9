#include "proxy/cli/doctor.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "proxy/cli/admin_client.h"
#include "proxy/cli/commands.h"
#include "proxy/config/config_loader.h"
#include "proxy/intercept/capabilities.h"
#include "proxy/intercept/command_runner.h"
#include "proxy/intercept/instance_lock.h"
#include "proxy/intercept/rules.h"
#include "proxy/net/address.h"

namespace sidecrypt::proxy::cli::doctor {

using nlohmann::json;
namespace fs = std::filesystem;

const char* statusName(Status s) {
  switch (s) {
    case Status::Ok:
      return "ok";
    case Status::Fail:
      return "fail";
    case Status::Warn:
      return "warn";
    case Status::Info:
      return "info";
    case Status::Skip:
      return "skip";
  }
  return "?";
}

std::string lastLines(const std::string& text, size_t n) {
  auto t = trimmed(text);
  size_t pos = t.size();
  for (size_t i = 0; i < n && pos != std::string::npos && pos > 0; ++i) {
    pos = t.rfind('\n', pos - 1);
  }
  return pos == std::string::npos || pos == 0 ? t : t.substr(pos + 1);
}

std::string joinPorts(const std::vector<uint16_t>& ports) {
  std::string out;
  for (auto p : ports) {
    out += (out.empty() ? "" : ",") + std::to_string(p);
  }
  return out.empty() ? "-" : out;
}

bool inPath(const std::string& tool) {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/sbin:/usr/bin:/sbin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (!dir.empty() && ::access((dir + "/" + tool).c_str(), X_OK) == 0) {
      return true;
    }
  }
  return false;
}

const char* packageOf(const std::string& tool) {
  if (tool == "nft") {
    return "nftables";
  }
  if (tool == "ip") {
    return "iproute2";
  }
  if (tool == "unshare") {
    return "util-linux";
  }
  return "iptables";
}

bool kernelBefore(int major, int minor) {
  utsname u{};
  ::uname(&u);
  int ma = 0;
  int mi = 0;
  if (std::sscanf(u.release, "%d.%d", &ma, &mi) != 2) {
    return false;
  }
  return ma < major || (ma == major && mi < minor);
}

// `sidecrypt run` processes in this network namespace.
std::vector<pid_t> runningProxies() {
  std::vector<pid_t> out;
  std::error_code ec;
  const auto self_ns = fs::read_symlink("/proc/self/ns/net", ec);
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) {
      continue;
    }
    const pid_t pid = std::atoi(name.c_str());
    if (pid == ::getpid()) {
      continue;
    }
    const std::string cmdline = readFile("/proc/" + name + "/cmdline");
    std::vector<std::string> args;
    for (size_t pos = 0; pos < cmdline.size();) {
      const size_t end = cmdline.find('\0', pos);
      args.push_back(cmdline.substr(pos, end == std::string::npos ? end : end - pos));
      pos = end == std::string::npos ? cmdline.size() : end + 1;
    }
    if (args.size() < 2 || fs::path(args[0]).filename() != "sidecrypt" || args[1] != "run") {
      continue;
    }
    std::error_code ns_ec;
    if (fs::read_symlink("/proc/" + name + "/ns/net", ns_ec) != self_ns || ns_ec) {
      continue;
    }
    out.push_back(pid);
  }
  return out;
}

// A TCP connect with a deadline; RST on close so nothing lingers. Returns "" on success.
std::string probeConnect(const SocketAddress& to, int timeout_ms) {
  const int fd = ::socket(to.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    return std::string("socket: ") + std::strerror(errno);
  }
  std::string result;
  if (::connect(fd, to.sa(), to.len()) != 0 && errno != EINPROGRESS) {
    result = std::strerror(errno);
  } else {
    pollfd pfd{fd, POLLOUT, 0};
    const int n = ::poll(&pfd, 1, timeout_ms);
    int err = 0;
    socklen_t len = sizeof err;
    if (n == 0) {
      result = "no answer within " + std::to_string(timeout_ms) + " ms";
    } else if (n < 0) {
      result = std::string("poll: ") + std::strerror(errno);
    } else if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      result = std::strerror(err != 0 ? err : errno);
    }
  }
  linger lg{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  ::close(fd);
  return result;
}

std::optional<uint64_t> tcpAccepted(const std::string& admin) {
  auto r = adminRequest(admin, "GET", "/status", 3000);
  if (r.status != 200) {
    return std::nullopt;
  }
  try {
    auto j = json::parse(r.body);
    return j.at("tcp").at("accepted").get<uint64_t>();
  } catch (const json::exception&) {
    return std::nullopt;
  }
}

std::string addressWithPort(const std::string& ip, uint16_t port) {
  if (ip.find(':') != std::string::npos) {
    return "[" + ip + "]:" + std::to_string(port);
  }
  return ip + ":" + std::to_string(port);
}

}  // namespace sidecrypt::proxy::cli::doctor
