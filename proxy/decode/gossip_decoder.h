#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "filters/gossip/gossip_codec.h"
#include "filters/gossip/message_walker.h"
#include "filters/gossip/stream_framer.h"
#include "filters/keyring/key_set.h"
#include "proxy/decode/tcp_reassembly.h"

namespace sidecrypt::proxy::decode {

// What `sidecrypt decode` reports for one UDP packet or one stream message.
struct DecodedItem {
  bool has_frame = false;
  uint64_t frame = 0;
  double time = 0;
  std::string src;  // empty for --hex input
  std::string dst;
  const char* transport = "udp";
  bool encrypted = false;  // sealed (or looks sealed and does not parse as plaintext)
  bool opened = false;
  int version = -1;  // encryption version byte
  int key_index = -1;
  std::string key_fingerprint;
  std::string label;               // HEAD label used as AAD, if any
  std::vector<uint8_t> plaintext;  // decrypted (or plaintext) bytes
  bool redacted = false;           // plaintext withheld: it carries gossip key material
  std::string layers;              // one line, tests/vectors/captured/verified.json style
  std::string summary;             // the same with decoded fields
  nlohmann::json messages = nlohmann::json::array();
  std::vector<std::string> errors;  // open failure first, then what the walk found
  bool failed() const { return encrypted && !opened; }
};

// Opens and walks gossip payloads with a keyring (tried in ring order, like memberlist).
class GossipDecoder {
 public:
  // `keys` may be null or empty (plaintext only). `label` is the AAD for input without a label
  // header (HEAD labels, docs/spec/gossip-wire.md §3.6).
  GossipDecoder(filters::keyring::KeySetConstSharedPtr keys, std::string label);

  // All stream decoders together hold at most this many bytes of unfinished messages.
  static constexpr size_t kMaxBufferedStreamBytes = size_t{256} * 1024 * 1024;
  bool reserveStreamBytes(size_t n) {
    if (n > kMaxBufferedStreamBytes - buffered_) {
      return false;
    }
    buffered_ += n;
    return true;
  }
  void releaseStreamBytes(size_t n) { buffered_ -= n < buffered_ ? n : buffered_; }

  // One UDP payload (label header included, if any).
  void packet(std::span<const uint8_t> payload, DecodedItem& item);
  // One stream message as the framer delimited it; `label_len` bytes of label header lead it.
  // `peer_label`: the label the dialer sent (a reply's AAD carries it, docs/spec/gossip-wire.md
  // §5.1).
  void streamMessage(std::span<const uint8_t> msg, size_t label_len, std::string_view peer_label,
                     DecodedItem& item);

 private:
  // Fills layers/summary/messages/errors; true if the walk found messages and no problems.
  bool walk(std::span<const uint8_t> plain, bool stream, bool in_frame, DecodedItem& item);
  void opened(const filters::gossip::OpenResult& r, std::vector<uint8_t>& out, DecodedItem& item);
  bool haveKeys() const { return keys_ && !keys_->empty(); }

  filters::keyring::KeySetConstSharedPtr keys_;
  std::string label_;
  filters::gossip::MessageWalker walker_;
  size_t buffered_ = 0;
};

// The label a connection's dialer sent, shared by both directions' decoders.
struct ConnectionLabel {
  std::string label;
};

// Frames and decodes one reassembled TCP direction: each complete message becomes an item.
class StreamDecoder final : public StreamSink {
 public:
  using Emit = std::function<void(DecodedItem&)>;
  StreamDecoder(GossipDecoder& decoder, std::shared_ptr<ConnectionLabel> label, std::string src,
                std::string dst, Emit emit);
  ~StreamDecoder() override;
  StreamDecoder(const StreamDecoder&) = delete;
  StreamDecoder& operator=(const StreamDecoder&) = delete;
  void data(std::span<const uint8_t> bytes, const CapturedPacket& at) override;
  void end(const CapturedPacket* at, std::string_view why, bool lost_data) override;

 private:
  DecodedItem item(const CapturedPacket* at) const;
  void frameBuffered(const CapturedPacket& at);
  void drop();  // forget the buffered bytes (and their share of the budget)

  GossipDecoder& decoder_;
  std::shared_ptr<ConnectionLabel> label_;
  std::string src_;
  std::string dst_;
  Emit emit_;
  filters::gossip::StreamFramer framer_;
  std::vector<uint8_t> buf_;
  size_t fed_ = 0;  // bytes of buf_ already given to the framer
  uint64_t messages_ = 0;
  uint64_t ignored_ = 0;
  bool dead_ = false;
};

}  // namespace sidecrypt::proxy::decode
