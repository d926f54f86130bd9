#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "filters/common/secret_bytes.h"
#include "filters/gossip/lzw_decoder.h"
#include "filters/gossip/message_walker.h"
#include "filters/gossip/stream_framer.h"

namespace sidecrypt::filters::gossip {

// Guards a plaintext agent (Debian's serf 0.2.2-era memberlist) against the plaintext shapes
// that panic it (docs/spec/gossip-wire.md §9, negatives.json parser_vectors), applied to everything
// sidecrypt hands the agent: decrypted payloads and accepted plaintext alike.

enum class InspectVerdict : uint8_t {
  Ok,          // forward
  CrashShape,  // would panic a 0.2.2 agent: drop and count
  Malformed,   // the agent would reject it anyway (bad LZW, unknown algorithm, nesting): drop
  TooLarge,    // over a decompression/size cap: drop
};

struct InspectResult {
  InspectVerdict verdict = InspectVerdict::Ok;
  const char* reason = "ok";
  bool ok() const { return verdict == InspectVerdict::Ok; }
};

// Packets (docs/spec/gossip-wire.md §3.2): hasCrc (outermost only) -> handleCommand, recursing into
// compound parts and one level of compression. Crash shapes: an empty message at any level (empty
// plaintext, 5-byte hasCrc, empty compound part, compression that decodes to nothing) and compounds
// with count >= 128 (0.2.2 computes count*2 in 8 bits). Owns its LZW tables and one decompression
// scratch, allocated once; inspect() never allocates.
class PacketInspector {
 public:
  static constexpr size_t kDefaultMaxDecompressed = size_t{64} * 1024;
  static constexpr int kMaxDepth = 4;

  explicit PacketInspector(size_t max_decompressed = kDefaultMaxDecompressed);
  InspectResult inspect(std::span<const uint8_t> packet);

 private:
  InspectResult command(std::span<const uint8_t> msg, int depth);
  InspectResult compound(std::span<const uint8_t> body, int depth);
  InspectResult compressed(std::span<const uint8_t> body, int depth);

  SecureUnique<LzwDecoder> lzw_;  // guarded memory: decompressed gossip can carry keys
  SecureBuffer scratch_;
  size_t scratch_cap_;
  bool scratch_busy_ = false;
};

// Streams (docs/spec/gossip-wire.md §6, §9): the framer has already enforced the size caps on the
// outer message; a compressed message is decompressed (streaming, no buffer) through a nested
// framer so the same caps apply inside it, and one that decodes to nothing is a crash shape.
// Limits: HEAD's 40 MiB on decompressed output. A push/pull (plain or compressed) is also walked
// for node states with a short Vsn (docs/spec/gossip-wire.md §10): memberlist's verifyProtocol
// indexes Vsn[0..5] of every node state with a non-empty Vsn, and mergeRemoteState every Vsn of a
// join when a merge delegate is set (Consul, Serf), so 1-5 bytes, or fewer than 6 in a join, panic
// the agent (0.2.2 and Debian's HEAD).
class StreamInspector {
 public:
  static constexpr uint64_t kMaxDecompressed = uint64_t{40} * 1024 * 1024;

  explicit StreamInspector(FramerLimits limits = {});
  // `msg` is exactly one framed plaintext message, label header removed.
  InspectResult inspect(std::span<const uint8_t> msg);

 private:
  InspectResult shortVsn(std::span<const uint8_t> msg);

  FramerLimits limits_;
  SecureUnique<LzwDecoder> lzw_;           // created on the first compressed message
  std::unique_ptr<MessageWalker> walker_;  // created on the first push/pull
};

// Parses the body of a compress message (after the type byte): {"Algo": 0, "Buf": bytes}.
// Returns false on malformed msgpack or an algorithm other than LZW (docs/spec/gossip-wire.md
// §3.5).
bool parseCompress(std::span<const uint8_t> body, std::span<const uint8_t>& buf);

}  // namespace sidecrypt::filters::gossip
