#include <fmt/printf.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "filters/common/safe_text.h"
#include "filters/keyring/aead_key.h"
#include "filters/keyring/keyring_codec.h"
#include "proxy/cli/admin_client.h"
#include "proxy/cli/commands.h"
#include "proxy/cli/status_table.h"
#include "proxy/config/config_loader.h"

namespace sidecrypt::proxy::cli {

using nlohmann::json;

namespace {

// Fetches a JSON document from the admin endpoint, or prints why it cannot and returns null.
json fetch(const std::string& admin, const std::string& path) {
  auto r = adminRequest(admin, "GET", path);
  if (r.status != 200) {
    std::cerr << "sidecrypt: "
              << (r.status == 0 ? r.body
                                : "admin " + path + " answered " + std::to_string(r.status))
              << "\n";
    return nullptr;
  }
  try {
    return json::parse(r.body);
  } catch (const json::exception& e) {
    std::cerr << "sidecrypt: admin " << path << " sent invalid JSON: " << e.what() << "\n";
    return nullptr;
  }
}

// JSON for stdout: always valid UTF-8, never an exception.
std::string jsonOut(const json& j) {
  return j.dump(2, ' ', false, json::error_handler_t::replace);
}

// A string field for the terminal: names come off the wire (a peer chooses its node name), so
// control characters and invalid bytes are shown as \xNN instead of reaching the terminal.
std::string shown(const json& v) {
  return v.is_string() ? filters::escapeForLog(v.get_ref<const std::string&>()) : v.dump();
}

int64_t nowUnix() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string ago(int64_t unix_seconds) {
  if (unix_seconds == 0) {
    return "never";
  }
  const int64_t d = nowUnix() - unix_seconds;
  if (d < 120) {
    return std::to_string(d) + "s ago";
  }
  if (d < 7200) {
    return std::to_string(d / 60) + "m ago";
  }
  return std::to_string(d / 3600) + "h ago";
}

std::string ringText(const json& ring) {
  if (ring.empty()) {
    return "-";
  }
  std::string out;
  for (const auto& k : ring) {
    out += (out.empty() ? "" : " ") + k["fingerprint"].get<std::string>() +
           (k["primary"].get<bool>() ? "*" : "");
  }
  return out;
}

// The CAs that verified a peer's RPC chains: "in:1a2b3c4d out:1a2b3c4d" (first 8 hex digits of
// each CA's SHA-256; `/peers` has them whole, with subjects and times), most recent first.
std::string caText(const json& rpc) {
  if (!rpc.contains("tls_cas") || rpc["tls_cas"].empty()) {
    return "-";
  }
  std::vector<const json*> uses;
  for (const auto& c : rpc["tls_cas"]) {
    uses.push_back(&c);
  }
  std::sort(uses.begin(), uses.end(), [](const json* a, const json* b) {
    return (*a)["last_seen_unix"].get<int64_t>() > (*b)["last_seen_unix"].get<int64_t>();
  });
  std::string out;
  for (const json* c : uses) {
    out += (out.empty() ? "" : " ") +
           std::string((*c)["direction"].get<std::string>() == "inbound" ? "in:" : "out:") +
           filters::escapeForLog((*c)["fingerprint"].get<std::string>().substr(0, 8));
  }
  return out;
}

// "tls watch: on (3 dirs), 2 applied, 1 unchanged, 1 failed; last 12s ago: error: ..."
std::string tlsWatchText(const json& tw) {
  if (!tw.value("enabled", false)) {
    return "tls watch: off\n";
  }
  std::string out =
      fmt::sprintf("tls watch: on (%s dirs)", tw.value("directories", json(0)).dump());
  for (const char* name : {"applied", "unchanged", "failed"}) {
    out += fmt::sprintf(", %s %s", tw.value(name, json(0)).dump(), name);
  }
  const auto& last = tw.value("last", json());
  if (last.is_object()) {
    const bool ok = last.value("ok", false);
    out += fmt::sprintf("; last %s: %s", ago(last.value("unix_ms", int64_t{0}) / 1000),
                        ok ? std::string("ok") : "error: " + shown(last.value("text", json(""))));
  }
  return out + "\n";
}

}  // namespace

std::string renderStatusTable(const json& status, const json& peers, const json& members) {
  std::string out;
  const auto& st = status["stages"];
  out += fmt::sprintf("sidecrypt %s  ready: %s (%s)\n", shown(status["version"]).c_str(),
                      status["ready"].get<bool>() ? "yes" : "NO",
                      shown(status["ready_detail"]).c_str());
  out += fmt::sprintf("gossip: encrypt_verify_incoming=%s encrypt_verify_outgoing=%s\n",
                      st["gossip"]["encrypt_verify_incoming"].dump().c_str(),
                      st["gossip"]["encrypt_verify_outgoing"].dump().c_str());
  out += fmt::sprintf("rpc:    verify_incoming=%s verify_outgoing=%s verify_server_hostname=%s\n",
                      st["rpc"]["verify_incoming"].dump().c_str(),
                      st["rpc"]["verify_outgoing"].dump().c_str(),
                      st["rpc"]["verify_server_hostname"].dump().c_str());
  out += fmt::sprintf("keyrings: lan %s | wan %s  (* = primary)\n",
                      ringText(status["keyrings"]["lan"]).c_str(),
                      ringText(status["keyrings"]["wan"]).c_str());
  const auto& rl = status["reloads"];
  out += fmt::sprintf("reloads: %s ok, %s failed%s\n", rl["ok"].dump().c_str(),
                      rl["failed"].dump().c_str(),
                      rl["last_error"].get<std::string>().empty()
                          ? ""
                          : (" (last error: " + shown(rl["last_error"]) + ")").c_str());
  if (status.contains("certificates") && !status["certificates"].empty()) {
    out += fmt::sprintf("certificates:\n  %-12s %-13s %-20s %-6s %-40s %s\n", "ROLE", "STATE",
                        "NOT AFTER", "DAYS", "SUBJECT (SERIAL)", "FILE");
    for (const auto& c : status["certificates"]) {
      out += fmt::sprintf("  %-12s %-13s %-20s %-6s %-40s %s\n", shown(c["role"]).c_str(),
                          shown(c["state"]).c_str(), shown(c["not_after"]).c_str(),
                          c["days_left"].dump().c_str(),
                          (shown(c["subject"]) + " (" + shown(c["serial"]) + ")").c_str(),
                          shown(c["file"]).c_str());
    }
  }
  if (const auto& tw = status.value("tls_watch", json()); tw.is_object()) {
    out += tlsWatchText(tw);
  }
  std::map<std::string, int> states;
  json self = members.is_object() ? members["self"] : json();
  if (members.is_object()) {
    for (const auto& m : members["members"]) {
      ++states[m["state"].get<std::string>()];
    }
  } else if (status.contains("census")) {
    for (const auto& [state, n] : status["census"]["members_by_state"].items()) {
      states[state] = n.get<int>();
    }
    self = status["census"]["self"];
  }
  out += fmt::sprintf(
      "gossip members (as the gossip says; self %s): %d alive, %d suspect, %d dead, %d left\n",
      !self.is_object() || self.value("node", "").empty() ? "not yet known"
                                                          : shown(self["node"]).c_str(),
      states["alive"], states["suspect"], states["dead"], states["left"]);
  if (status.contains("census")) {
    const auto& c = status["census"];
    out += fmt::sprintf(
        "census (window %ss): %s peers (capacity %s), %s sent plaintext, %s refused, %s live "
        "members silent%s\n",
        c["window_seconds"].dump().c_str(), c["peers"].dump().c_str(), c["capacity"].dump().c_str(),
        c["plaintext_peers"].dump().c_str(), c["refused_peers"].dump().c_str(),
        c["silent_members"].dump().c_str(),
        c["evictions"].get<uint64_t>() + c["dropped"].get<uint64_t>() > 0
            ? (", " + c["evictions"].dump() + " evicted, " + c["dropped"].dump() + " not kept")
                  .c_str()
            : "");
    std::string keys;
    for (const auto& [fp, n] : c["key_peers"].items()) {
      keys += (keys.empty() ? "" : ", ") + filters::escapeForLog(fp) + " " + n.dump();
    }
    if (!keys.empty()) {
      out += "peers per key in the window: " + keys + "\n";
    }
    if (c.contains("ca_peers")) {
      for (const auto& [fp, n] : c["ca_peers"].items()) {
        out += fmt::sprintf("peers per CA in the window: %s (%s) %s inbound, %s outbound\n",
                            filters::escapeForLog(fp.substr(0, 8)).c_str(),
                            shown(n["subject"]).c_str(), n["inbound"].dump().c_str(),
                            n["outbound"].dump().c_str());
      }
    }
  }
  out += fmt::sprintf("\n%-24s %-14s %-15s %-10s %-12s %-7s %-15s %-12s %s\n", "PEER", "NODE",
                      "GOSSIP enc/plain", "RPC tls/pl", "KEYS", "SHADOW", "LAST PLAINTEXT",
                      "LAST SEEN", "RPC CA (in/out)");
  for (const auto& p : peers) {
    const auto& g = p["gossip"];
    const uint64_t enc =
        g["packets_encrypted"].get<uint64_t>() + g["streams_encrypted"].get<uint64_t>();
    const uint64_t plain =
        g["packets_plaintext"].get<uint64_t>() + g["streams_plaintext"].get<uint64_t>();
    std::string keys;
    for (const auto& [fp, use] : g["keys"].items()) {
      keys += (keys.empty() ? "" : ",") + filters::escapeForLog(fp);
    }
    // Earlier names of the member at this address (names that change on restart), newest first.
    std::string was;
    const auto earlier = p.value("earlier_names", json::array());
    for (auto it = earlier.rbegin(); it != earlier.rend(); ++it) {
      was += (was.empty() ? "  was: " : ", ") + shown((*it)["name"]);
    }
    out += fmt::sprintf(
        "%-24s %-14s %-15s %-10s %-12s %-7s %-15s %-12s %s%s\n", shown(p["address"]).c_str(),
        shown(p["node"]).c_str(), (std::to_string(enc) + "/" + std::to_string(plain)).c_str(),
        (p["rpc"]["tls"].dump() + "/" + p["rpc"]["plaintext"].dump()).c_str(),
        keys.empty() ? "-" : keys.c_str(), p["shadow_refused"].dump().c_str(),
        ago(p["last_plaintext_unix"].get<int64_t>()).c_str(),
        ago(p["last_seen_unix"].get<int64_t>()).c_str(), caText(p["rpc"]).c_str(), was.c_str());
  }
  return out;
}

int statusCommand(const std::string& admin, bool as_json, bool all_peers) {
  json status = fetch(admin, "/status");
  if (status.is_null()) {
    return 1;
  }
  if (as_json) {
    json peers = fetch(admin, "/peers");
    json members = peers.is_null() ? json() : fetch(admin, "/members");
    if (peers.is_null() || members.is_null()) {
      return 1;
    }
    std::cout << jsonOut(json{{"status", status}, {"peers", peers}, {"members", members}}) << "\n";
    return 0;
  }
  if (all_peers) {
    // Every peer, page by page, sorted by address.
    json peers = json::array();
    std::string after;
    for (int page = 0; page < 10'000; ++page) {
      json p = fetch(admin, "/peers?limit=1000&within=" + std::to_string(365 * 86400) +
                                (after.empty() ? "" : "&after=" + after));
      if (p.is_null()) {
        return 1;
      }
      for (auto& e : p["peers"]) {
        peers.push_back(std::move(e));
      }
      if (p["next"].is_null()) {
        break;
      }
      after = p["next"].get<std::string>();
    }
    std::cout << renderStatusTable(status, peers, json());
    return 0;
  }
  // The summary and the top plaintext senders within the census window.
  json top = fetch(admin, "/peers?plaintext=1&sort=plaintext&limit=10");
  if (top.is_null()) {
    return 1;
  }
  std::cout << renderStatusTable(status, top["peers"], json());
  const uint64_t total = top["total"].get<uint64_t>();
  if (total > top["peers"].size()) {
    std::cout << "(" << top["peers"].size() << " of " << total
              << " plaintext senders shown; all peers: sidecrypt status --peers)\n";
  } else if (total == 0) {
    std::cout << "(no peer sent plaintext in the window; all peers: sidecrypt status --peers)\n";
  }
  return 0;
}

int reloadCommand(const std::string& admin) {
  auto r = adminRequest(admin, "POST", "/reload", 30'000);
  if (r.status == 0) {
    std::cerr << "sidecrypt: " << r.body << "\n";
    return 1;
  }
  try {
    auto j = json::parse(r.body);
    if (j["ok"].get<bool>()) {
      std::cout << "reloaded\n";
      return 0;
    }
    std::cerr << "sidecrypt: reload failed, the running configuration is unchanged:\n"
              << j["error"].get<std::string>() << "\n";
  } catch (const json::exception&) {
    std::cerr << "sidecrypt: unexpected reply from the admin endpoint (" << r.status
              << "): " << r.body.substr(0, 300) << "\n";
  }
  return 1;
}

namespace {

// Prints a check answer: every reason in JSON; in text, at most kShown per class.
int printCheck(const json& answer, bool as_json) {
  const bool ok = answer.value("ok", false);
  if (as_json) {
    std::cout << jsonOut(answer) << "\n";
    return ok ? 0 : 1;
  }
  const std::string subject = answer.value("check", "");
  const auto within = answer.value("within_seconds", 0);
  if (ok) {
    std::cout << "yes: " << shown(answer["check"]) << " is safe (window " << within << "s)\n";
    return 0;
  }
  constexpr size_t kShown = 20;
  std::map<std::string, size_t> per_class;
  std::cout << "no: " << shown(answer["check"]) << " is not safe yet (window " << within << "s):\n";
  for (const auto& r : answer["reasons"]) {
    const std::string cls = r.value("class", "");
    if (++per_class[cls] > kShown) {
      continue;
    }
    std::cout << "  " << (r["peer"].get<std::string>().empty() ? "" : shown(r["peer"]) + " ")
              << (r["node"].get<std::string>().empty() ? "" : "(" + shown(r["node"]) + ") ")
              << shown(r["why"]) << "\n";
  }
  for (const auto& [cls, n] : per_class) {
    if (n > kShown) {
      std::cout << "  ... and " << n - kShown << " more (" << cls
                << "); every one: --json, or /peers?silent=1 / ?plaintext=1\n";
    }
  }
  return 1;
}

}  // namespace

int checkCommand(const std::string& admin, CheckKind kind, const std::string& key,
                 const std::string& within, bool as_json) {
  std::string query;
  if (!within.empty()) {
    const auto within_ms = parseDurationMs(within);
    if (!within_ms || *within_ms < 1000) {
      std::cerr << "sidecrypt: --within: expected a duration such as 10m or 90s\n";
      return 2;
    }
    query = "within=" + std::to_string(*within_ms / 1000);
  }
  std::string path;
  if (kind == CheckKind::EnforceIncoming) {
    path = "/check/enforce-incoming";
  } else if (kind == CheckKind::RemoveCa) {
    std::string error;
    const auto fp = caFingerprintArg(key, error);
    if (!fp) {
      std::cerr << "sidecrypt: " << error << "\n";
      return 2;
    }
    path = "/check/remove-ca";
    query += (query.empty() ? "" : "&") + std::string("ca=") + *fp;
  } else {
    std::string fp = key;
    auto decoded = filters::keyring::decodeKey(key);
    if (auto* raw = std::get_if<filters::SecretBytes>(&decoded)) {
      fp = filters::keyring::fingerprintOf(raw->span());
    }
    path = "/check/remove-key";
    query += (query.empty() ? "" : "&") + std::string("key=") + urlEncode(fp);
  }
  json answer = fetch(admin, path + (query.empty() ? "" : "?" + query));
  if (answer.is_null()) {
    return 2;
  }
  return printCheck(answer, as_json);
}

}  // namespace sidecrypt::proxy::cli
