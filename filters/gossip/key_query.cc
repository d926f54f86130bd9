#include "filters/gossip/key_query.h"

#include <sodium.h>

#include <algorithm>
#include <cstdio>
#include <string>

#include "filters/gossip/msgpack.h"
#include "filters/gossip/msgpack_writer.h"
#include "filters/keyring/keyring_codec.h"

namespace sidecrypt::filters::gossip {

namespace {

constexpr std::string_view kPrefix = "_serf_";

// [7 keyRequest]{Key: raw}: Serf decodes it into keyRequest{Key []byte}; unknown fields are
// skipped, a missing Key leaves it empty.
bool decodeKeyRequest(std::span<const uint8_t> payload, std::span<const uint8_t>& key) {
  key = {};
  if (payload.empty() || payload[0] != static_cast<uint8_t>(SerfType::KeyRequest)) {
    return false;
  }
  MsgpackReader r(payload.subspan(1));
  uint64_t entries = 0;
  if (!r.readMapHeader(entries)) {
    return false;
  }
  for (uint64_t i = 0; i < entries; ++i) {
    std::string_view name;
    if (!r.readKey(name)) {
      return false;
    }
    if (name == "Key") {
      if (!r.readBytes(key)) {
        return false;
      }
    } else if (!r.skipValue()) {
      return false;
    }
  }
  return true;
}

// [8 keyResponse]{Keys, Message, PrimaryKey, Result} for `listed` keys of the ring.
size_t encodeKeyResponsePayload(KeyOp op, const KeyResult& result, std::string_view message,
                                size_t listed, std::span<uint8_t> out) {
  MsgpackWriter w(out);
  w.byte(static_cast<uint8_t>(SerfType::KeyResponse));
  w.mapHeader(4);
  w.str("Keys");
  const bool list = op == KeyOp::List && result.keys != nullptr;
  if (list && result.ok) {
    w.arrayHeader(listed);
    for (size_t i = 0; i < listed; ++i) {
      const SecretBytes b64 = keyring::encodeKey(result.keys->at(i).raw());
      w.raw(b64.span());
    }
  } else {
    w.nil();
  }
  w.str("Message");
  w.str(message);
  w.str("PrimaryKey");
  if (list && result.ok && !result.keys->empty()) {
    const SecretBytes b64 = keyring::encodeKey(result.keys->primary().raw());
    w.raw(b64.span());
  } else {
    w.str("");
  }
  w.str("Result");
  w.boolean(result.ok);
  return w.ok() ? w.size() : 0;
}

size_t encodeResponse(uint64_t ltime, uint32_t id, std::string_view from, uint32_t flags,
                      std::span<const uint8_t> payload, std::span<uint8_t> out) {
  MsgpackWriter w(out);
  w.byte(static_cast<uint8_t>(SerfType::QueryResponse));
  w.mapHeader(5);
  w.str("Flags");
  w.uint(flags);
  w.str("From");
  w.str(from);
  w.str("ID");
  w.uint(id);
  w.str("LTime");
  w.uint(ltime);
  w.str("Payload");
  w.raw(payload);
  return w.ok() ? w.size() : 0;
}

}  // namespace

const char* keyOpName(KeyOp op) {
  switch (op) {
    case KeyOp::Install:
      return "install-key";
    case KeyOp::Use:
      return "use-key";
    case KeyOp::Remove:
      return "remove-key";
    case KeyOp::List:
      return "list-keys";
  }
  return "unknown";
}

std::optional<KeyOp> keyOpForQuery(std::string_view name) {
  if (name.substr(0, kPrefix.size()) != kPrefix) {
    return std::nullopt;
  }
  name.remove_prefix(kPrefix.size());
  for (KeyOp op : {KeyOp::Install, KeyOp::Use, KeyOp::Remove, KeyOp::List}) {
    if (name == keyOpName(op)) {
      return op;
    }
  }
  return std::nullopt;
}

std::optional<KeyQuery> keyQueryFrom(const SerfMessage& m) {
  if (m.type != static_cast<int>(SerfType::Query) || !m.decoded) {
    return std::nullopt;
  }
  const auto op = keyOpForQuery(m.name);
  if (!op || m.addr.size() > 16) {
    return std::nullopt;
  }
  KeyQuery q;
  q.op = *op;
  q.ltime = m.ltime;
  q.id = m.id;
  std::copy(m.addr.begin(), m.addr.end(), q.addr.begin());
  q.addr_len = m.addr.size();
  q.port = m.port;
  q.flags = m.flags;
  q.relay_factor = m.relay_factor;
  q.timeout_ns = m.timeout_ns;
  std::span<const uint8_t> key;
  q.payload_ok = decodeKeyRequest(m.payload, key);
  if (q.payload_ok && !key.empty()) {
    q.key = SecretBytes::copyOf(key);
  }
  return q;
}

size_t encodeKeyQueryResponse(uint64_t ltime, uint32_t id, std::string_view from, uint32_t flags,
                              KeyOp op, const KeyResult& result, std::span<uint8_t> out,
                              size_t size_limit) {
  // The payload may hold base64 keys: encoded on the stack, wiped before returning.
  std::array<uint8_t, 4096> payload{};
  const size_t total = op == KeyOp::List && result.keys != nullptr ? result.keys->size() : 0;
  auto attempt = [&](size_t listed, std::string_view message) -> size_t {
    const size_t n = encodeKeyResponsePayload(op, result, message, listed, payload);
    if (n == 0) {
      return 0;
    }
    const size_t written = encodeResponse(ltime, id, from, flags, {payload.data(), n}, out);
    return written != 0 && written <= size_limit ? written : 0;
  };
  size_t written = attempt(total, result.message);
  if (written == 0 && total != 0) {
    // serf keyListResponseWithCorrectSize: shrink the list until the response fits.
    const size_t most = size_limit / kMinEncodedKeyLength;
    for (size_t i = std::min(most, total);; --i) {
      std::array<char, 96> text{};
      const int len =
          std::snprintf(text.data(), text.size(),
                        "truncated key list response, showing first %zu of %zu keys", i, total);
      written = attempt(i, {text.data(), static_cast<size_t>(std::max(len, 0))});
      if (written != 0 || i == 0) {
        break;
      }
    }
  }
  sodium_memzero(payload.data(), payload.size());
  return written;
}

std::optional<AgentResponse> agentQueryResponse(MessageWalker& walker,
                                                std::span<const uint8_t> packet) {
  struct Visitor final : MessageVisitor {
    AgentResponse r;
    bool found = false;
    bool other = false;
    void enterLayer(const LayerInfo& layer) override {
      other = other || layer.type == MsgType::Compound;
    }
    void onMessage(const Message& msg) override {
      if (found || msg.type != MsgType::User || !msg.has_serf || !msg.serf.decoded) {
        other = true;
        return;
      }
      const SerfMessage& s = msg.serf;
      const bool relayed = s.type == static_cast<int>(SerfType::Relay);
      if ((relayed ? s.relayed_type : s.type) != static_cast<int>(SerfType::QueryResponse) ||
          s.from.size() > r.from_buf.size()) {
        other = true;
        return;
      }
      r.ltime = s.ltime;
      r.id = s.id;
      r.flags = s.flags;
      r.key_response = s.key_type == static_cast<int>(SerfType::KeyResponse);
      std::copy(s.from.begin(), s.from.end(), r.from_buf.begin());
      r.from_len = s.from.size();
      if (relayed) {
        // [9][msgpack relayHeader][5 ...]: keep the header bytes exactly as the agent wrote them.
        MsgpackReader header(msg.payload.subspan(1));
        if (!header.skipValue() || 1 + header.offset() > r.relay_header.size()) {
          other = true;
          return;
        }
        const size_t len = 1 + header.offset();
        std::copy_n(msg.payload.begin(), len, r.relay_header.begin());
        r.relay_header_len = len;
      }
      found = true;
    }
    void onError(const WalkIssue& /*issue*/) override { other = true; }
  } v;
  const WalkResult res = walker.walkPacket(packet, v);
  if (!res.ok() || !v.found || v.other || res.messages != 1) {
    return std::nullopt;
  }
  return v.r;
}

size_t encodeKeyResponsePacket(const AgentResponse& r, KeyOp op, const KeyResult& result,
                               std::span<uint8_t> out, size_t size_limit) {
  const size_t head = 1 + r.relay_header_len;
  if (out.size() < head) {
    return 0;
  }
  out[0] = static_cast<uint8_t>(MsgType::User);
  std::copy_n(r.relay_header.begin(), r.relay_header_len, out.begin() + 1);
  const size_t n = encodeKeyQueryResponse(r.ltime, r.id, r.from(), r.flags, op, result,
                                          out.subspan(head), size_limit);
  return n == 0 ? 0 : head + n;
}

}  // namespace sidecrypt::filters::gossip
