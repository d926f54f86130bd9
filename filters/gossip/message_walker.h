#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "filters/common/secret_bytes.h"
#include "filters/gossip/message_types.h"

namespace sidecrypt::filters::gossip {

// Walks decrypted (or plaintext) memberlist messages and reports what is inside, for
// diagnostics (`sidecrypt decode`), the peer census (node names from alive messages / push-pull
// states) and key rotation (Serf `_serf_*` queries). docs/spec/gossip-wire.md §1, §3.2, §3.4, §3.5,
// §6, §7.
//
// Allocation-light: the walker owns its LZW tables and decompression buffers (reused across
// walks); every string_view/span in a callback points into the input or into those buffers and
// is valid only during the callback. Bounded: nesting depth, decompressed bytes and message
// count are capped (WalkLimits); garbage is reported through onError(), never crashes.

class LzwDecoder;

// Serf message types (docs/spec/gossip-wire.md §7).
enum class SerfType : uint8_t {
  Leave = 0,
  Join = 1,
  PushPull = 2,
  UserEvent = 3,
  Query = 4,
  QueryResponse = 5,
  ConflictResponse = 6,
  KeyRequest = 7,
  KeyResponse = 8,
  Relay = 9,
};
const char* serfTypeName(int type);  // "query", "keyRequest", ...; "unknown"
// pushNodeState.State: "alive", "suspect", "dead", "left"; "unknown".
const char* nodeStateName(int64_t state);

// An IP address field rendered as text without any socket header: 4 bytes -> dotted quad,
// 16 bytes -> RFC 5952 IPv6 (IPv4-mapped as ::ffff:a.b.c.d), anything else -> hex.
struct IpText {
  std::array<char, 64> buf{};
  size_t len = 0;
  std::string_view view() const { return {buf.data(), len}; }
};
IpText ipText(std::span<const uint8_t> addr);

// CRC-32/IEEE (the hasCrc layer, Go hash/crc32.ChecksumIEEE).
uint32_t crc32Ieee(std::span<const uint8_t> data);

// A Serf message (memberlist user message payload or push/pull user state), decoded where cheap.
// Fields not carried by `type` stay zero/empty.
struct SerfMessage {
  int type = -1;         // SerfType; -1 when there was no payload
  bool decoded = false;  // the msgpack body parsed
  uint64_t ltime = 0;
  std::string_view node;             // leave, join: Node
  std::string_view name;             // userEvent, query: Name
  std::string_view from;             // queryResponse: From
  std::string_view source_node;      // query: SourceNode
  uint32_t id = 0;                   // query, queryResponse: ID
  std::span<const uint8_t> addr;     // query: Addr (IP bytes)
  uint16_t port = 0;                 // query: Port
  uint32_t flags = 0;                // query, queryResponse: Flags
  uint32_t relay_factor = 0;         // query: RelayFactor
  int64_t timeout_ns = 0;            // query: Timeout
  bool prune = false;                // leave: Prune
  bool cc = false;                   // userEvent: CC
  std::span<const uint8_t> payload;  // userEvent, query, queryResponse: Payload
  // pushPull (push/pull user state): sizes of the collections, not their contents.
  uint64_t status_ltimes = 0;
  uint64_t left_members = 0;
  uint64_t events = 0;
  uint64_t event_ltime = 0;
  uint64_t query_ltime = 0;
  // relay: the header; the embedded message's fields fill the rest of this struct.
  int relayed_type = -1;
  std::string_view relay_dest_name;
  std::span<const uint8_t> relay_dest_addr;
  uint16_t relay_dest_port = 0;
  // Key manager payload inside a query (keyRequest) or a response (keyResponse).
  // SECRET: `key`, `keys` and `primary_key` are key material: fingerprint them, never print.
  int key_type = -1;              // SerfType::KeyRequest / KeyResponse, -1: none
  std::span<const uint8_t> key;   // keyRequest: raw key bytes (empty for list-keys)
  bool result = false;            // keyResponse: Result
  std::string_view message;       // keyResponse: Message
  uint32_t key_count = 0;         // keyResponse: number of Keys
  std::span<const uint8_t> keys;  // keyResponse: the msgpack array of base64 keys (KeyList)
  std::string_view primary_key;   // keyResponse: PrimaryKey (base64)

