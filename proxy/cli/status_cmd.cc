#include <fmt/printf.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>

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
  std::map<std::string, int> states;
  for (const auto& m : members["members"]) {
    ++states[m["state"].get<std::string>()];
  }
  out += fmt::sprintf(
      "gossip members (as the gossip says; self %s): %d alive, %d suspect, %d dead, %d left\n",
      members["self"]["node"].get<std::string>().empty() ? "not yet known"
                                                         : shown(members["self"]["node"]).c_str(),
      states["alive"], states["suspect"], states["dead"], states["left"]);
  out += fmt::sprintf("\n%-24s %-14s %-15s %-10s %-12s %-7s %-15s %s\n", "PEER", "NODE",
                      "GOSSIP enc/plain", "RPC tls/pl", "KEYS", "SHADOW", "LAST PLAINTEXT",
                      "LAST SEEN");
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
    out += fmt::sprintf("%-24s %-14s %-15s %-10s %-12s %-7s %-15s %s\n",
                        shown(p["address"]).c_str(), shown(p["node"]).c_str(),
                        (std::to_string(enc) + "/" + std::to_string(plain)).c_str(),
                        (p["rpc"]["tls"].dump() + "/" + p["rpc"]["plaintext"].dump()).c_str(),
                        keys.empty() ? "-" : keys.c_str(), p["shadow_refused"].dump().c_str(),
                        ago(p["last_plaintext_unix"].get<int64_t>()).c_str(),
                        ago(p["last_seen_unix"].get<int64_t>()).c_str());
  }
  return out;
}

