// Every renderer of wire text survives any bytes (issue 15, item 1): a member name that is not
// valid UTF-8 used to make nlohmann::json throw type_error.316 in /members, /peers and
// `sidecrypt status`, which aborted the proxy.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "filters/common/safe_text.h"
#include "proxy/admin/status_render.h"
#include "proxy/cli/status_table.h"
#include "proxy/runtime_state.h"

using namespace sidecrypt;
using namespace sidecrypt::proxy;
using nlohmann::json;

namespace {

const std::string kBad = "evil\xff\xfe\xc0\x80\xed\xa0\x80";
const std::string kCtl = "ctl\x1b[31m\n\"q\"\\";

PeerCensus hostileCensus() {
  PeerCensus census;
  census.onPacket("10.0.0.9", filters::gossip::PacketResult{}, "");
  census.onAlive(kBad, "10.0.0.9", 7946, 1);
  census.onAlive(kCtl, "10.0.0.8", 7946, 1);
  census.onPacket("10.0.0.8", filters::gossip::PacketResult{}, "");
  census.setNodeName("10.0.0.8", kCtl);
  census.setSelf("self\xff", "10.0.0.1");
  const std::vector<std::string> dns = {"san\xff.example"};
  census.onRpc("10.0.0.9", true, false, &dns);
  return census;
}

}  // namespace

TEST_CASE("members, peers and status JSON dump without an error handler", "[status_render]") {
  const PeerCensus census = hostileCensus();
  const json members = membersJson(census);
  const json peers = peersJson(census);
  std::string text;
  REQUIRE_NOTHROW(text = members.dump());
  CHECK(filters::isValidUtf8(text));
  REQUIRE_NOTHROW(text = peers.dump());
  CHECK(filters::isValidUtf8(text));
  bool found = false;
  for (const auto& m : members["members"]) {
    if (m.contains("name_hex")) {
      CHECK(m["name_hex"] == filters::hexOf(kBad));
      CHECK(m["name"] ==
            "evil\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
            "\xef\xbf\xbd\xef\xbf\xbd");
      found = true;
    } else {
      CHECK(filters::isValidUtf8(m["name"].get<std::string>()));  // valid names unchanged
    }
  }
  CHECK(found);
  CHECK(members["self"]["node"] == "self\xef\xbf\xbd");
  RuntimeState state;
  StatusInput in(state);
  in.census = &census;
  REQUIRE_NOTHROW(text = statusJson(in).dump());
  CHECK(jsonText(json("x\xff")) == "\"x\xef\xbf\xbd\"");
}

TEST_CASE("metrics label values are escaped and valid UTF-8", "[status_render]") {
  const PeerCensus census = hostileCensus();
  RuntimeState state;
  state.config.metrics.peer_series = 10;  // the opt-in per-peer series carry wire names
  StatusInput in(state);
  in.census = &census;
  const std::string text = metricsText(in);
  CHECK(filters::isValidUtf8(text));
  CHECK(text.find("node=\"ctl\x1b[31m\\n\\\"q\\\"\\\\\"") != std::string::npos);
  CHECK(text.find("sidecrypt_info{version=") != std::string::npos);
  CHECK(text.find("node=\"self\xef\xbf\xbd\"} 1") != std::string::npos);
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = text.find('\n', start);
    REQUIRE(end != std::string::npos);
    const std::string line = text.substr(start, end - start);
    CHECK((line.rfind("# ", 0) == 0 || line.rfind("sidecrypt_", 0) == 0));
    start = end + 1;
  }
}

TEST_CASE("the status table shows wire text with control bytes escaped", "[status_render]") {
  const PeerCensus census = hostileCensus();
  RuntimeState state;
  StatusInput in(state);
  in.census = &census;
  const std::string table = cli::renderStatusTable(json::parse(jsonText(statusJson(in))),
                                                   json::parse(jsonText(peersJson(census))),
                                                   json::parse(jsonText(membersJson(census))));
  CHECK(filters::isValidUtf8(table));
  CHECK(table.find('\x1b') == std::string::npos);
  CHECK(table.find("ctl\\x1b[31m\\x0a\"q\"\\") != std::string::npos);
  CHECK(table.find("self\xef\xbf\xbd") != std::string::npos);
}

