#include "proxy/decode/gossip_decoder.h"

#include <array>
#include <utility>

#include "filters/gossip/message_summary.h"
#include "filters/gossip/msgpack.h"
#include "filters/keyring/aead_key.h"
#include "proxy/decode/message_json.h"

namespace sidecrypt::proxy::decode {

using filters::gossip::MessageSummary;
using filters::gossip::OpenError;
using filters::gossip::OpenResult;

namespace {

// Forwards every walker callback to several visitors.
class Fanout final : public filters::gossip::MessageVisitor {
 public:
  explicit Fanout(std::initializer_list<MessageVisitor*> to) : to_(to) {}
  void enterLayer(const filters::gossip::LayerInfo& l) override {
    for (auto* v : to_) {
      v->enterLayer(l);
    }
  }
  void leaveLayer(const filters::gossip::LayerInfo& l) override {
    for (auto* v : to_) {
      v->leaveLayer(l);
    }
  }
  void onMessage(const filters::gossip::Message& m) override {
    for (auto* v : to_) {
      v->onMessage(m);
    }
  }
  void onNodeState(const filters::gossip::NodeState& s) override {
    for (auto* v : to_) {
      v->onNodeState(s);
    }
  }
  void onError(const filters::gossip::WalkIssue& i) override {
    for (auto* v : to_) {
      v->onError(i);
    }
  }