int statusCommand(const std::string& admin, bool as_json) {
  json status = fetch(admin, "/status");
  json peers = status.is_null() ? json() : fetch(admin, "/peers");
  json members = peers.is_null() ? json() : fetch(admin, "/members");
  if (status.is_null() || peers.is_null() || members.is_null()) {
    return 1;
  }
  if (as_json) {
    std::cout << jsonOut(json{{"status", status}, {"peers", peers}, {"members", members}}) << "\n";
    return 0;
  }
  std::cout << renderStatusTable(status, peers, members);
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

int checkCommand(const std::string& admin, CheckKind kind, const std::string& key,
                 const std::string& within, bool as_json) {
  const auto within_ms = parseDurationMs(within);
  if (!within_ms) {
    std::cerr << "sidecrypt: --within: expected a duration such as 10m or 90s\n";
    return 2;
  }
  const uint32_t within_s = *within_ms / 1000;
  json status = fetch(admin, "/status");
  json peers = status.is_null() ? json() : fetch(admin, "/peers");
  if (status.is_null() || peers.is_null()) {
    return 2;
  }
  const int64_t since = nowUnix() - within_s;
  json reasons = json::array();
  std::string subject;
  if (kind == CheckKind::EnforceIncoming) {
    subject = "enforce-incoming (turn gossip encrypt_verify_incoming / RPC verify_incoming on)";
    size_t recent = 0;
    for (const auto& p : peers) {
      if (p["last_seen_unix"].get<int64_t>() >= since) {
        ++recent;
      }
      if (p["last_plaintext_unix"].get<int64_t>() >= since ||
          p["last_shadow_refused_unix"].get<int64_t>() >= since) {
        reasons.push_back(
            {{"peer", p["address"]},
             {"node", p["node"]},
             {"why",
              "sent plaintext " + ago(std::max(p["last_plaintext_unix"].get<int64_t>(),
                                               p["last_shadow_refused_unix"].get<int64_t>()))}});
      }
    }
    if (recent == 0) {
      reasons.push_back({{"peer", ""},
                         {"node", ""},
                         {"why", "no peer traffic seen in the window: cannot tell who is safe"}});
    }
    // Cross-check against the gossip member list: a live member that sent nothing in the
    // window is unknown, not safe (memberlist probes every member, so a live one is heard).
    json members = fetch(admin, "/members");
    if (members.is_null()) {
      return 2;
    }
    bool gossip_seen = false;
    std::map<std::string, const json*> by_address;
    for (const auto& p : peers) {
      const auto& g = p["gossip"];
      gossip_seen = gossip_seen || g["packets_encrypted"].get<uint64_t>() +
                                           g["packets_plaintext"].get<uint64_t>() +
                                           g["streams_encrypted"].get<uint64_t>() +
                                           g["streams_plaintext"].get<uint64_t>() >
                                       0;
      by_address[p["address"].get<std::string>()] = &p;
    }
    const std::string self_node = members["self"].value("node", "");
    const std::string self_address = members["self"].value("address", "");
    size_t live = 0;
    for (const auto& m : members["members"]) {
      const std::string state = m["state"];
      const std::string name = m["name"];
      const std::string address = m["address"];
      if ((state != "alive" && state != "suspect") || name == self_node ||
          (self_node.empty() && address == self_address)) {
        continue;
      }
      ++live;
      auto it = by_address.find(address);
      if (it == by_address.end() || (*it->second)["last_seen_unix"].get<int64_t>() < since) {
        reasons.push_back(
            {{"peer", address},
             {"node", name},
             {"why", "a live gossip member (" + state +
                         ") sent nothing in the window: silent, so not known to be safe"}});
      }
    }
    // A member on a gossip port the rules do not capture gets this agent's streams in plaintext.
    if (status.contains("member_ports")) {
      for (const auto& m : status["member_ports"]["uncovered_members"]) {
        reasons.push_back(
            {{"peer", m["address"]},
             {"node", m["name"]},
             {"why", "advertises gossip port " + std::to_string(m["port"].get<int>()) +
                         ", which the rules do not capture: this agent's streams to it leave in "
                         "plaintext (add it to intercept.member_ports)"}});
      }
    }
    if (gossip_seen && live == 0) {
      reasons.push_back({{"peer", ""},
                         {"node", ""},
                         {"why", "no gossip member list learned yet: cannot cross-check"}});
    }
  } else {
    subject = "remove-key";
    std::string fp = key;
    auto decoded = filters::keyring::decodeKey(key);
    if (auto* raw = std::get_if<filters::SecretBytes>(&decoded)) {
      fp = filters::keyring::fingerprintOf(raw->span());
    }
    subject += " " + fp;
    for (const char* pool : {"lan", "wan"}) {
      for (const auto& k : status["keyrings"][pool]) {
        if (k["fingerprint"] == fp && k["primary"].get<bool>()) {
          reasons.push_back({{"peer", ""},
                             {"node", ""},
                             {"why", std::string("it is the primary key of the ") + pool +
                                         " keyring: make another key primary first"}});
        }
      }
    }
    for (const auto& p : peers) {
      const auto& keys = p["gossip"]["keys"];
      if (keys.contains(fp) && keys[fp]["last_seen_unix"].get<int64_t>() >= since) {
        reasons.push_back({{"peer", p["address"]},
                           {"node", p["node"]},
                           {"why", "still sends with this key (" +
                                       ago(keys[fp]["last_seen_unix"].get<int64_t>()) + ")"}});
      }
    }
  }
  const bool ok = reasons.empty();
  if (as_json) {
    std::cout << jsonOut(json{{"check", subject},
                              {"ok", ok},
                              {"within_seconds", within_s},
                              {"reasons", reasons}})
              << "\n";
  } else if (ok) {
    std::cout << "yes: " << subject << " is safe (window " << within_s << "s)\n";
  } else {
    std::cout << "no: " << subject << " is not safe yet:\n";
    for (const auto& r : reasons) {
      std::cout << "  " << (r["peer"].get<std::string>().empty() ? "" : shown(r["peer"]) + " ")
                << (r["node"].get<std::string>().empty() ? "" : "(" + shown(r["node"]) + ") ")
                << shown(r["why"]) << "\n";
    }
  }
  return ok ? 0 : 1;
}

}  // namespace sidecrypt::proxy::cli