namespace {

// A state with one leaf and one CA, the leaf expiring at `not_after`.
RuntimeState certificateState(int64_t not_after) {
  namespace rt = filters::rpc_tls;
  auto inv = std::make_shared<rt::CertInventory>();
  rt::CertificateInfo leaf;
  leaf.role = rt::CertRole::Leaf;
  leaf.file = "/etc/consul/\"odd\"\\dir/server.pem";
  leaf.subject = "CN=server.dc1.consul";
  leaf.serial = "0A";
  leaf.not_before = not_after - 1000;
  leaf.not_after = not_after;
  leaf.sha256 = "11";
  leaf.chains_to = "22";
  inv->add(leaf);
  rt::CertificateInfo ca = leaf;
  ca.role = rt::CertRole::Ca;
  ca.file = "/etc/consul/ca.pem";
  ca.subject = "CN=Consul Agent CA";
  ca.not_before = 0;
  ca.not_after = not_after + 100 * 86400;
  ca.sha256 = "22";
  inv->add(ca);
  inv->add(ca);  // the same CA twice in a file: still one series
  auto setup = std::make_shared<rt::RpcTlsSetup>();
  setup->certificates = inv;
  RuntimeState state;
  state.rpc = setup;
  return state;
}

WallClock::time_point at(int64_t unix_seconds) {
  return WallClock::time_point(std::chrono::seconds(unix_seconds));
}

}  // namespace

TEST_CASE("certificate expiry is computed at each scrape and goes negative", "[status_render]") {
  const RuntimeState state = certificateState(2'000'000'000);
  StatusInput in(state);
  const std::string leaf =
      "{role=\"leaf\",file=\"/etc/consul/\\\"odd\\\"\\\\dir/server.pem\",subject=\"CN=server.dc1."
      "consul\",serial=\"0A\"}";
  in.now = at(2'000'000'000 - 2);
  std::string text = metricsText(in);
  CHECK(text.find("sidecrypt_tls_certificate_expiry_seconds" + leaf + " 2\n") != std::string::npos);
  CHECK(text.find("sidecrypt_tls_certificate_not_before_seconds" + leaf + " 1999999000\n") !=
        std::string::npos);
  in.now = at(2'000'000'000 + 5);  // the same state, later: no frozen value
  text = metricsText(in);
  CHECK(text.find("sidecrypt_tls_certificate_expiry_seconds" + leaf + " -5\n") !=
        std::string::npos);
  CHECK(
      text.find("sidecrypt_tls_certificate_expiry_seconds{role=\"ca\",file=\"/etc/consul/ca.pem\","
                "subject=\"CN=Consul Agent CA\",serial=\"0A\"} 8639995\n") != std::string::npos);
  size_t series = 0;
  for (size_t pos = 0;
       (pos = text.find("\nsidecrypt_tls_certificate_expiry_seconds{", pos)) != std::string::npos;
       ++pos) {
    ++series;
  }
  CHECK(series == 2);
  const json certs = statusJson(in)["certificates"];
  REQUIRE(certs.size() == 2);
  CHECK(certs[0]["state"] == "expired");
  CHECK(certs[0]["seconds_left"] == -5);
  CHECK(certs[0]["not_after"] == "2033-05-18T03:33:20Z");
  CHECK(certs[0]["chains_to"] == "22");
  CHECK(certs[1]["state"] == "ok");
  CHECK(certs[1]["days_left"] == 99);
  in.now = at(2'000'000'000 - 1001);
  CHECK(statusJson(in)["certificates"][0]["state"] == "not-yet-valid");
  const std::string table =
      cli::renderStatusTable(json::parse(jsonText(statusJson(in))), json::array(), json());
  CHECK(table.find("leaf         not-yet-valid 2033-05-18T03:33:20Z") != std::string::npos);
}