  bool carriesKeyMaterial() const { return !key.empty() || key_count > 0 || !primary_key.empty(); }
};

// Decodes one Serf message ([type][msgpack body], relay: [9][header][message]). Returns
// out.decoded. Never reads outside `in`.
bool decodeSerfMessage(std::span<const uint8_t> in, SerfMessage& out);

// Iterates the base64 strings of a keyResponse's Keys array (SerfMessage::keys).
class KeyList {
 public:
  explicit KeyList(std::span<const uint8_t> msgpack_array);
  bool next(std::string_view& base64);  // false at the end or on malformed input

 private:
  std::span<const uint8_t> in_;
  size_t pos_ = 0;
  uint64_t left_ = 0;
};

// A wrapper the walker descends through: hasCrc, compound or compress.
struct LayerInfo {
  MsgType type = MsgType::Compound;
  int depth = 0;                   // 0 = outermost
  std::span<const uint8_t> bytes;  // the whole wrapper message
  uint32_t crc = 0;                // hasCrc: the CRC field
  bool crc_ok = false;             // hasCrc: it matches the rest
  uint32_t parts = 0;              // compound: declared part count
  size_t decompressed_len = 0;     // compress: bytes the LZW stream decoded to
};

// One leaf memberlist message. Which fields are set depends on `type`; see docs/spec/gossip-wire.md
// §1.1.
struct Message {
  MsgType type = MsgType::Ping;
  int depth = 0;
  std::span<const uint8_t> bytes;        // the whole message, type byte included
  bool decoded = false;                  // the body parsed (else an onError() follows)
  uint32_t seq_no = 0;                   // ping, indirectPing, ackResp, nackResp
  std::string_view node;                 // ping/indirectPing: target Node; alive/suspect/dead: Node
  std::string_view source_node;          // ping, indirectPing: SourceNode
  std::span<const uint8_t> source_addr;  // ping, indirectPing: SourceAddr
  uint16_t source_port = 0;
  std::span<const uint8_t> addr;     // alive: Addr; indirectPing: Target
  uint16_t port = 0;                 // alive: Port; indirectPing: Port
  bool nack = false;                 // indirectPing: Nack
  uint32_t incarnation = 0;          // alive, suspect, dead
  std::string_view from;             // suspect, dead: From
  std::span<const uint8_t> meta;     // alive: Meta
  std::span<const uint8_t> vsn;      // alive: Vsn
  std::span<const uint8_t> payload;  // ackResp: Payload; user: the user data
  std::string_view error;            // err: Error
  // pushPull (stream): the header and the raw user state.
  uint64_t nodes = 0;
  uint64_t user_state_len = 0;
  bool join = false;
  std::span<const uint8_t> user_state;
  // user (and pushPull user state): the Serf message inside, when the data starts with a Serf
  // type byte; serf.decoded tells whether its body parsed (user data is opaque to memberlist,
  // so a non-Serf payload is not a walk error).
  bool has_serf = false;
  SerfMessage serf;
  // encrypt (stream): a sealed frame the walker cannot open (the caller opens it).
  uint32_t frame_len = 0;
  int frame_version = -1;
};

// One node state of a push/pull (stream), reported after the pushPull message itself.
struct NodeState {
  uint32_t index = 0;
  bool decoded = false;
  std::string_view name;
  std::span<const uint8_t> addr;
  uint16_t port = 0;
  uint32_t incarnation = 0;
  int64_t state = 0;  // nodeStateName()
  std::span<const uint8_t> meta;
  std::span<const uint8_t> vsn;
};

enum class WalkError : uint8_t {
  None,
  Empty,                 // empty message (0.2.2 panics on this shape)
  UnsupportedType,       // type byte not valid here ("msg type (N) not supported")
  BadCrc,                // hasCrc checksum mismatch ("Got invalid checksum for UDP packet")
  CompoundTable,         // compound: fewer length bytes than parts ("truncated len slice")
  CompoundTruncated,     // compound: parts running past the end were dropped (detail = count)
  CompoundEmptyPart,     // compound: an empty part (0.2.2 panics on this shape)
  BadCompress,           // compress: undecodable {Algo, Buf} or unknown algorithm
  CorruptLzw,            // compress: corrupt LZW stream
  DecompressedEmpty,     // compress: decodes to nothing (0.2.2 panics on this shape)
  DecompressedTooLarge,  // compress: over WalkLimits
  TooDeep,               // nesting over WalkLimits::max_depth
  TooManyMessages,       // over WalkLimits::max_messages
  BadBody,               // the msgpack body does not decode
  TooManyNodes,          // push/pull Nodes over WalkLimits::max_node_states
  TruncatedData,         // stream: fewer raw bytes than the header declared (detail = missing)
  BadFrame,              // stream: encrypted frame header inconsistent with its length
};
const char* describe(WalkError e);

struct WalkIssue {
  WalkError error = WalkError::None;
  uint8_t type = 0;  // the message type the problem belongs to
  int depth = 0;     // its depth (a layer's own problems carry the layer's depth)
  uint64_t detail = 0;
};

// Callbacks in document order: enterLayer, the inner messages, leaveLayer. onMessage for a
// message whose body fails to decode has decoded == false and is followed by its onError.
class MessageVisitor {
 public:
  virtual ~MessageVisitor() = default;
  virtual void enterLayer(const LayerInfo& /*layer*/) {}
  virtual void leaveLayer(const LayerInfo& /*layer*/) {}
  virtual void onMessage(const Message& msg) = 0;
  virtual void onNodeState(const NodeState& /*state*/) {}
  virtual void onError(const WalkIssue& /*issue*/) {}
};

struct WalkLimits {
  size_t max_decompressed = size_t{64} * 1024;  // one packet decompression (a datagram is < 64 KiB)
  size_t max_stream_decompressed = size_t{40} * 1024 * 1024;  // HEAD's cap on a stream message
  size_t max_total_decompressed = size_t{1024} * 1024;  // all packet decompressions in one walk
  int max_depth = 8;
  uint32_t max_messages = 4096;
  uint64_t max_node_states = uint64_t{1024} * 1024;  // HEAD's cap on Nodes
};

struct WalkResult {
  uint32_t messages = 0;  // leaf messages reported
  uint32_t errors = 0;    // onError() calls
  WalkError first_error = WalkError::None;
  bool ok() const { return errors == 0; }
};

// Not thread-safe and not reentrant (do not walk from inside a callback); create one per
// thread or filter and reuse it.
class MessageWalker {
 public:
  explicit MessageWalker(WalkLimits limits = {});
  ~MessageWalker();
  MessageWalker(const MessageWalker&) = delete;
  MessageWalker& operator=(const MessageWalker&) = delete;

