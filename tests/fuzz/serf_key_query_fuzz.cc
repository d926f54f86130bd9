// Fuzzes the Serf key-rotation path of the proxy (issue 8): key-manager queries found anywhere a
// walk reaches (compound, compress, CRC, streams), the agent's own answers recognised, and the
// answer sidecrypt writes for the agent. Oracle: every answer written must walk back to a Serf
// queryResponse with the same LTime, ID, From and Flags carrying a keyResponse, fit Serf's size
// limit, and keep the relay header of a relay copy. Input: [flags][bytes]; flags bit 0: walk as
// a stream message, bit 1: answer with success (list: a 3-key ring), else with a failure.
#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "filters/common/secret_bytes.h"
#include "filters/gossip/key_query.h"
#include "filters/gossip/message_walker.h"
#include "filters/keyring/aead_key.h"
#include "filters/keyring/key_set.h"

namespace {

using namespace sidecrypt::filters;
using namespace sidecrypt::filters::gossip;

const keyring::KeySet& ring() {
  static const auto keys = [] {
    std::vector<std::unique_ptr<keyring::AeadKey>> v;
    for (uint8_t i = 0; i < 3; ++i) {
      SecretBytes raw(16 + 8 * i);
      raw.data()[0] = i;
      v.push_back(keyring::AeadKey::create(std::move(raw)));
    }
    return std::make_shared<const keyring::KeySet>(std::move(v));
  }();
  return *keys;
}

class Queries final : public MessageVisitor {
 public:
  void onMessage(const Message& m) override {
    if (m.type != MsgType::User || !m.has_serf) {
      return;
    }
    if (auto q = keyQueryFrom(m.serf)) {
      if (q->addr_len > 16 || q->key.size() > m.serf.payload.size() ||
          (!q->payload_ok && q->key.size() != 0)) {
        __builtin_trap();
      }
    }
  }
};

class Answer final : public MessageVisitor {
 public:
  void onMessage(const Message& m) override {
    ++messages;
    if (m.type == MsgType::User && m.has_serf && m.serf.decoded) {
      serf_type =
          m.serf.type == static_cast<int>(SerfType::Relay) ? m.serf.relayed_type : m.serf.type;
      ltime = m.serf.ltime;
      id = m.serf.id;
      flags = m.serf.flags;
      from_len = m.serf.from.size();
      key_type = m.serf.key_type;
    }
  }
  uint32_t messages = 0;
  int serf_type = -1;
  uint64_t ltime = 0;
  uint32_t id = 0;
  uint32_t flags = 0;
  size_t from_len = 0;
  int key_type = -1;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) {
    return 0;
  }
  const uint8_t flags = data[0];
  const std::span<const uint8_t> in(data + 1, size - 1);
  static MessageWalker walker;
  Queries q;
  if ((flags & 1) != 0) {
    walker.walkStream(in, q);
    return 0;
  }
  walker.walkPacket(in, q);
  const auto r = agentQueryResponse(walker, in);
  if (!r) {
    return 0;
  }
  const bool ok = (flags & 2) != 0;
  for (KeyOp op : {KeyOp::Install, KeyOp::List}) {
    const KeyResult result{ok, ok ? "" : "No keyring to modify (encryption not enabled)", &ring()};
    std::array<uint8_t, 2048> out{};
    const size_t n = encodeKeyResponsePacket(*r, op, result, out);
    if (n == 0) {
      continue;  // too large for Serf's limit (a very long node name): left as the agent wrote it
    }
    if (n > out.size() || n - 1 - r->relay_header_len > kQueryResponseSizeLimit) {
      __builtin_trap();
    }
    Answer a;
    const WalkResult w = walker.walkPacket({out.data(), n}, a);
    if (!w.ok() || a.messages != 1 || a.serf_type != static_cast<int>(SerfType::QueryResponse) ||
        a.ltime != r->ltime || a.id != r->id || a.flags != r->flags || a.from_len != r->from_len ||
        a.key_type != static_cast<int>(SerfType::KeyResponse)) {
      __builtin_trap();
    }
    for (size_t i = 0; i < r->relay_header_len; ++i) {
      if (out[1 + i] != r->relay_header[i]) {
        __builtin_trap();
      }
    }
  }
  return 0;
}
