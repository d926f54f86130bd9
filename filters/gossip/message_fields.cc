#include "filters/gossip/message_fields.h"

#include <limits>
#include <string_view>

namespace sidecrypt::filters::gossip {

namespace {

enum class Field : uint8_t { Skip, Ok, Bad };

Field ok(bool good) {
  return good ? Field::Ok : Field::Bad;
}

// Reads a map, calling `field(key)` per entry; `field` consumes the value (Ok), asks for it to be
// skipped (Skip) or reports a bad value (Bad). Nil reads as an empty map.
template <class F>
bool forEachField(MsgpackReader& r, F&& field) {
  uint64_t entries = 0;
  if (!r.readMapHeader(entries) || entries > r.rest().size()) {
    return false;
  }
  for (uint64_t i = 0; i < entries; ++i) {
    std::string_view key;
    if (!r.readKey(key)) {
      return false;
    }
    const Field f = field(key);
    if (f == Field::Bad || (f == Field::Skip && !r.skipValue())) {
      return false;
    }
  }
  return true;
}

bool readStr(MsgpackReader& r, std::string_view& out) {
  std::span<const uint8_t> b;
  if (!r.readBytes(b)) {
    return false;
  }
  out = std::string_view(reinterpret_cast<const char*>(b.data()), b.size());
  return true;
}

template <class T>
bool readUnsigned(MsgpackReader& r, T& out) {
  int64_t v = 0;
  if (!r.readInt(v) || v < 0 || static_cast<uint64_t>(v) > std::numeric_limits<T>::max()) {
    return false;
  }
  out = static_cast<T>(v);
  return true;
}

bool readBool(MsgpackReader& r, bool& out) {
  const auto rest = r.rest();
  if (rest.empty() || (rest[0] != 0xc0 && rest[0] != 0xc2 && rest[0] != 0xc3)) {
    return false;
  }
  out = rest[0] == 0xc3;
  MpHeader h;
  return r.readHeader(h);
}

// The element count of an array or map (entries) value, which is then skipped.
bool readCount(MsgpackReader& r, uint64_t& count) {
  MsgpackReader peek(r.rest());
  MpHeader h;
  if (!peek.readHeader(h)) {
    return false;
  }
  if (h.kind == MpKind::Map) {
    count = h.count / 2;
  } else if (h.kind == MpKind::Array) {
    count = h.count;
  } else if (h.kind == MpKind::Nil) {
    count = 0;
  } else {
    return false;
  }
  return r.skipValue();
}

// ---- Serf (docs/spec/gossip-wire.md §7) ---------------------------------------------------------

Field serfField(MsgpackReader& r, std::string_view key, SerfMessage& s) {
  if (key == "LTime") {
    return ok(readUnsigned(r, s.ltime));
  }
  if (key == "Node") {
    return ok(readStr(r, s.node));
  }
  if (key == "Name") {
    return ok(readStr(r, s.name));
  }
  if (key == "From") {
    return ok(readStr(r, s.from));
  }
  if (key == "SourceNode") {
    return ok(readStr(r, s.source_node));
  }
  if (key == "ID") {
    return ok(readUnsigned(r, s.id));
  }
  if (key == "Addr") {
    return ok(r.readBytes(s.addr));
  }
  if (key == "Port") {
    return ok(readUnsigned(r, s.port));
  }
  if (key == "Flags") {
    return ok(readUnsigned(r, s.flags));
  }
  if (key == "RelayFactor") {
    return ok(readUnsigned(r, s.relay_factor));
  }
  if (key == "Timeout") {
    return ok(r.readInt(s.timeout_ns));
  }
  if (key == "Prune") {
    return ok(readBool(r, s.prune));
  }
  if (key == "CC") {
    return ok(readBool(r, s.cc));
  }
  if (key == "Payload") {
    return ok(r.readBytes(s.payload));
  }
  if (key == "StatusLTimes") {
    return ok(readCount(r, s.status_ltimes));
  }
  if (key == "LeftMembers") {
    return ok(readCount(r, s.left_members));
  }
  if (key == "Events") {
    return ok(readCount(r, s.events));
  }
  if (key == "EventLTime") {
    return ok(readUnsigned(r, s.event_ltime));
  }
  if (key == "QueryLTime") {
    return ok(readUnsigned(r, s.query_ltime));
  }
  return Field::Skip;
}

Field keyField(MsgpackReader& r, std::string_view key, SerfMessage& s) {
  if (key == "Key") {
    return ok(r.readBytes(s.key));
  }
  if (key == "Result") {
    return ok(readBool(r, s.result));
  }
  if (key == "Message") {
    return ok(readStr(r, s.message));
  }
  if (key == "PrimaryKey") {
    return ok(readStr(r, s.primary_key));
  }
  if (key == "Keys") {
    const auto start = r.rest();
    uint64_t n = 0;
    if (!readCount(r, n) || n > std::numeric_limits<uint32_t>::max()) {
      return Field::Bad;
    }
    s.key_count = static_cast<uint32_t>(n);
    s.keys = start.first(start.size() - r.rest().size());
    return Field::Ok;
  }
  return Field::Skip;
}

// keyRequest / keyResponse bodies ([7|8][msgpack]), as a query or response payload carries them.
bool decodeKeyPayload(std::span<const uint8_t> in, SerfMessage& s) {
  if (in.empty() || (in[0] != static_cast<uint8_t>(SerfType::KeyRequest) &&
                     in[0] != static_cast<uint8_t>(SerfType::KeyResponse))) {
    return false;
  }
  s.key_type = in[0];
  MsgpackReader r(in.subspan(1));
  return forEachField(r, [&](std::string_view key) { return keyField(r, key, s); });
}

bool decodeRelayHeader(MsgpackReader& r, SerfMessage& s) {
  return forEachField(r, [&](std::string_view key) {
    if (key == "DestName") {
      return ok(readStr(r, s.relay_dest_name));
    }
    if (key != "DestAddr") {
      return Field::Skip;
    }
    return ok(forEachField(r, [&](std::string_view k) {
      if (k == "IP") {
        return ok(r.readBytes(s.relay_dest_addr));
      }
      if (k == "Port") {
        return ok(readUnsigned(r, s.relay_dest_port));
      }
      return Field::Skip;
    }));
  });
}

bool decodeSerfBody(std::span<const uint8_t> in, SerfMessage& s, bool allow_relay) {
  s.type = in[0];
  MsgpackReader r(in.subspan(1));
  if (s.type == static_cast<int>(SerfType::KeyRequest) ||
      s.type == static_cast<int>(SerfType::KeyResponse)) {
    return decodeKeyPayload(in, s);
  }
  if (s.type == static_cast<int>(SerfType::Relay)) {
    if (!allow_relay || !decodeRelayHeader(r, s) || r.rest().empty()) {
      return false;
    }
    const auto inner = r.rest();
    s.relayed_type = inner[0];
    const bool good = decodeSerfBody(inner, s, false);
    s.type = static_cast<int>(SerfType::Relay);
    return good;
  }
  if (!forEachField(r, [&](std::string_view key) { return serfField(r, key, s); })) {
    return false;
  }
  if (s.type == static_cast<int>(SerfType::Query) ||
      s.type == static_cast<int>(SerfType::QueryResponse)) {
    SerfMessage keys;
    if (decodeKeyPayload(s.payload, keys)) {
      s.key_type = keys.key_type;
      s.key = keys.key;
      s.result = keys.result;
      s.message = keys.message;
      s.key_count = keys.key_count;
      s.keys = keys.keys;
      s.primary_key = keys.primary_key;
    }
  }
  return true;
}

// ---- memberlist bodies (docs/spec/gossip-wire.md §1.1) ------------------------------------------

Field addressField(MsgpackReader& r, std::string_view key, Message& m) {
  if (key == "SourceAddr") {
    return ok(r.readBytes(m.source_addr));
  }
  if (key == "SourcePort") {
    return ok(readUnsigned(r, m.source_port));
  }
  if (key == "SourceNode") {
    return ok(readStr(r, m.source_node));
  }
  if (key == "Addr" || key == "Target") {
    return ok(r.readBytes(m.addr));
  }
  if (key == "Port") {
    return ok(readUnsigned(r, m.port));
  }
  return Field::Skip;
}

Field messageField(MsgpackReader& r, std::string_view key, Message& m) {
  if (key == "SeqNo") {
    return ok(readUnsigned(r, m.seq_no));
  }
  if (key == "Node") {
    return ok(readStr(r, m.node));
  }
  if (key == "Incarnation") {
    return ok(readUnsigned(r, m.incarnation));
  }
  if (key == "From") {
    return ok(readStr(r, m.from));
  }
  if (key == "Nack") {
    return ok(readBool(r, m.nack));
  }
  if (key == "Meta") {
    return ok(r.readBytes(m.meta));
  }
  if (key == "Vsn") {
    return ok(r.readBytes(m.vsn));
  }
  if (key == "Payload") {
    return ok(r.readBytes(m.payload));
  }
  if (key == "Error") {
    return ok(readStr(r, m.error));
  }
  if (key == "Join") {
    return ok(readBool(r, m.join));
  }
  if (key == "Nodes") {
    return ok(readUnsigned(r, m.nodes));
  }
  if (key == "UserStateLen") {
    return ok(readUnsigned(r, m.user_state_len));
  }
  return addressField(r, key, m);
}

}  // namespace

bool decodeSerfMessage(std::span<const uint8_t> in, SerfMessage& out) {
  out = SerfMessage{};
  if (in.empty()) {
    return false;
  }
  out.decoded = decodeSerfBody(in, out, true);
  return out.decoded;
}

KeyList::KeyList(std::span<const uint8_t> msgpack_array) : in_(msgpack_array) {
  MsgpackReader r(in_);
  MpHeader h;
  if (r.readHeader(h) && h.kind == MpKind::Array) {
    left_ = h.count;
    pos_ = r.offset();
  }
}

bool KeyList::next(std::string_view& base64) {
  if (left_ == 0 || pos_ > in_.size()) {
    return false;
  }
  MsgpackReader r(in_.subspan(pos_));
  if (!readStr(r, base64)) {
    left_ = 0;
    return false;
  }
  pos_ += r.offset();
  --left_;
  return true;
}

namespace detail {

bool decodeMessageBody(MsgpackReader& r, Message& m) {
  return forEachField(r, [&](std::string_view key) { return messageField(r, key, m); });
}

void attachSerf(Message& m, std::span<const uint8_t> data) {
  m.has_serf = !data.empty() && data[0] <= static_cast<uint8_t>(SerfType::Relay);
  if (m.has_serf) {
    decodeSerfMessage(data, m.serf);
  }
}

bool decodeUserMsgHeader(MsgpackReader& r, uint64_t& user_msg_len) {
  user_msg_len = 0;
  return forEachField(r, [&](std::string_view key) {
    return key == "UserMsgLen" ? ok(readUnsigned(r, user_msg_len)) : Field::Skip;
  });
}

bool decodeNodeState(MsgpackReader& r, NodeState& s) {
  return forEachField(r, [&](std::string_view key) {
    if (key == "Name") {
      return ok(readStr(r, s.name));
    }
    if (key == "Addr") {
      return ok(r.readBytes(s.addr));
    }
    if (key == "Port") {
      return ok(readUnsigned(r, s.port));
    }
    if (key == "Meta") {
      return ok(r.readBytes(s.meta));
    }
    if (key == "Incarnation") {
      return ok(readUnsigned(r, s.incarnation));
    }
    if (key == "State") {
      return ok(r.readInt(s.state));
    }
    if (key == "Vsn") {
      return ok(r.readBytes(s.vsn));
    }
    return Field::Skip;
  });
}

}  // namespace detail

}  // namespace sidecrypt::filters::gossip
