#include "proxy/intercept/rules.h"

#include <catch2/catch.hpp>

#include "proxy/config/config_loader.h"

using namespace sidecrypt::proxy;

namespace {

RuleParams paramsOf(const std::string& toml) {
  auto r = loadConfigText(toml, "proxy.toml");
  REQUIRE(std::holds_alternative<Config>(r));
  return ruleParams(std::get<Config>(r));
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("rules: member ports are captured outbound, TCP and UDP, for any source port",
          "[rules][member_ports]") {
  const auto p =
      paramsOf("[agent]\nprofile = \"serf\"\n[intercept]\nmember_ports = [7947, 17946]\n");
  CHECK(p.member == std::vector<uint16_t>{7946, 7947, 17946});
  const std::string nft = nftRuleset(p);
  CHECK(has(nft, "    tcp dport { 7946, 7947, 17946 } meta mark set 0x539\n"));
  CHECK(has(nft, "    udp dport { 7946, 7947, 17946 } meta mark set 0x539\n"));
  // Inbound and the agent's source port stay the agent's own.
  CHECK(has(nft, "    udp sport { 7946 } meta mark set 0x539\n"));
  CHECK(has(nft, "tcp dport { 7946 } meta mark set 0x539 tproxy ip to 127.0.0.1:15006"));
  // Fail closed: diverted packets nobody takes are dropped (nft's tproxy does not drop).
  CHECK(has(nft, "meta nfproto ipv6 meta l4proto { tcp, udp } drop\n"));
  for (bool v6 : {false, true}) {
    const std::string ipt = iptablesRuleset(p, v6);
    CHECK(has(ipt, "-A SIDECRYPT_OUT -p tcp -m multiport --dports 7946,7947,17946 -j MARK"));
    CHECK(has(ipt, "-A SIDECRYPT_OUT -p udp -m multiport --dports 7946,7947,17946 -j MARK"));
    CHECK(has(ipt, "-A SIDECRYPT_OUT -p udp -m multiport --sports 7946 -j MARK"));
  }
}

TEST_CASE("rules: more than 15 ports are split over several multiport rules", "[rules]") {
  std::string list;
  for (int i = 0; i < 20; ++i) {
    list += (i == 0 ? "" : ", ") + std::to_string(9000 + i);
  }
  const auto p =
      paramsOf("[agent]\nprofile = \"serf\"\n[intercept]\nmember_ports = [" + list + "]\n");
  const std::string ipt = iptablesRuleset(p, false);
  CHECK(has(ipt,
            "--dports 7946,9000,9001,9002,9003,9004,9005,9006,9007,9008,9009,9010,9011,"
            "9012,9013 -j MARK"));
  CHECK(has(ipt, "--dports 9014,9015,9016,9017,9018,9019 -j MARK"));
}

TEST_CASE("rules: the rules carry the fingerprint of their config", "[rules]") {
  const auto serf = paramsOf("[agent]\nprofile = \"serf\"\n");
  const auto consul = paramsOf("");
  const auto serf2 = paramsOf("[agent]\nprofile = \"serf\"\n");
  CHECK(rulesFingerprint(serf) == rulesFingerprint(serf2));
  CHECK(rulesFingerprint(serf) != rulesFingerprint(consul));
  CHECK(rulesFingerprint(serf).size() == 16);
  const std::string tag = "sidecrypt rules " + rulesFingerprint(serf);
  CHECK(has(nftRuleset(serf), "meta mark 0x53a return comment \"" + tag + "\""));
  CHECK(
      has(iptablesRuleset(serf, true),
          "-A SIDECRYPT_OUT -m mark --mark 0x53a -m comment --comment \"" + tag + "\" -j RETURN"));
  auto redirect = paramsOf(
      "[agent]\nprofile = \"custom\"\n[intercept]\nmode = \"redirect\"\n"
      "[[intercept.port]]\nport = 9300\nprotocol = \"rpc\"\n");
  CHECK(has(nftRuleset(redirect), "comment \"sidecrypt rules " + rulesFingerprint(redirect)));
  CHECK(has(iptablesRuleset(redirect, false),
            "--comment \"sidecrypt rules " + rulesFingerprint(redirect)));
}

TEST_CASE("rules: reinstalling never leaves a moment without the fwmark policy rule", "[rules]") {
  const auto p = paramsOf("[agent]\nprofile = \"serf\"\n");
  for (auto backend : {RulesBackend::Nft, RulesBackend::IptablesNft}) {
    const auto plan = installPlan(p, backend);
    for (const char* fam : {"-4", "-6"}) {
      int added = -1;
      int kept = -1;
      for (size_t i = 0; i < plan.steps.size(); ++i) {
        const auto& a = plan.steps[i].argv;
        if (a.size() > 3 && a[0] == "ip" && a[1] == fam && a[2] == "rule") {
          if (a[3] == "add") {
            added = static_cast<int>(i);
          } else if (a[3] == "del") {
            // A delete runs only after the add, and only while more than one copy exists.
            CHECK(plan.steps[i].kind == RuleStep::Kind::KeepOne);
            CHECK(added >= 0);
            kept = static_cast<int>(i);
          }
        }
      }
      CHECK(added >= 0);
      CHECK(kept > added);
    }
    CHECK(
        has(describePlan(plan),
            "while [ \"$(ip -4 rule list pref 100 | grep -c 'fwmark 0x539 lookup 133')\" -gt 1 ]; "
            "do ip -4 rule del pref 100 fwmark 0x539 lookup 133; done\n"));
  }
}
