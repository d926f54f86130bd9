// [admin], [metrics], [census] and [log]: how sidecrypt is watched and steered; [runtime]: how it
// uses the machine.

#include <arpa/inet.h>

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include "proxy/config/loader.h"

namespace sidecrypt::proxy::config_detail {

namespace {

// Parses "127.0.0.1:9920" or "[::1]:9920"; returns the host part and whether it is loopback.
std::optional<std::pair<std::string, bool>> parseListen(const std::string& s) {
  std::string host;
  std::string port;
  if (!s.empty() && s.front() == '[') {
    size_t close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      return std::nullopt;
    }
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    size_t colon = s.rfind(':');
    if (colon == std::string::npos) {
      return std::nullopt;
    }
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoi(port) > 65535) {
    return std::nullopt;
  }
  in_addr a4{};
  in6_addr a6{};
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) {
    return std::make_pair(host, (ntohl(a4.s_addr) >> 24) == 127);
  }
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) {
    return std::make_pair(host, IN6_IS_ADDR_LOOPBACK(&a6) != 0);
  }
  return std::nullopt;
}

}  // namespace

void Loader::loadAdmin(const toml::table& t) {
  getBool(t, "admin", "unsafe_allow_remote", cfg.admin.unsafe_allow_remote);
  if (getString(t, "admin", "listen", cfg.admin.listen)) {
    auto parsed = parseListen(cfg.admin.listen);
    if (!parsed) {
      error(*find(t, "listen"), "admin.listen",
            "expected an IP address and port such as \"127.0.0.1:9920\" or \"[::1]:9920\"");
    } else if (!parsed->second && !cfg.admin.unsafe_allow_remote) {
      error(*find(t, "listen"), "admin.listen",
            parsed->first +
                " is not a loopback address; the admin API can reload and reveal "
                "the census, so set admin.unsafe_allow_remote = true to expose it");
    } else if (!parsed->second) {
      cfg.warnings.push_back("admin.listen " + cfg.admin.listen +
                             " is reachable from the network (admin.unsafe_allow_remote)");
    }
  }
}

void Loader::loadMetrics(const toml::table& t) {
  if (auto v = getInt(t, "metrics", "peer_series", 0, 1000)) {
    cfg.metrics.peer_series = static_cast<uint32_t>(*v);
  }
  if (getString(t, "metrics", "listen", cfg.metrics.listen) && !cfg.metrics.listen.empty()) {
    if (!parseListen(cfg.metrics.listen)) {
      error(*find(t, "listen"), "metrics.listen",
            "expected an IP address and port such as \"127.0.0.1:9921\" or \"0.0.0.0:9921\", "
            "or \"\" to turn the metrics listener off");
    } else if (SocketAddress::parse(cfg.metrics.listen) == SocketAddress::parse(cfg.admin.listen)) {
      error(*find(t, "listen"), "metrics.listen",
            cfg.metrics.listen + " is also admin.listen; give the metrics listener its own port");
    }
  }
}

void Loader::loadCensus(const toml::table& t) {
  if (auto v = getInt(t, "census", "max_peers", 1024, 10'000'000)) {
    cfg.census.max_peers = static_cast<uint32_t>(*v);
  }
  if (auto ms = getDurationMs(
          t, "census", "window", [](uint32_t v) { return v >= 1000 && v % 1000 == 0; },
          "expected a whole number of seconds of at least 1s, such as \"10m\" or \"90s\"")) {
    cfg.census.window_s = *ms / 1000;
  }
}

void Loader::loadLog(const toml::table& t) {
  std::string level;
  getEnum<std::string>(t, "log", "level",
                       {{"trace", "trace"},
                        {"debug", "debug"},
                        {"info", "info"},
                        {"warn", "warn"},
                        {"error", "error"},
                        {"critical", "critical"},
                        {"off", "off"}},
                       cfg.log.level);
  getEnum<LogFormat>(t, "log", "format", {{"text", LogFormat::Text}, {"json", LogFormat::Json}},
                     cfg.log.format);
}

void Loader::loadRuntime(const toml::table& t) {
  const auto* n = find(t, "loops");
  if (n == nullptr) {
    return;
  }
  constexpr int64_t kMaxLoops = 64;
  if (const auto* s = n->as_string(); s != nullptr && s->get() == "auto") {
    cfg.runtime.loops = 0;
  } else if (const auto* i = n->as_integer();
             i != nullptr && i->get() >= 1 && i->get() <= kMaxLoops) {
    cfg.runtime.loops = static_cast<uint32_t>(i->get());
  } else {
    error(*n, "runtime.loops",
          "expected \"auto\" (the CPUs sidecrypt may use) or a number of event loops from 1 to " +
              std::to_string(kMaxLoops));
  }
}

}  // namespace sidecrypt::proxy::config_detail
