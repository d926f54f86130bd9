// `sidecrypt check ... --prometheus URL`: the rollout checks for the whole fleet, answered from
// the recording rules of monitoring/prometheus/sidecrypt-rules.yml through Prometheus's HTTP API
// (GET /api/v1/query). Every node scraped under the job must be up, fresh, and have seen a whole
// window; then the check's own condition must hold on every node. Anything missing is a "no".
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "filters/common/safe_text.h"
#include "filters/keyring/aead_key.h"
#include "filters/keyring/keyring_codec.h"
#include "proxy/cli/admin_client.h"
#include "proxy/cli/commands.h"
#include "proxy/config/config_loader.h"

namespace sidecrypt::proxy::cli {

using nlohmann::json;

namespace {

struct HttpUrl {
  std::string host;
  std::string port = "80";
  std::string prefix;  // path before /api/v1, without the trailing slash
};

std::optional<HttpUrl> parseUrl(const std::string& url, std::string& error) {
  const std::string scheme = "http://";
  if (url.rfind("https://", 0) == 0) {
    error =
        "https:// is not supported: give an http:// address (Prometheus on the node's network, "
        "or a local port-forward)";
    return std::nullopt;
  }
  if (url.rfind(scheme, 0) != 0) {
    error = "expected http://host:port[/prefix]";
    return std::nullopt;
  }
  std::string rest = url.substr(scheme.size());
  HttpUrl u;
  const size_t slash = rest.find('/');
  if (slash != std::string::npos) {
    u.prefix = rest.substr(slash);
    while (!u.prefix.empty() && u.prefix.back() == '/') {
      u.prefix.pop_back();
    }
    rest.resize(slash);
  }
  if (!rest.empty() && rest.front() == '[') {
    const size_t close = rest.find(']');
    if (close == std::string::npos) {
      error = "unterminated [ in the host";
      return std::nullopt;
    }
    u.host = rest.substr(1, close - 1);
    if (close + 1 < rest.size() && rest[close + 1] == ':') {
      u.port = rest.substr(close + 2);
    }
  } else {
    const size_t colon = rest.rfind(':');
    u.host = rest.substr(0, colon);
    if (colon != std::string::npos) {
      u.port = rest.substr(colon + 1);
    }
  }
  if (u.host.empty() || u.port.empty() ||
      !std::all_of(u.port.begin(), u.port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    error = "expected http://host:port[/prefix]";
    return std::nullopt;
  }
  return u;
}

// One HTTP/1.0 GET (so the reply is never chunked), all of it within `timeout_ms`.
std::optional<std::string> httpGet(const HttpUrl& u, const std::string& path, int timeout_ms,
                                   std::string& error) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  auto left = [&] {
    return static_cast<int>(std::max<int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                 std::chrono::steady_clock::now())
               .count()));
  };
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(u.host.c_str(), u.port.c_str(), &hints, &res); rc != 0) {
    error = "cannot resolve " + u.host + ": " + gai_strerror(rc);
    return std::nullopt;
  }
  int fd = -1;
  for (addrinfo* ai = res; ai != nullptr && fd < 0; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
      continue;
    }
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
      ::close(fd);
      fd = -1;
      continue;
    }
    pollfd p{fd, POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof err;
    if (::poll(&p, 1, left()) != 1 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
        err != 0) {
      error = "cannot connect to " + u.host + ":" + u.port + ": " +
              (err != 0 ? std::strerror(err) : "timed out");
      ::close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  if (fd < 0) {
    if (error.empty()) {
      error = "cannot connect to " + u.host + ":" + u.port;
    }
    return std::nullopt;
  }
  const std::string req = "GET " + u.prefix + path + " HTTP/1.0\r\nHost: " + u.host + ":" + u.port +
                          "\r\nAccept: application/json\r\nUser-Agent: sidecrypt\r\n\r\n";
  size_t sent = 0;
  std::string raw;
  constexpr size_t kMaxReply = 256u << 20;
  while (true) {
    pollfd p{fd, static_cast<short>(sent < req.size() ? POLLOUT : POLLIN), 0};
    if (::poll(&p, 1, left()) != 1) {
      error = "Prometheus did not answer within " + std::to_string(timeout_ms) + " ms";
      ::close(fd);
      return std::nullopt;
    }
    if (sent < req.size()) {
      const ssize_t n = ::send(fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) {
        break;
      }
      sent += static_cast<size_t>(n);
      continue;
    }
    char buf[65536];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0 || raw.size() > kMaxReply) {
      break;
    }
    raw.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  auto reply = parseHttpReply(raw);
  if (!reply) {
    error = "malformed or no reply from " + u.host + ":" + u.port;
    return std::nullopt;
  }
  const int status = reply->status;
  std::string body = std::move(reply->body);
  if (status != 200) {
    error = "Prometheus answered " + std::to_string(status) + ": " + body.substr(0, 300);
    return std::nullopt;
  }
  return body;
}

struct Sample {
  std::map<std::string, std::string> labels;
  double value = 0;
  double time = 0;  // the evaluation time of the query
};

// An instant query; nullopt (with `error`) on any failure.
std::optional<std::vector<Sample>> query(const FleetGateOptions& o, const HttpUrl& u,
                                         const std::string& promql, std::string& error) {
  auto body = httpGet(u, "/api/v1/query?query=" + urlEncode(promql), o.timeout_ms, error);
  if (!body) {
    return std::nullopt;
  }
  try {
    const json j = json::parse(*body);
    if (j.value("status", "") != "success") {
      error = "query " + promql + ": " + j.value("error", "failed");
      return std::nullopt;
    }
    std::vector<Sample> out;
    for (const auto& r : j["data"]["result"]) {
      Sample s;
      for (const auto& [k, v] : r["metric"].items()) {
        s.labels[k] = v.get<std::string>();
      }
      s.time = r["value"][0].get<double>();
      s.value = std::stod(r["value"][1].get<std::string>());
      out.push_back(std::move(s));
    }
    return out;
  } catch (const std::exception& e) {
    error = "query " + promql + ": unexpected reply (" + e.what() + ")";
    return std::nullopt;
  }
}

std::string labelOr(const Sample& s, const std::string& k, const std::string& dflt = "") {
  auto it = s.labels.find(k);
  return it == s.labels.end() ? dflt : it->second;
}

std::string seconds(double s) {
  const auto n = static_cast<int64_t>(std::llround(s));
  if (n < 120) {
    return std::to_string(n) + "s";
  }
  if (n < 7200) {
    return std::to_string(n / 60) + "m";
  }
  return std::to_string(n / 3600) + "h";
}

// A PromQL string literal for a label matcher.
std::string promString(const std::string& v) {
  std::string out = "\"";
  for (const char c : v) {
    if (c == '"' || c == '\\') {
      out += '\\';
    }
    out += c;
  }
  return out + "\"";
}

struct Node {
  std::string instance;
  std::string name;  // the agent's node name (sidecrypt_info), or the instance
  std::vector<std::string> why;
};

}  // namespace