 private:
  std::vector<MessageVisitor*> to_;
};

std::string openErrorText(const OpenResult& r, size_t sealed_len) {
  if (r.error == OpenError::BadPadding) {
    return "opened with key " + std::to_string(r.key_index) +
           " but the version 0 padding is invalid (a 0.2.2 agent would panic on it)";
  }
  std::array<char, 128> buf{};
  return std::string(buf.data(), filters::gossip::formatOpenError(r, sealed_len, buf));
}

// A plaintext ping / indirect ping is [type][one msgpack map] and nothing else; sealed bytes
// (version 0/1 + random nonce) almost never look like that, whereas a lenient parse can
// accept them (an empty map decodes fine).
bool wholePing(std::span<const uint8_t> body) {
  filters::gossip::MsgpackReader r(body.subspan(1));
  filters::gossip::MpHeader h;
  if (!filters::gossip::MsgpackReader(r.rest()).readHeader(h) ||
      h.kind != filters::gossip::MpKind::Map || h.count < 4) {
    return false;
  }
  return r.skipValue() && r.rest().empty();
}

std::span<const uint8_t> labelBytes(const std::string& label) {
  return {reinterpret_cast<const uint8_t*>(label.data()), label.size()};
}

}  // namespace

GossipDecoder::GossipDecoder(filters::keyring::KeySetConstSharedPtr keys, std::string label)
    : keys_(std::move(keys)), label_(std::move(label)) {}

bool GossipDecoder::walk(std::span<const uint8_t> plain, bool stream, bool in_frame,
                         DecodedItem& item) {
  MessageSummary compact(MessageSummary::Style::Compact);
  MessageSummary detailed(MessageSummary::Style::Detailed);
  MessageJson json(item.messages, item.errors);
  Fanout all({&compact, &detailed, &json});
  const auto r = stream ? walker_.walkStream(plain, all, in_frame) : walker_.walkPacket(plain, all);
  item.layers += compact.text();
  item.summary = detailed.text();
  item.redacted = compact.carriesKeyMaterial();
  if (!item.redacted) {
    item.plaintext.assign(plain.begin(), plain.end());
  }
  return r.ok() && r.messages > 0;
}

void GossipDecoder::opened(const OpenResult& r, std::vector<uint8_t>& out, DecodedItem& item) {
  item.opened = true;
  item.key_index = r.key_index;
  item.key_fingerprint = keys_->fingerprint(static_cast<size_t>(r.key_index));
  out.resize(r.length);
}

void GossipDecoder::packet(std::span<const uint8_t> payload, DecodedItem& item) {
  item.transport = "udp";
  std::string label = label_;
  auto body = payload;
  const auto header = filters::gossip::parseLabelHeader(payload);
  if (header.status == filters::gossip::LabelHeader::Status::Present) {
    label.assign(header.label.begin(), header.label.end());
    body = payload.subspan(header.header_len);
  } else if (header.status != filters::gossip::LabelHeader::Status::None) {
    item.errors.emplace_back("malformed label header");
    return;
  }
  item.label = label;
  if (body.empty()) {
    item.errors.emplace_back("empty datagram");
    return;
  }
  // Versions 0 and 1 overlap the ping/indirect-ping type bytes (docs/spec/gossip-wire.md §1): a
  // payload that could be sealed and does not open is called encrypted only if it is not a
  // plaintext message either.
  const bool could_be_sealed = body[0] <= 1 && body.size() >= filters::gossip::kV1Overhead;
  OpenResult r;
  r.error = OpenError::NoKey;
  if (haveKeys() && could_be_sealed) {
    std::vector<uint8_t> out(body.size());
    r = filters::gossip::openPayload(*keys_, body, labelBytes(label), out);
    if (r.ok()) {
      item.encrypted = true;
      item.version = body[0];
      opened(r, out, item);
      item.layers = "encrypted(key " + std::to_string(r.key_index) + ") > ";
      walk(out, false, false, item);
      return;
    }
  }
  if (!could_be_sealed) {
    walk(body, false, false, item);  // a type byte >= 2, or too short to be sealed
    return;
  }
  if (r.error != OpenError::BadPadding) {
    DecodedItem plain = item;
    if (wholePing(body) && walk(body, false, false, plain)) {
      item = std::move(plain);  // a plaintext ping / indirect ping
      return;
    }
  }
  item.encrypted = true;
  item.version = body[0];
  item.key_index = r.error == OpenError::BadPadding ? r.key_index : -1;
  item.errors.push_back(haveKeys() ? openErrorText(r, body.size())
                                   : "looks encrypted (version " + std::to_string(body[0]) +
                                         ") and no keys were given");
}

void GossipDecoder::streamMessage(std::span<const uint8_t> msg, size_t label_len,
                                  std::string_view peer_label, DecodedItem& item) {
  item.transport = "tcp";
  std::string label = label_len >= 2 ? std::string(msg.begin() + 2, msg.begin() + label_len)
                                     : std::string(peer_label.empty() ? label_ : peer_label);
  item.label = label;
  const auto body = msg.subspan(label_len);
  if (body.empty()) {
    item.errors.emplace_back("empty stream message");
    return;
  }
  if (body[0] != filters::gossip::kEncryptMsg) {
    walk(body, true, false, item);
    return;
  }
  item.encrypted = true;
  item.version = body.size() > filters::gossip::kFrameHeaderBytes
                     ? body[filters::gossip::kFrameHeaderBytes]
                     : -1;
  if (!haveKeys()) {
    item.errors.emplace_back("encrypted frame and no keys were given");
    return;
  }
  std::vector<uint8_t> out(body.size());
  const OpenResult r = filters::gossip::openFrame(*keys_, body, label, out);
  if (!r.ok()) {
    item.key_index = r.error == OpenError::BadPadding ? r.key_index : -1;
    item.errors.push_back(openErrorText(r, body.size() - filters::gossip::kFrameHeaderBytes));
    return;
  }
  opened(r, out, item);
  item.layers = "encrypt(key " + std::to_string(r.key_index) + ") > ";
  walk(out, true, true, item);
}

// ---- streams -------------------------------------------------------------------------------

StreamDecoder::StreamDecoder(GossipDecoder& decoder, std::shared_ptr<ConnectionLabel> label,
                             std::string src, std::string dst, Emit emit)
    : decoder_(decoder),
      label_(std::move(label)),
      src_(std::move(src)),
      dst_(std::move(dst)),
      emit_(std::move(emit)),
      framer_(filters::gossip::FramerGrammar{
          .allow_label = true, .allow_encrypted = true, .allow_compress = true}) {}

DecodedItem StreamDecoder::item(const CapturedPacket* at) const {
  DecodedItem it;
  it.transport = "tcp";
  it.src = src_;
  it.dst = dst_;
  if (at != nullptr && at->frame != 0) {  // frame 0: not from a capture (--hex)
    it.has_frame = true;
    it.frame = at->frame;
    it.time = at->time;
  }
  return it;
}

StreamDecoder::~StreamDecoder() {
  drop();
}

void StreamDecoder::drop() {
  decoder_.releaseStreamBytes(buf_.size());
  buf_.clear();
  fed_ = 0;
}

void StreamDecoder::data(std::span<const uint8_t> bytes, const CapturedPacket& at) {
  if (dead_) {
    ignored_ += bytes.size();
    return;
  }
  if (!decoder_.reserveStreamBytes(bytes.size())) {
    DecodedItem it = item(&at);
    it.errors.emplace_back("stream: unfinished messages over the decoder's memory budget");
    emit_(it);
    dead_ = true;
    drop();
    return;
  }
  buf_.insert(buf_.end(), bytes.begin(), bytes.end());
  frameBuffered(at);
}

void StreamDecoder::frameBuffered(const CapturedPacket& at) {
  using filters::gossip::FramerStatus;
  while (!dead_ && fed_ < buf_.size()) {
    const auto r = framer_.feed(std::span<const uint8_t>(buf_).subspan(fed_));
    fed_ += r.consumed;
    if (r.status == FramerStatus::NeedMore) {
      return;
    }
    DecodedItem it = item(&at);
    if (r.status == FramerStatus::Error) {
      it.encrypted = framer_.messageType() == filters::gossip::kEncryptMsg;
      it.errors.push_back(std::string("stream: ") + filters::gossip::describe(r.error) +
                          (r.detail != 0 ? " (" + std::to_string(r.detail) + ")" : ""));
      emit_(it);
      dead_ = true;
      ignored_ += buf_.size();
      drop();
      return;
    }
    if (r.label_length >= 2 && messages_ == 0) {
      label_->label.assign(buf_.begin() + 2, buf_.begin() + static_cast<ptrdiff_t>(r.label_length));
    }
    decoder_.streamMessage(std::span<const uint8_t>(buf_).first(r.length), r.label_length,
                           label_->label, it);
    if (messages_++ > 0) {
      it.errors.emplace_back("more than one message in one direction (memberlist sends one)");
    }
    emit_(it);
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<ptrdiff_t>(r.length));
    decoder_.releaseStreamBytes(r.length);
    fed_ = 0;
    framer_ = filters::gossip::StreamFramer(filters::gossip::FramerGrammar{
        .allow_label = false, .allow_encrypted = true, .allow_compress = true});
  }
}

void StreamDecoder::end(const CapturedPacket* at, std::string_view why, bool lost_data) {
  if (dead_ || (buf_.empty() && !lost_data)) {
    return;
  }
  DecodedItem it = item(at);
  it.encrypted = framer_.messageType() == filters::gossip::kEncryptMsg;
  it.errors.push_back(buf_.empty()
                          ? "stream: " + std::string(why)
                          : "stream ended mid-message after " + std::to_string(buf_.size()) +
                                " bytes" + (why.empty() ? "" : ": " + std::string(why)));
  emit_(it);
  drop();
}

}  // namespace sidecrypt::proxy::decode
