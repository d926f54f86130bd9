// Fuzzes the path from a peer's bytes to everything sidecrypt renders (issue 15, item 1): member
// names, Serf names and certificate names are bytes on the wire and may be anything. Input:
// records [kind][len][len bytes]. kind bit 7 set: the bytes are a whole gossip packet (walked
// as a datagram and as a stream message); else the bytes are a name, put into a memberlist
// message of type kind % 5 (alive, suspect, dead, ping from the agent, ping from a peer) that
// goes through the GossipObserver into the census, and into a TLS peer's DNS names. Then every
// renderer runs: /members, /peers and /status JSON, the metrics text, the `sidecrypt status`
// table, the log escape and `sidecrypt decode --json`. Oracle: nothing throws, every JSON text
// dumps without an error handler, is valid UTF-8 and parses back, the metrics text is valid
// UTF-8 with every line a sample or a comment, and the table and log text carry no control
// byte but newline.
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "filters/common/safe_text.h"
#include "filters/gossip/message_walker.h"
#include "filters/gossip/msgpack_writer.h"
#include "proxy/admin/status_render.h"
#include "proxy/cli/status_table.h"
#include "proxy/datapath/gossip_observer.h"
#include "proxy/decode/message_json.h"
#include "proxy/runtime_state.h"

namespace {

using namespace sidecrypt;
using namespace sidecrypt::proxy;
namespace fg = sidecrypt::filters::gossip;

void require(bool ok) {
  if (!ok) {
    __builtin_trap();
  }
}

std::string jsonChecked(const nlohmann::json& j) {
  std::string text;
  try {
    text = j.dump();  // no error handler: the renderers must have made every string valid
  } catch (...) {
    __builtin_trap();
  }
  require(filters::isValidUtf8(text));
  try {
    const nlohmann::json back = nlohmann::json::parse(text);
    require(!back.is_discarded());
  } catch (...) {
    __builtin_trap();
  }
  return text;
}

void noControlBytes(std::string_view s) {
  require(filters::isValidUtf8(s));
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    require(c == '\n' || (u >= 0x20 && u != 0x7f));
  }
}

// A memberlist message carrying `name` (and `other` where a second name goes).
size_t message(uint8_t kind, std::string_view name, std::string_view other,
               std::span<uint8_t> out) {
  static constexpr std::array<uint8_t, 4> kPeer = {10, 250, 0, 2};
  static constexpr std::array<uint8_t, 4> kAgent = {10, 250, 0, 1};
  fg::MsgpackWriter w(out.subspan(1));
  switch (kind % 5) {
    case 0:
      out[0] = 4;  // alive
      w.mapHeader(4);
      w.str("Incarnation");
      w.uint(kind);
      w.str("Node");
      w.str(name);
      w.str("Addr");
      w.raw((kind & 0x20) != 0 ? kAgent : kPeer);
      w.str("Port");
      w.uint(7946);
      break;
    case 1:
    case 2:
      out[0] = kind % 5 == 1 ? 3 : 5;  // suspect, dead
      w.mapHeader(3);
      w.str("Incarnation");
      w.uint(kind);
      w.str("Node");
      w.str(name);
      w.str("From");
      w.str((kind & 0x20) != 0 ? name : other);
      break;
    default:
      out[0] = 0;  // ping
      w.mapHeader(5);
      w.str("SeqNo");
      w.uint(1);
      w.str("Node");
      w.str(other);
      w.str("SourceAddr");
      w.raw(kind % 5 == 3 ? kAgent : kPeer);
      w.str("SourcePort");
      w.uint(7946);
      w.str("SourceNode");
      w.str(name);
      break;
  }
  return w.ok() ? 1 + w.size() : 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const SocketAddress kPeer = SocketAddress::parse("10.250.0.2:7946");
  static const SocketAddress kAgent = SocketAddress::parse("10.250.0.1:7946");
  static fg::MessageWalker walker;
  PeerCensus census(16);
  GossipObserver observer(census,
                          [](GossipPool) { return filters::keyring::KeySetConstSharedPtr{}; });
  nlohmann::json decoded = nlohmann::json::array();
  std::vector<std::string> decode_errors;
  decode::MessageJson decode_visitor(decoded, decode_errors);
  std::vector<uint8_t> packet(4096);
  std::string previous = "peer";
  size_t i = 0;
  while (i + 2 <= size) {
    const uint8_t kind = data[i];
    const size_t len = std::min<size_t>(data[i + 1], size - i - 2);
    const std::span<const uint8_t> bytes(data + i + 2, len);
    i += 2 + len;
    const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    std::span<const uint8_t> walked;
    if ((kind & 0x80) != 0) {
      walked = bytes;
    } else {
      const size_t n = message(kind, text, previous, packet);
      if (n == 0) {
        continue;
      }
      walked = {packet.data(), n};
      census.onPacket("10.250.0.2", fg::PacketResult{}, "");
      const std::vector<std::string> dns = {std::string(text)};
      census.onRpc("10.250.0.2", true, false, &dns);
      previous = std::string(text);
    }
    if (kind % 5 == 3 && (kind & 0x80) == 0) {
      observer.stream(GossipPool::Lan, kAgent, true, walked);
    } else {
      observer.inbound(GossipPool::Lan, kPeer, walked);
    }
    if ((kind & 0x80) != 0) {
      observer.stream(GossipPool::Lan, kPeer, false, walked);
    }
    walker.walkPacket(walked, decode_visitor);
    noControlBytes(filters::escapeForLog(text));
  }

  const std::string members = jsonChecked(membersJson(census));
  const std::string peers = jsonChecked(peersJson(census));
  RuntimeState state;
  StatusInput in(state);
  in.census = &census;
  const std::string status = jsonChecked(statusJson(in));
  jsonChecked(decoded);

  const std::string metrics = metricsText(in);
  require(filters::isValidUtf8(metrics));
  size_t start = 0;
  while (start < metrics.size()) {
    const size_t end = metrics.find('\n', start);
    require(end != std::string::npos);
    const std::string_view line(metrics.data() + start, end - start);
    require(line.starts_with("# ") || line.starts_with("sidecrypt_"));
    start = end + 1;
  }

  try {
    noControlBytes(cli::renderStatusTable(nlohmann::json::parse(status),
                                          nlohmann::json::parse(peers),
                                          nlohmann::json::parse(members)));
  } catch (const nlohmann::json::exception&) {
    __builtin_trap();
  }
  return 0;
}
