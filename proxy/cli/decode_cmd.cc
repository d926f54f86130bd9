// `sidecrypt decode`: the offline gossip decoder (issue 4 item 5). Reads a pcap/pcapng capture
// or one hex packet, opens every UDP packet and TCP stream message with the given keyring and
// prints what is inside, one line (or one JSON object) per packet/message.
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "filters/common/secret_bytes.h"
#include "filters/keyring/keyring_codec.h"
#include "proxy/cli/commands.h"
#include "proxy/decode/capture_reader.h"
#include "proxy/decode/gossip_decoder.h"
#include "proxy/decode/tcp_reassembly.h"
#include "proxy/keyring/keyring_file.h"

namespace sidecrypt::proxy::cli {

namespace {

using decode::CapturedPacket;
using decode::DecodedItem;
using filters::keyring::AeadKey;
using filters::keyring::KeySet;
using filters::keyring::KeySetConstSharedPtr;
using nlohmann::json;

constexpr int kExitOpenFailed = 1;
constexpr int kExitUnusable = 2;

std::variant<KeySetConstSharedPtr, std::string> loadKeys(const DecodeOptions& o) {
  if (!o.keyring.empty() && !o.keys.empty()) {
    return std::string("give either --keyring or --key, not both");
  }
  if (!o.keyring.empty()) {
    auto loaded = loadKeyringFile(o.keyring);
    if (auto* err = std::get_if<std::string>(&loaded)) {
      return *err;
    }
    if (std::holds_alternative<KeyringMissing>(loaded)) {
      return o.keyring + ": no such keyring file";
    }
    return std::get<KeySetConstSharedPtr>(loaded);
  }
  std::vector<std::unique_ptr<AeadKey>> keys;
  for (size_t i = 0; i < o.keys.size(); ++i) {
    auto decoded = filters::keyring::decodeKey(o.keys[i]);
    if (auto* err = std::get_if<std::string>(&decoded)) {
      return "--key #" + std::to_string(i + 1) + ": " + *err;
    }
    keys.push_back(AeadKey::create(std::move(std::get<filters::SecretBytes>(decoded))));
  }
  return std::make_shared<const KeySet>(std::move(keys));
}

std::variant<std::vector<uint8_t>, std::string> parseHex(const std::string& text) {
  std::string digits;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '0' && i + 1 < text.size() && (text[i + 1] == 'x' || text[i + 1] == 'X')) {
      ++i;
    } else if (std::isxdigit(static_cast<unsigned char>(c)) != 0) {
      digits += c;
    } else if (std::isspace(static_cast<unsigned char>(c)) == 0 && c != ':') {
      return std::string("--hex: not a hex string (unexpected '") + c + "')";
    }
  }
  if (digits.empty() || digits.size() % 2 != 0) {
    return std::string("--hex: need an even, non-zero number of hex digits");
  }
  std::vector<uint8_t> out;
  for (size_t i = 0; i < digits.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoi(digits.substr(i, 2), nullptr, 16)));
  }
  return out;
}

std::string toHex(const std::vector<uint8_t>& b) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(b.size() * 2);
  for (const uint8_t c : b) {
    out += kHex[c >> 4];
    out += kHex[c & 0xf];
  }
  return out;
}

json nullable(const std::string& s) {
  return s.empty() ? json(nullptr) : json(s);
}

// Prints items and keeps the counts for the summary and the exit status.
class Printer {
 public:
  explicit Printer(bool json) : json_(json) {}

  void print(const DecodedItem& it) {
    count(it);
    if (json_) {
      std::cout << toJson(it).dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
    } else {
      std::cout << human(it) << "\n";
    }
  }
  int failed() const { return failed_; }
  int total() const { return udp_ + tcp_; }
  std::string summary() const {
    std::string keys;
    for (const auto& [index, n] : by_key_) {
      keys += (keys.empty() ? " (" : ", ") + ("key#" + std::to_string(index)) + ": " +
              std::to_string(n);
    }
    return std::to_string(udp_) + " udp packets, " + std::to_string(tcp_) +
           " stream messages: " + std::to_string(opened_) + " opened" +
           (keys.empty() ? "" : keys + ")") + ", " + std::to_string(plaintext_) + " plaintext, " +
           std::to_string(failed_) + " failed to open, " + std::to_string(with_errors_) +
           " with problems";
  }

