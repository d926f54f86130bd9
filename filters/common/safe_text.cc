#include "filters/common/safe_text.h"

#include <cstdint>

namespace sidecrypt::filters {

namespace {

constexpr char kHex[] = "0123456789abcdef";

uint8_t byteAt(std::string_view s, size_t i) {
  return static_cast<uint8_t>(s[i]);
}

bool continuation(std::string_view s, size_t i, uint8_t lo = 0x80, uint8_t hi = 0xbf) {
  if (i >= s.size()) {
    return false;
  }
  const uint8_t c = byteAt(s, i);
  return c >= lo && c <= hi;
}

void appendHexEscape(std::string& out, uint8_t c) {
  out += "\\x";
  out += kHex[c >> 4];
  out += kHex[c & 0xf];
}

}  // namespace

size_t utf8SequenceAt(std::string_view s, size_t i) {
  if (i >= s.size()) {
    return 0;
  }
  const uint8_t c = byteAt(s, i);
  if (c < 0x80) {
    return 1;
  }
  if (c >= 0xc2 && c <= 0xdf) {
    return continuation(s, i + 1) ? 2 : 0;
  }
  if (c >= 0xe0 && c <= 0xef) {
    // E0: no overlongs (A0..BF); ED: no surrogates (80..9F).
    const uint8_t lo = c == 0xe0 ? 0xa0 : 0x80;
    const uint8_t hi = c == 0xed ? 0x9f : 0xbf;
    return continuation(s, i + 1, lo, hi) && continuation(s, i + 2) ? 3 : 0;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    // F0: no overlongs (90..BF); F4: nothing above U+10FFFF (80..8F).
    const uint8_t lo = c == 0xf0 ? 0x90 : 0x80;
    const uint8_t hi = c == 0xf4 ? 0x8f : 0xbf;
    return continuation(s, i + 1, lo, hi) && continuation(s, i + 2) && continuation(s, i + 3) ? 4
                                                                                              : 0;
  }
  return 0;  // a stray continuation byte, C0, C1 or F5..FF
}

bool isValidUtf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8SequenceAt(s, i);
    if (n == 0) {
      return false;
    }
    i += n;
  }
  return true;
}

std::string utf8Safe(std::string_view s) {
  if (isValidUtf8(s)) {
    return std::string(s);
  }
  std::string out;
  out.reserve(s.size() + 8);
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8SequenceAt(s, i);
    if (n == 0) {
      out += "\xef\xbf\xbd";  // U+FFFD for this one byte
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

std::string escapeForLog(std::string_view s, size_t max_bytes) {
  const bool cut = s.size() > max_bytes;
  const std::string_view shown = cut ? s.substr(0, max_bytes) : s;
  std::string out;
  out.reserve(shown.size() + 3);
  for (size_t i = 0; i < shown.size();) {
    const size_t n = utf8SequenceAt(shown, i);
    const uint8_t c = byteAt(shown, i);
    if (n == 0 || c < 0x20 || c == 0x7f) {
      appendHexEscape(out, c);
      ++i;
    } else if (n == 2 && c == 0xc2 && byteAt(shown, i + 1) < 0xa0) {
      // C1 controls (U+0080..U+009F): some terminals act on them.
      appendHexEscape(out, c);
      appendHexEscape(out, byteAt(shown, i + 1));
      i += 2;
    } else {
      out.append(shown.substr(i, n));
      i += n;
    }
  }
  return cut ? out + "..." : out;
}

std::string promLabelValue(std::string_view s) {
  const std::string safe = utf8Safe(s);
  std::string out;
  out.reserve(safe.size());
  for (const char c : safe) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string hexOf(std::string_view s) {
  std::string out;
  out.reserve(s.size() * 2);
  for (const char ch : s) {
    const auto c = static_cast<uint8_t>(ch);
    out += kHex[c >> 4];
    out += kHex[c & 0xf];
  }
  return out;
}

}  // namespace sidecrypt::filters