int fleetCheckCommand(const FleetGateOptions& o, CheckKind kind, const std::string& key,
                      bool as_json) {
  std::string error;
  const auto url = parseUrl(o.url, error);
  if (!url) {
    std::cerr << "sidecrypt: --prometheus " << o.url << ": " << error << "\n";
    return 2;
  }
  std::optional<uint32_t> within_s;
  if (!o.within.empty()) {
    const auto ms = parseDurationMs(o.within);
    if (!ms || *ms < 1000) {
      std::cerr << "sidecrypt: --within: expected a duration such as 10m or 90s\n";
      return 2;
    }
    within_s = *ms / 1000;
  }
  std::string fp;
  if (kind == CheckKind::RemoveCa) {
    auto ca = caFingerprintArg(key, error);
    if (!ca) {
      std::cerr << "sidecrypt: " << error << "\n";
      return 2;
    }
    fp = *ca;
  }
  if (kind == CheckKind::RemoveKey) {
    fp = key;
    auto decoded = filters::keyring::decodeKey(key);
    if (auto* raw = std::get_if<filters::SecretBytes>(&decoded)) {
      fp = filters::keyring::fingerprintOf(raw->span());
    }
  }
  const std::string sel = "{job=" + promString(o.job) + "}";
  const std::string fsel = "{job=" + promString(o.job) + ",fingerprint=" + promString(fp) + "}";
  const std::vector<std::pair<std::string, std::string>> queries = [&] {
    std::vector<std::pair<std::string, std::string>> q = {
        {"up", "up" + sel},
        {"age", "time() - timestamp(up" + sel + ")"},
        {"uptime", "sidecrypt:node:uptime_seconds" + sel},
        {"window", "sidecrypt:node:census_window_seconds" + sel},
        {"rule_age", "time() - timestamp(sidecrypt:node:census_window_seconds" + sel + ")"},
        // The node name a target last had: names a node that is down now (its rule series are
        // gone once Prometheus marks them stale).
        {"info", "last_over_time(sidecrypt_info" + sel + "[1h])"},
    };
    if (kind == CheckKind::RemoveCa) {
      // A prefix of the CA's fingerprint (hex) matches as a prefix.
      const std::string casel =
          "{job=" + promString(o.job) + ",ca_fingerprint=~" + promString(fp + ".*") + "}";
      q.emplace_back("ca_peers", "sum by (job, instance) (sidecrypt:node:ca_peers" + casel + ")");
      q.emplace_back("local_ok",
                     "min by (job, instance) (sidecrypt_check_ok{job=" + promString(o.job) +
                         ",check=\"remove_ca\",fingerprint=~" + promString(fp + ".*") + "})");
    } else if (kind == CheckKind::EnforceIncoming) {
      q.emplace_back("plaintext", "sidecrypt:node:plaintext_peers" + sel);
      q.emplace_back("gossip_stage", "sidecrypt:node:gossip_stage" + sel);
      q.emplace_back("silent", "sidecrypt:node:silent_members" + sel);
      // The node's own check (also census full, uncovered member ports, no traffic): the gate
      // never says yes where a node says no.
      q.emplace_back("local_ok", "sidecrypt:node:enforce_incoming_ok" + sel);
    } else {
      q.emplace_back("key_peers", "sum by (job, instance) (sidecrypt:node:key_peers" + fsel + ")");
      q.emplace_back("primary", "sidecrypt:node:key_primary" + fsel);
      q.emplace_back("local_ok",
                     "min by (job, instance) (sidecrypt_check_ok{job=" + promString(o.job) +
                         ",check=\"remove_key\",fingerprint=" + promString(fp) + "})");
    }
    return q;
  }();
  std::map<std::string, std::map<std::string, Sample>> by_instance;  // instance -> query -> sample
  double eval_time = 0;
  for (const auto& [name, promql] : queries) {
    auto r = query(o, *url, promql, error);
    if (!r) {
      std::cerr << "sidecrypt: " << error << "\n";
      return 2;
    }
    for (auto& s : *r) {
      if (name == "info" && labelOr(s, "node").empty()) {
        continue;
      }
      eval_time = std::max(eval_time, s.time);
      by_instance[labelOr(s, "instance")][name] = s;
    }
  }
  std::vector<Node> nodes;
  double oldest = 0;
  for (const auto& entry : by_instance) {
    const std::string& instance = entry.first;
    const auto& q = entry.second;
    if (q.count("up") == 0) {
      continue;  // a series of another job's rules (not a target here)
    }
    Node n;
    n.instance = instance;
    for (const auto& [qn, s] : q) {
      const auto node = labelOr(s, "node");
      if (!node.empty() && qn != "info") {
        n.name = node;
      }
    }
    if (n.name.empty() && q.count("info") != 0) {
      n.name = labelOr(q.at("info"), "node");
    }
    auto has = [&q](const char* k) { return q.count(k) != 0; };
    auto val = [&q](const char* k) { return q.at(k).value; };
    if (has("age")) {
      oldest = std::max(oldest, val("age"));
    }
    if (val("up") < 1) {
      n.why.push_back(
          "down: Prometheus cannot scrape it (and while sidecrypt is down its agent "
          "is cut off)");
    } else if (has("age") && val("age") > o.max_age_s) {
      n.why.push_back("stale: last scraped " + seconds(val("age")) + " ago (--max-age " +
                      std::to_string(o.max_age_s) + "s)");
    } else if (!has("window") || !has("uptime")) {
      n.why.push_back(
          "no data from the recording rules (are monitoring/prometheus/sidecrypt-rules.yml "
          "loaded, and is this a sidecrypt?)");
    } else {
      if (has("rule_age")) {
        oldest = std::max(oldest, val("rule_age"));
        if (val("rule_age") > o.max_age_s) {
          n.why.push_back("stale: the recording rules last ran " + seconds(val("rule_age")) +
                          " ago");
        }
      }
      const double window = val("window");
      if (within_s && window < *within_s) {
        n.why.push_back("its census window is " + seconds(window) + ", shorter than --within " +
                        seconds(*within_s));
      }
      const bool young = val("uptime") < window;
      if (young) {
        n.why.push_back("sidecrypt started " + seconds(val("uptime")) + " ago, less than its " +
                        seconds(window) + " window: what peers sent before that is unknown");
      }
      if (kind == CheckKind::EnforceIncoming) {
        if (!has("plaintext") || !has("gossip_stage") || !has("local_ok")) {
          n.why.push_back("no data from the recording rules for this check");
        } else {
          if (val("plaintext") > 0) {
            n.why.push_back("heard plaintext from " +
                            std::to_string(static_cast<int64_t>(val("plaintext"))) +
                            " peer(s) in its window (`sidecrypt status` there names them)");
          }
          if (val("gossip_stage") < 2) {
            n.why.push_back(val("gossip_stage") == 1
                                ? "gossip stage 1: its agent's gossip still leaves in plaintext"
                                : "gossip stage 0: verify incoming without encrypting outgoing");
          }
          const double silent = has("silent") ? val("silent") : 0;
          if (silent > 0) {
            n.why.push_back(std::to_string(static_cast<int64_t>(silent)) +
                            " live gossip member(s) sent nothing in its window: silent, so not "
                            "known to be safe");
          }
          if (val("local_ok") < 1 && !young && val("plaintext") <= 0 && silent <= 0) {
            n.why.push_back(
                "its own enforce-incoming check says no (census full, a member port the rules "
                "do not capture, or no traffic: `sidecrypt check enforce-incoming` there says "
                "which)");
          }
        }
      } else if (kind == CheckKind::RemoveCa) {
        const bool used = has("ca_peers") && val("ca_peers") > 0;
        if (used) {
          n.why.push_back(std::to_string(static_cast<int64_t>(val("ca_peers"))) +
                          " peer(s) presented a chain ending at this CA in its window "
                          "(`sidecrypt check remove-ca` there names them)");
        }
        if (has("local_ok") && val("local_ok") < 1 && !young && !used) {
          n.why.push_back(
              "its own remove-ca check says no (its own certificate chains only to this CA, or "
              "its census cannot cover the window: `sidecrypt check remove-ca` there says why)");
        }
      } else {
        if (has("primary")) {
          n.why.push_back("it is the primary key there: make another key primary first");
        }
        const bool used = has("key_peers") && val("key_peers") > 0;
        if (used) {
          n.why.push_back(std::to_string(static_cast<int64_t>(val("key_peers"))) +
                          " peer(s) still send with this key in its window");
        }
        if (has("local_ok") && val("local_ok") < 1 && !young && !has("primary") && !used) {
          n.why.push_back(
              "its own remove-key check says no (`sidecrypt check remove-key` there says why)");
        }
      }
    }
    if (n.name.empty()) {
      n.name = instance;
    }
    nodes.push_back(std::move(n));
  }
  std::vector<const Node*> holdouts;
  for (const auto& n : nodes) {
    if (!n.why.empty()) {
      holdouts.push_back(&n);
    }
  }
  const std::string subject = kind == CheckKind::EnforceIncoming ? "enforce-incoming"
                              : kind == CheckKind::RemoveCa      ? "remove-ca " + fp
                                                                 : "remove-key " + fp;
  std::vector<std::string> fleet_why;
  if (nodes.empty()) {
    fleet_why.push_back("no target of job \"" + o.job + "\" in Prometheus");
  }
  if (kind == CheckKind::RemoveCa && !nodes.empty() &&
      std::none_of(by_instance.begin(), by_instance.end(),
                   [](const auto& e) { return e.second.count("local_ok") != 0; })) {
    // No node reports a CA with this fingerprint: a typo, or no node loads it (nothing to do).
    fleet_why.push_back("no node reports a configured CA whose fingerprint starts with " + fp +
                        " (sidecrypt_check_ok{check=\"remove_ca\"}): check the fingerprint");
  }
  const bool ok = holdouts.empty() && fleet_why.empty();
  if (as_json) {
    json h = json::array();
    for (const auto* n : holdouts) {
      h.push_back(
          {{"node", filters::utf8Safe(n->name)}, {"instance", n->instance}, {"why", n->why}});
    }
    std::cout << json{{"check", subject},
                      {"ok", ok},
                      {"source", "prometheus"},
                      {"prometheus", o.url},
                      {"job", o.job},
                      {"nodes", nodes.size()},
                      {"holdouts", h},
                      {"fleet", fleet_why},
                      {"data_age_seconds", oldest},
                      {"evaluated_unix", eval_time}}
                     .dump(2, ' ', false, json::error_handler_t::replace)
              << "\n";
    return ok ? 0 : 1;
  }
  if (ok) {
    std::cout << "yes: " << subject << " is safe fleet-wide (" << nodes.size()
              << " nodes; data at most " << seconds(oldest) << " old)\n";
    return 0;
  }
  std::cout << "no: " << subject << " is not safe fleet-wide (" << nodes.size() << " nodes, "
            << holdouts.size() << " holding out; data at most " << seconds(oldest) << " old):\n";
  for (const auto& w : fleet_why) {
    std::cout << "  " << w << "\n";
  }
  for (const auto* n : holdouts) {
    for (const auto& w : n->why) {
      std::cout << "  " << filters::escapeForLog(n->name)
                << (n->name != n->instance ? " (" + n->instance + ")" : "") << ": " << w << "\n";
    }
  }
  return 1;
}

}  // namespace sidecrypt::proxy::cli