 private:
  void count(const DecodedItem& it) {
    (std::string_view(it.transport) == "udp" ? udp_ : tcp_)++;
    if (it.opened) {
      ++opened_;
      ++by_key_[it.key_index];
    } else if (it.failed()) {
      ++failed_;
    } else {
      ++plaintext_;
    }
    with_errors_ += it.errors.empty() ? 0 : 1;
  }

  static json toJson(const DecodedItem& it) {
    json j;
    j["frame"] = it.has_frame ? json(it.frame) : json(nullptr);
    j["time"] = it.has_frame ? json(it.time) : json(nullptr);
    j["src"] = nullable(it.src);
    j["dst"] = nullable(it.dst);
    j["transport"] = it.transport;
    j["encrypted"] = it.encrypted;
    j["version"] = it.encrypted && it.version >= 0 ? json(it.version) : json(nullptr);
    j["key_index"] = it.opened ? json(it.key_index) : json(nullptr);
    j["key_fingerprint"] = nullable(it.key_fingerprint);
    j["label"] = nullable(it.label);
    j["plaintext_hex"] = it.redacted || (it.failed() && it.plaintext.empty())
                             ? json(nullptr)
                             : json(toHex(it.plaintext));
    if (it.redacted) {
      j["plaintext_redacted"] = "carries gossip key material";
    }
    j["layers"] = it.layers;
    j["summary"] = it.summary;
    j["messages"] = it.messages;
    std::string error;
    for (const auto& e : it.errors) {
      error += (error.empty() ? "" : "; ") + e;
    }
    j["error"] = nullable(error);
    return j;
  }

  static std::string human(const DecodedItem& it) {
    std::string line = it.has_frame ? "#" + std::to_string(it.frame) + " " : "";
    if (!it.src.empty()) {
      line += it.src + " -> " + it.dst + " ";
    }
    line += std::string(it.transport) + " ";
    if (!it.encrypted) {
      line += "plaintext";
    } else {
      line += it.version >= 0 ? "encrypted v" + std::to_string(it.version) : "encrypted";
      line += it.opened ? " key#" + std::to_string(it.key_index) + " (" + it.key_fingerprint + ")"
                        : " NOT OPENED";
    }
    if (!it.label.empty()) {
      line += " label " + it.label;
    }
    if (!it.summary.empty()) {
      line += " " + it.summary;
    }
    for (size_t i = 0; i < it.errors.size(); ++i) {
      line += (i == 0 ? " !! " : "; ") + it.errors[i];
    }
    return line;
  }

  bool json_;
  int udp_ = 0;
  int tcp_ = 0;
  int opened_ = 0;
  int plaintext_ = 0;
  int failed_ = 0;
  int with_errors_ = 0;
  std::map<int, int> by_key_;
};

int decodeHex(const DecodeOptions& o, decode::GossipDecoder& decoder, Printer& out) {
  auto bytes = parseHex(o.hex);
  if (auto* err = std::get_if<std::string>(&bytes)) {
    std::cerr << "sidecrypt: decode: " << *err << "\n";
    return kExitUnusable;
  }
  const auto& payload = std::get<std::vector<uint8_t>>(bytes);
  if (o.hex_is_stream) {
    decode::StreamDecoder stream(decoder, std::make_shared<decode::ConnectionLabel>(), "", "",
                                 [&](DecodedItem& it) { out.print(it); });
    CapturedPacket at;
    at.payload = payload;
    stream.data(payload, at);
    stream.end(nullptr, "end of --hex input", false);
  } else {
    DecodedItem it;
    decoder.packet(payload, it);
    out.print(it);
  }
  return 0;
}

