#include "proxy/decode/message_json.h"

#include "filters/common/safe_text.h"
#include "filters/gossip/message_summary.h"
#include "filters/keyring/aead_key.h"

namespace sidecrypt::proxy::decode {

using filters::gossip::Message;
using filters::gossip::MsgType;
using filters::gossip::SerfMessage;
using filters::gossip::SerfType;
using nlohmann::json;

namespace {

// Names and strings off the wire may hold any bytes; nlohmann::json throws on invalid UTF-8
// when dumping, so text that is not valid UTF-8 (strict rules: no overlongs, no surrogates) is
// written as "hex:" and the hex of all its bytes, which keeps the exact bytes for the reader.
json text(std::string_view s) {
  if (!filters::isValidUtf8(s)) {
    return "hex:" + filters::hexOf(s);
  }
  return std::string(s);
}

json ip(std::span<const uint8_t> addr) {
  return addr.empty() ? json(nullptr) : json(std::string(filters::gossip::ipText(addr).view()));
}

void keyFields(const SerfMessage& s, json& j) {
  if (s.key_type == static_cast<int>(SerfType::KeyRequest)) {
    j["key_request"] = {{"key_fingerprint", s.key.empty()
                                                ? json(nullptr)
                                                : json(filters::keyring::fingerprintOf(s.key))}};
  } else if (s.key_type == static_cast<int>(SerfType::KeyResponse)) {
    json keys = json::array();
    filters::gossip::KeyList list(s.keys);
    std::string_view k;
    while (list.next(k)) {
      keys.push_back(filters::gossip::fingerprintOfBase64(k));
    }
    j["key_response"] = {
        {"result", s.result},
        {"message", text(s.message)},
        {"key_fingerprints", keys},
        {"primary_key_fingerprint",
         s.primary_key.empty() ? json(nullptr)
                               : json(filters::gossip::fingerprintOfBase64(s.primary_key))}};
  }
}

void messageFields(const Message& m, json& j) {
  switch (m.type) {
    case MsgType::Ping:
    case MsgType::IndirectPing:
      j["seq_no"] = m.seq_no;
      j["node"] = text(m.node);
      j["source_node"] = text(m.source_node);
      j["source_addr"] = ip(m.source_addr);
      j["source_port"] = m.source_port;
      if (m.type == MsgType::IndirectPing) {
        j["target"] = ip(m.addr);
        j["port"] = m.port;
        j["nack"] = m.nack;
      }
      break;
    case MsgType::AckResp:
    case MsgType::NackResp:
      j["seq_no"] = m.seq_no;
      break;
    case MsgType::Alive:
      j["node"] = text(m.node);
      j["addr"] = ip(m.addr);
      j["port"] = m.port;
      j["incarnation"] = m.incarnation;
      break;
    case MsgType::Suspect:
    case MsgType::Dead:
      j["node"] = text(m.node);
      j["incarnation"] = m.incarnation;
      j["from"] = text(m.from);
      break;
    case MsgType::Err:
      j["error"] = text(m.error);
      break;
    case MsgType::Encrypt:
      j["frame_len"] = m.frame_len;
      j["version"] = m.frame_version;
      break;
    case MsgType::PushPull:
      j["join"] = m.join;
      j["node_count"] = m.nodes;
      j["user_state_len"] = m.user_state_len;
      j["nodes"] = json::array();
      break;
    case MsgType::User:
      j["payload_len"] = m.payload.size();
      break;
    default:
      break;
  }
}

}  // namespace

json serfJson(const SerfMessage& s) {
  json j = {{"type", filters::gossip::serfTypeName(s.type)}, {"decoded", s.decoded}};
  if (!s.decoded) {
    return j;
  }
  j["ltime"] = s.ltime;
  const int t = s.type == static_cast<int>(SerfType::Relay) ? s.relayed_type : s.type;
  if (s.type == static_cast<int>(SerfType::Relay)) {
    j["relayed_type"] = filters::gossip::serfTypeName(s.relayed_type);
    j["relay_to"] = {{"name", text(s.relay_dest_name)},
                     {"addr", ip(s.relay_dest_addr)},
                     {"port", s.relay_dest_port}};
  }
  if (!s.node.empty()) {
    j["node"] = text(s.node);
  }
  if (!s.name.empty()) {
    j["name"] = text(s.name);
  }
  if (t == static_cast<int>(SerfType::Query)) {
    j["id"] = s.id;
    j["source_node"] = text(s.source_node);
    j["addr"] = ip(s.addr);
    j["port"] = s.port;
    j["timeout_ns"] = s.timeout_ns;
    j["flags"] = s.flags;
    j["relay_factor"] = s.relay_factor;
  } else if (t == static_cast<int>(SerfType::QueryResponse)) {
    j["id"] = s.id;
    j["from"] = text(s.from);
    j["flags"] = s.flags;
  } else if (t == static_cast<int>(SerfType::PushPull)) {
    j["members"] = s.status_ltimes;
    j["left_members"] = s.left_members;
    j["event_ltime"] = s.event_ltime;
    j["query_ltime"] = s.query_ltime;
  }
  if (t == static_cast<int>(SerfType::Query) || t == static_cast<int>(SerfType::QueryResponse) ||
      t == static_cast<int>(SerfType::UserEvent)) {
    j["payload_len"] = s.payload.size();
  }
  keyFields(s, j);
  return j;
}

void MessageJson::onMessage(const Message& m) {
  json j = {{"type", filters::gossip::messageTypeName(static_cast<uint8_t>(m.type))}};
  if (!m.decoded && m.type != MsgType::Encrypt) {
    j["decoded"] = false;
  } else {
    messageFields(m, j);
  }
  if (m.has_serf) {
    j["serf"] = serfJson(m.serf);
  }
  messages_.push_back(std::move(j));
}

void MessageJson::onNodeState(const filters::gossip::NodeState& s) {
  if (messages_.empty() || !messages_.back().contains("nodes")) {
    return;
  }
  json n = {{"name", text(s.name)},
            {"addr", ip(s.addr)},
            {"port", s.port},
            {"incarnation", s.incarnation},
            {"state", filters::gossip::nodeStateName(s.state)}};
  if (!s.decoded) {
    n["decoded"] = false;
  }
  messages_.back()["nodes"].push_back(std::move(n));
}

void MessageJson::onError(const filters::gossip::WalkIssue& issue) {
  const std::string what = filters::gossip::describe(issue.error);
  errors_.push_back(what.find(':') != std::string::npos
                        ? what
                        : std::string(filters::gossip::messageTypeName(issue.type)) + ": " + what);
}

}  // namespace sidecrypt::proxy::decode
