// The reload reach table: every key proxy.toml accepts has one entry, docs/configuration.md shows
// exactly the table, and a reload that changes a key only a restart can apply is refused naming
// the key and its line, while keys a reload applies are never refused.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "proxy/config/config_loader.h"
#include "proxy/config/reload_reach.h"

using namespace sidecrypt::proxy;

namespace {

Config load(const std::string& text) {
  auto r = loadConfigText(text, "proxy.toml");
  if (auto* errs = std::get_if<std::vector<ConfigError>>(&r)) {
    for (const auto& e : *errs) {
      FAIL(e.format());
    }
  }
  return std::get<Config>(std::move(r));
}

const std::string kBase =
    "[agent]\n"
    "profile = \"serf\"\n"
    "[admin]\n"
    "listen = \"127.0.0.1:9920\"\n"
    "[log]\n"
    "level = \"info\"\n";

}  // namespace

TEST_CASE("reload_reach: every key of proxy.toml has exactly one entry", "[config][reload]") {
  const auto keys = configKeys();
  REQUIRE(keys.size() > 40);
  std::set<std::string> in_table;
  for (const auto& e : reloadReach()) {
    CAPTURE(e.key);
    CHECK(in_table.insert(std::string(e.key)).second);  // listed once
    CHECK(std::find(keys.begin(), keys.end(), std::string(e.key)) != keys.end());
    CHECK(!e.how.empty());
    // A restart key needs its value to compare; gossip.encrypt (a secret) must never be one.
    CHECK((e.reach == ReloadReach::Restart) == (e.value != nullptr));
  }
  for (const auto& k : keys) {
    CAPTURE(k);
    CHECK(in_table.count(k) == 1);
  }
}

TEST_CASE("reload_reach: docs/configuration.md shows the table as the code has it",
          "[config][reload]") {
  std::ifstream in(std::string(SIDECRYPT_SOURCE_DIR) + "/docs/configuration.md");
  REQUIRE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str();
  const std::string begin = "<!-- reload-reach: begin -->\n";
  const std::string end = "<!-- reload-reach: end -->";
  const auto b = doc.find(begin);
  const auto e = doc.find(end);
  REQUIRE(b != std::string::npos);
  REQUIRE(e != std::string::npos);
  REQUIRE(b < e);
  const std::string shown = doc.substr(b + begin.size(), e - b - begin.size());
  if (shown != reloadReachMarkdown() && std::getenv("SIDECRYPT_UPDATE_DOCS") != nullptr) {
    // SIDECRYPT_UPDATE_DOCS=1 ./build/tests/unit_tests '[reload]' rewrites the table.
    std::ofstream out(std::string(SIDECRYPT_SOURCE_DIR) + "/docs/configuration.md");
    out << doc.substr(0, b + begin.size()) << reloadReachMarkdown() << doc.substr(e);
    WARN("docs/configuration.md: reload table rewritten");
    return;
  }
  INFO(
      "the reload table in docs/configuration.md differs from proxy/config/reload_reach.cc; "
      "rewrite it with SIDECRYPT_UPDATE_DOCS=1 ./build/tests/unit_tests '[reload]'");
  CHECK(shown == reloadReachMarkdown());
}

TEST_CASE("reload_reach: a change only a restart applies is refused, naming key and line",
          "[config][reload]") {
  const Config running = load(kBase);
  CHECK(reloadRefusals(running, load(kBase)).empty());

  SECTION("admin.listen") {
    auto refused = reloadRefusals(
        running, load("[agent]\nprofile = \"serf\"\n[admin]\nlisten = \"127.0.0.1:9930\"\n"));
    REQUIRE(refused.size() == 1);
    CHECK(
        refused[0].starts_with("proxy.toml:4:1: admin.listen: changed from \"127.0.0.1:9920\" "
                               "to \"127.0.0.1:9930\", which needs a restart"));
  }
  SECTION("intercept keys, each named, in file order") {
    auto refused = reloadRefusals(running, load(kBase + "[intercept]\n"
                                                        "member_ports = [7946, 7947]\n"
                                                        "outbound_port = 15101\n"));
    REQUIRE(refused.size() == 2);
    CAPTURE(refused[0], refused[1]);
    CHECK(
        refused[0].starts_with("proxy.toml:8:1: intercept.member_ports: changed from [7946] "
                               "to [7946, 7947]"));
    CHECK(refused[1].starts_with("proxy.toml:9:1: intercept.outbound_port: changed"));
  }
  SECTION("runtime.loops: the loop threads start with the process") {
    auto refused = reloadRefusals(running, load(kBase + "[runtime]\nloops = 2\n"));
    REQUIRE(refused.size() == 1);
    CHECK(
        refused[0].starts_with("proxy.toml:8:1: runtime.loops: changed from \"auto\" to 2, "
                               "which needs a restart"));
  }
  SECTION("a key removed from the file names the file") {
    const Config with_metrics = load(kBase + "[metrics]\nlisten = \"\"\n");
    auto refused = reloadRefusals(with_metrics, load(kBase));
    REQUIRE(refused.size() == 1);
    CHECK(
        refused[0].starts_with("proxy.toml: metrics.listen: changed from \"\" to "
                               "\"127.0.0.1:9921\""));
  }
  SECTION("the profile: the profile and the ports it brings") {
    auto refused = reloadRefusals(
        running, load("[agent]\nprofile = \"consul\"\n[admin]\nlisten = \"127.0.0.1:9920\"\n"));
    std::string all;
    for (const auto& r : refused) {
      all += r + "\n";
    }
    CAPTURE(all);
    CHECK(all.find("proxy.toml:2:1: agent.profile: changed from serf to consul") !=
          std::string::npos);
    CHECK(all.find("intercept.port: changed from serf 7946 gossip udp+tcp lan to serf_lan 8301") !=
          std::string::npos);
  }
  SECTION("what a reload applies is never refused") {
    CHECK(reloadRefusals(running, load(kBase + "[gossip]\n"
                                               "encrypt_verify_outgoing = false\n"
                                               "label = \"x\"\n"
                                               "[census]\n"
                                               "window = \"1m\"\n"
                                               "[metrics]\n"
                                               "peer_series = 5\n"
                                               "[intercept]\n"
                                               "drain_time = \"1s\"\n"
                                               "[[listener]]\n"
                                               "listen = \"127.0.0.1:9000\"\n"
                                               "upstream = \"127.0.0.1:9001\"\n"
                                               "direction = \"outbound\"\n"))
              .empty());
    const Config json =
        load("[agent]\nprofile = \"serf\"\n[log]\nlevel = \"debug\"\nformat = \"json\"\n");
    CHECK(reloadRefusals(running, json).empty());
  }
}
