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