// Both directions of a connection share the label its dialer sent.
class Connections {
 public:
  std::shared_ptr<decode::ConnectionLabel> label(const std::string& a, const std::string& b) {
    const std::string key = a < b ? a + "|" + b : b + "|" + a;
    if (++since_prune_ > 4096) {
      std::erase_if(labels_, [](const auto& kv) { return kv.second.expired(); });
      since_prune_ = 0;
    }
    if (auto live = labels_[key].lock()) {
      return live;
    }
    auto fresh = std::make_shared<decode::ConnectionLabel>();
    labels_[key] = fresh;
    return fresh;
  }

 private:
  std::map<std::string, std::weak_ptr<decode::ConnectionLabel>> labels_;
  size_t since_prune_ = 0;
};

int decodeCapture(const DecodeOptions& o, decode::GossipDecoder& decoder, Printer& out) {
  auto opened = decode::CaptureReader::open(o.capture, o.filter);
  if (auto* err = std::get_if<std::string>(&opened)) {
    const std::string prefix = o.capture + ": ";  // libpcap sometimes names the file itself
    std::cerr << "sidecrypt: decode: " << prefix
              << (err->rfind(prefix, 0) == 0 ? err->substr(prefix.size()) : *err) << "\n";
    return kExitUnusable;
  }
  auto& reader = *std::get<std::unique_ptr<decode::CaptureReader>>(opened);
  Connections conns;
  decode::TcpReassembler tcp([&](const CapturedPacket& first) {
    return std::make_unique<decode::StreamDecoder>(decoder, conns.label(first.src, first.dst),
                                                   first.src, first.dst,
                                                   [&](DecodedItem& it) { out.print(it); });
  });
  std::map<std::string, int> skipped;
  int rc = 0;
  CapturedPacket p;
  std::string why;
  for (;;) {
    const auto st = reader.next(p, why);
    if (st == decode::CaptureReader::Status::End) {
      break;
    }
    if (st == decode::CaptureReader::Status::Error) {
      std::cerr << "sidecrypt: decode: " << o.capture << ": damaged capture after record "
                << p.frame << ": " << why << "\n";
      rc = kExitUnusable;
      break;
    }
    if (st == decode::CaptureReader::Status::Skipped) {
      ++skipped[why];
    } else if (p.proto == CapturedPacket::Proto::Tcp) {
      if (p.truncated) {
        ++skipped["TCP segment cut short by the capture's snap length (used as captured)"];
      }
      tcp.add(p);
    } else {
      DecodedItem it;
      it.has_frame = true;
      it.frame = p.frame;
      it.time = p.time;
      it.src = p.src;
      it.dst = p.dst;
      decoder.packet(p.payload, it);
      if (p.truncated) {
        it.errors.emplace_back("datagram cut short by the capture's snap length");
      }
      out.print(it);
    }
  }
  tcp.finish();
  for (const auto& [reason, n] : skipped) {
    std::cerr << "sidecrypt: decode: note: " << n << " record(s): " << reason << "\n";
  }
  return rc;
}

}  // namespace

int decodeCommand(const DecodeOptions& opts) {
  filters::ensureSodium();
  if (opts.hex.empty() == opts.capture.empty()) {
    std::cerr << "sidecrypt: decode: give a capture file or --hex (one of them)\n";
    return kExitUnusable;
  }
  auto keys = loadKeys(opts);
  if (auto* err = std::get_if<std::string>(&keys)) {
    std::cerr << "sidecrypt: decode: " << *err << "\n";
    return kExitUnusable;
  }
  decode::GossipDecoder decoder(std::get<KeySetConstSharedPtr>(keys), opts.label);
  Printer out(opts.json);
  const int rc =
      opts.hex.empty() ? decodeCapture(opts, decoder, out) : decodeHex(opts, decoder, out);
  std::cout.flush();
  if (rc == 0 || out.total() > 0) {
    std::cerr << "sidecrypt: decode: " << out.summary() << "\n";
  }
  if (rc != 0) {
    return rc;
  }
  return out.failed() > 0 ? kExitOpenFailed : 0;
}

}  // namespace sidecrypt::proxy::cli