  // One UDP packet payload after decryption (label header removed): hasCrc (outermost only),
  // then handleCommand recursing through compound and compress (docs/spec/gossip-wire.md §3.2).
  WalkResult walkPacket(std::span<const uint8_t> packet, MessageVisitor& visitor);
  // One complete stream message (docs/spec/gossip-wire.md §6; label header removed). `in_frame`: it
  // is the plaintext of an encrypted frame, so a second frame is not valid inside.
  WalkResult walkStream(std::span<const uint8_t> msg, MessageVisitor& visitor,
                        bool in_frame = false);

 private:
  struct Walk;
  void packetCommand(Walk& w, std::span<const uint8_t> msg, int depth);
  void compound(Walk& w, std::span<const uint8_t> msg, int depth);
  void streamCommand(Walk& w, std::span<const uint8_t> msg, int depth, bool allow_wrappers,
                     bool allow_frame);
  void pushPull(Walk& w, std::span<const uint8_t> msg, int depth);
  void streamUser(Walk& w, std::span<const uint8_t> msg, int depth);
  void encryptFrame(Walk& w, std::span<const uint8_t> msg, int depth);
  // Decompresses msg (a compress message) into a per-depth buffer; nullptr on error (reported).
  const SecureBuffer* decompress(Walk& w, std::span<const uint8_t> msg, int depth, size_t cap);
  void leaf(Walk& w, std::span<const uint8_t> msg, int depth);
  bool admit(Walk& w, std::span<const uint8_t> msg, int depth);

  WalkLimits limits_;
  // Decompressed gossip can carry keys (a Serf key query holds the raw key): the decoder's
  // tables and the buffers live in guarded, don't-dump memory (filters/common/secret_bytes.h).
  SecureUnique<LzwDecoder> lzw_;
  std::vector<SecureBuffer> scratch_;  // one decompression buffer per depth
};

}  // namespace sidecrypt::filters::gossip
