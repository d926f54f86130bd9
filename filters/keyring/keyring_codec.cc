#include "filters/keyring/keyring_codec.h"

#include <sodium.h>

#include <cstring>
#include <memory>
#include <vector>

namespace sidecrypt::filters::keyring {

std::variant<SecretBytes, std::string> decodeKey(std::string_view base64) {
  ensureSodium();
  if (base64.empty()) {
    return std::string("key is empty");
  }
  // Both alphabets, padded or not: Consul and Serf print standard base64 with '=' padding,
  // `nomad operator gossip keyring generate` prints the URL-safe alphabet ('-' and '_').
  // A key mixing the two alphabets is refused; so is padding that does not fit the length.
  bool standard = false;
  bool url_safe = false;
  size_t body = base64.size();
  while (body > 0 && base64[body - 1] == '=') {
    --body;
  }
  const size_t padding = base64.size() - body;
  for (size_t i = 0; i < body; ++i) {
    const char c = base64[i];
    standard = standard || c == '+' || c == '/';
    url_safe = url_safe || c == '-' || c == '_';
  }
  if (standard && url_safe) {
    return std::string(
        "key mixes the standard ('+', '/') and URL-safe ('-', '_') base64 alphabets");
  }
  if (body == 0 || padding > 2 || (padding != 0 && base64.size() % 4 != 0)) {
    return std::string(
        "key is not valid base64 (standard or URL-safe alphabet, '=' padding optional)");
  }
  SecretBytes out(body);  // decoded length is always smaller
  size_t len = 0;
  const char* end = nullptr;
  const int variant = url_safe ? sodium_base64_VARIANT_URLSAFE_NO_PADDING
                               : sodium_base64_VARIANT_ORIGINAL_NO_PADDING;
  if (sodium_base642bin(out.data(), out.size(), base64.data(), body, nullptr, &len, &end,
                        variant) != 0 ||
      end != base64.data() + body) {
    return std::string(
        "key is not valid base64 (standard or URL-safe alphabet, '=' padding optional)");
  }
  if (!isValidKeyLength(len)) {
    return "key must be 16, 24 or 32 bytes of base64, got " + std::to_string(len);
  }
  out.truncate(len);
  return out;
}

SecretBytes encodeKey(const SecretBytes& raw) {
  ensureSodium();
  const size_t cap = sodium_base64_ENCODED_LEN(raw.size(), sodium_base64_VARIANT_ORIGINAL);
  SecretBytes out(cap);
  sodium_bin2base64(reinterpret_cast<char*>(out.data()), cap, raw.data(), raw.size(),
                    sodium_base64_VARIANT_ORIGINAL);
  out.truncate(std::strlen(reinterpret_cast<const char*>(out.data())));
  return out;
}

namespace {

class Cursor {
 public:
  explicit Cursor(std::string_view text) : text_(text) {}
  void skipSpace() {
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (c == '\n') {
        ++line_;
      } else if (c != ' ' && c != '\t' && c != '\r') {
        return;
      }
      ++pos_;
    }
  }
  bool atEnd() const { return pos_ >= text_.size(); }
  char peek() const { return text_[pos_]; }
  void advance() { ++pos_; }
  size_t pos() const { return pos_; }
  int line() const { return line_; }
  std::string_view slice(size_t from, size_t to) const { return text_.substr(from, to - from); }

 private:
  std::string_view text_;
  size_t pos_ = 0;
  int line_ = 1;
};

std::string at(const Cursor& c, const std::string& what) {
  return "line " + std::to_string(c.line()) + ": " + what;
}

}  // namespace

std::variant<KeySetConstSharedPtr, std::string> parseKeyringText(std::string_view text) {
  Cursor c(text);
  c.skipSpace();
  if (c.atEnd() || c.peek() != '[') {
    return at(c, "expected a JSON array of base64 keys, like [\"<key>\"]");
  }
  c.advance();
  std::vector<std::unique_ptr<AeadKey>> keys;
  std::vector<SecretBytes> seen;
  size_t entry = 0;
  c.skipSpace();
  bool expect_value = false;
  while (true) {
    if (c.atEnd()) {
      return at(c, "unexpected end of file inside the key array");
    }
    if (c.peek() == ']' && !expect_value) {
      c.advance();
      break;
    }
    if (c.peek() != '"') {
      return at(c, "expected a quoted base64 key as entry " + std::to_string(entry + 1));
    }
    c.advance();
    const size_t start = c.pos();
    while (!c.atEnd() && c.peek() != '"') {
      if (c.peek() == '\\') {
        return at(c, "entry " + std::to_string(entry + 1) +
                         ": escape sequences are not valid in a base64 key");
      }
      if (c.peek() == '\n') {
        return at(c, "entry " + std::to_string(entry + 1) + ": unterminated string");
      }
      c.advance();
    }
    if (c.atEnd()) {
      return at(c, "entry " + std::to_string(entry + 1) + ": unterminated string");
    }
    auto decoded = decodeKey(c.slice(start, c.pos()));
    c.advance();
    ++entry;
    if (auto* err = std::get_if<std::string>(&decoded)) {
      return at(c, "entry " + std::to_string(entry) + ": " + *err);
    }
    auto& raw = std::get<SecretBytes>(decoded);
    bool duplicate = false;
    for (const auto& s : seen) {
      duplicate = duplicate || s.equals(raw);
    }
    if (!duplicate) {
      seen.push_back(SecretBytes::copyOf(raw.span()));
      auto key = AeadKey::create(std::move(raw));
      if (!key) {
        return at(c, "entry " + std::to_string(entry) + ": cannot initialise AES-GCM");
      }
      keys.push_back(std::move(key));
    }
    c.skipSpace();
    if (c.atEnd()) {
      return at(c, "unexpected end of file inside the key array");
    }
    if (c.peek() == ',') {
      c.advance();
      c.skipSpace();
      expect_value = true;
      continue;
    }
    if (c.peek() != ']') {
      return at(c, "expected ',' or ']' after entry " + std::to_string(entry));
    }
    expect_value = false;
  }
  c.skipSpace();
  if (!c.atEnd()) {
    return at(c, "unexpected data after the key array");
  }
  if (keys.empty()) {
    return std::string("no keys present in keyring");
  }
  return std::make_shared<const KeySet>(std::move(keys));
}

SecretBytes formatKeyringText(const KeySet& keys) {
  std::vector<SecretBytes> encoded;
  size_t total = 2;  // "[" "\n]"
  for (size_t i = 0; i < keys.size(); ++i) {
    encoded.push_back(encodeKey(keys.at(i).raw()));
    total += 1 + 2 + 2 + encoded.back().size() + 1;  // "\n" "  " quotes "," (upper bound)
  }
  SecretBytes out(total + 1);
  size_t n = 0;
  auto put = [&](std::string_view s) {
    std::memcpy(out.data() + n, s.data(), s.size());
    n += s.size();
  };
  put("[");
  for (size_t i = 0; i < encoded.size(); ++i) {
    put(i == 0 ? "\n  \"" : ",\n  \"");
    put(encoded[i].view());
    put("\"");
  }
  put(encoded.empty() ? "]" : "\n]");
  out.truncate(n);
  return out;
}

}  // namespace sidecrypt::filters::keyring
