#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "filters/common/secret_bytes.h"
#include "filters/gossip/message_walker.h"
#include "filters/keyring/key_set.h"

namespace sidecrypt::filters::gossip {

// Serf's key-manager queries (docs/spec/gossip-wire.md §7.1, docs/spec/consul-rpc-tls.md §4.3):
// recognising them in decrypted gossip, and writing the answer an encrypting agent would send. No
// sockets here: the proxy decides when to apply an operation and where the bytes go.

enum class KeyOp : uint8_t { Install, Use, Remove, List };
const char* keyOpName(KeyOp op);  // "install-key", "use-key", "remove-key", "list-keys"
// "_serf_install-key" -> Install, ...; nullopt for any other query name.
std::optional<KeyOp> keyOpForQuery(std::string_view query_name);

// Serf's QueryResponseSizeLimit default, and the smallest encoded key it divides by when it
// truncates a list response (serf internal_query.go).
inline constexpr size_t kQueryResponseSizeLimit = 1024;
inline constexpr size_t kMinEncodedKeyLength = 25;

// A key-manager query from a decoded Serf message (type query, one of the four names).
struct KeyQuery {
  KeyOp op = KeyOp::List;
  uint64_t ltime = 0;
  uint32_t id = 0;
  std::array<uint8_t, 16> addr{};  // the originator's IP (4 or 16 bytes)
  size_t addr_len = 0;
  uint16_t port = 0;
  uint32_t flags = 0;
  uint32_t relay_factor = 0;
  int64_t timeout_ns = 0;
  // The [7 keyRequest]{Key} payload decoded; when false Serf answers Result=false with an empty
  // message (internal_query.go "Failed to decode key request").
  bool payload_ok = false;
  SecretBytes key;  // raw key bytes (empty for list-keys). SECRET: fingerprint only.

  std::span<const uint8_t> address() const { return {addr.data(), addr_len}; }
};
std::optional<KeyQuery> keyQueryFrom(const SerfMessage& m);

// The outcome the responder reports: for list-keys `keys` is the ring to list (primary first,
// PrimaryKey = keys[0]); for the others it is ignored (Keys nil, PrimaryKey "").
struct KeyResult {
  bool ok = false;
  std::string_view message;
  const keyring::KeySet* keys = nullptr;
};

// A query response the agent itself sends (memberlist SendToAddress: one user message, possibly
// compressed): [8][5 queryResponse], or a relay copy [8][9 header][5 queryResponse].
struct AgentResponse {
  uint64_t ltime = 0;
  uint32_t id = 0;
  uint32_t flags = 0;
  std::array<char, 256> from_buf{};
  size_t from_len = 0;
  std::array<uint8_t, 256> relay_header{};  // [9][msgpack relayHeader] when relayed
  size_t relay_header_len = 0;
  bool key_response = false;  // its payload is a [8 keyResponse] (not an ack or a user answer)
  std::string_view from() const { return {from_buf.data(), from_len}; }
  bool relayed() const { return relay_header_len != 0; }
};
// Recognises such a packet (the plaintext an agent sends, label already removed). Anything else
// (gossip, compound packets, other Serf messages, fields too long to hold) gives nullopt.
std::optional<AgentResponse> agentQueryResponse(MessageWalker& walker,
                                                std::span<const uint8_t> packet);

// Writes the packet an encrypting agent would send in answer: [8 user] + the relay header when
// `r` was a relay copy + [5 queryResponse]{Flags, From, ID, LTime, Payload: [8 keyResponse]{Keys,
// Message, PrimaryKey, Result}} with go-msgpack's sorted field order, uncompressed. A list
// response is cut to fit `size_limit` exactly as Serf does ("truncated key list response, showing
// first N of M keys", Result unchanged). Returns the bytes written, 0 if `out` is too small or
// the answer cannot fit the limit. `out` receives key material for list-keys: the caller wipes it.
size_t encodeKeyResponsePacket(const AgentResponse& r, KeyOp op, const KeyResult& result,
                               std::span<uint8_t> out, size_t size_limit = kQueryResponseSizeLimit);

// The [5 queryResponse] message alone (what Serf checks against QueryResponseSizeLimit).
size_t encodeKeyQueryResponse(uint64_t ltime, uint32_t id, std::string_view from, uint32_t flags,
                              KeyOp op, const KeyResult& result, std::span<uint8_t> out,
                              size_t size_limit = kQueryResponseSizeLimit);

}  // namespace sidecrypt::filters::gossip
