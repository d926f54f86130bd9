// Wire text made safe for JSON, Prometheus labels and logs (issue 15, item 1): the UTF-8 rules
// are Go's (overlongs, surrogates and code points above U+10FFFF are invalid), each invalid byte
// becomes one U+FFFD as Go's encoding/json writes it, and logs show \xNN.
#include <catch2/catch.hpp>

#include <string>

#include "filters/common/safe_text.h"

using namespace sidecrypt::filters;
using namespace std::string_literals;

TEST_CASE("isValidUtf8 follows Go's unicode/utf8 rules", "[safe_text]") {
  CHECK(isValidUtf8(""));
  CHECK(isValidUtf8("node-1"));
  CHECK(isValidUtf8("n\xc3\xa9ud"));             // é
  CHECK(isValidUtf8("\xe2\x82\xac"));            // €
  CHECK(isValidUtf8("\xf0\x9f\x98\x80"));        // U+1F600
  CHECK(isValidUtf8("\xf4\x8f\xbf\xbf"));        // U+10FFFF
  CHECK(isValidUtf8("\x00\x1b"s));               // control characters are valid UTF-8
  CHECK_FALSE(isValidUtf8("\xff"));              // never valid
  CHECK_FALSE(isValidUtf8("\x80"));              // stray continuation
  CHECK_FALSE(isValidUtf8("\xc0\x80"));          // overlong NUL
  CHECK_FALSE(isValidUtf8("\xc1\xbf"));          // overlong
  CHECK_FALSE(isValidUtf8("\xe0\x9f\xbf"));      // overlong 3-byte
  CHECK_FALSE(isValidUtf8("\xed\xa0\x80"));      // surrogate U+D800
  CHECK_FALSE(isValidUtf8("\xf0\x8f\xbf\xbf"));  // overlong 4-byte
  CHECK_FALSE(isValidUtf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  CHECK_FALSE(isValidUtf8("\xf5\x80\x80\x80"));  // F5..FF never start a sequence
  CHECK_FALSE(isValidUtf8("\xe2\x82"));          // truncated
  CHECK_FALSE(
      isValidUtf8("a\xe2\x82"
                  "b"));  // truncated mid-string
}

TEST_CASE("utf8Safe replaces each invalid byte with one U+FFFD, like Go's encoding/json",
          "[safe_text]") {
  const std::string r = "\xef\xbf\xbd";
  CHECK(utf8Safe("node-1") == "node-1");
  CHECK(utf8Safe("n\xc3\xa9ud") == "n\xc3\xa9ud");
  CHECK(utf8Safe("a\xff"
                 "b") == "a" + r + "b");
  CHECK(utf8Safe("\xc0\x80") == r + r);
  CHECK(utf8Safe("\xed\xa0\x80") == r + r + r);
  CHECK(utf8Safe("x\xe2\x82") == "x" + r + r);
  CHECK(utf8Safe("\xe2\x82\xac\xff") == "\xe2\x82\xac" + r);
  for (const std::string& s : {"\xff\xfe"s, "\xc0\x80"s, "\xed\xa0\x80"s, "\xf4\x90\x80\x80"s}) {
    CHECK(isValidUtf8(utf8Safe(s)));
  }
}

TEST_CASE("escapeForLog shows control characters and invalid bytes as \\xNN", "[safe_text]") {
  CHECK(escapeForLog("node-1") == "node-1");
  CHECK(escapeForLog("n\xc3\xa9ud") == "n\xc3\xa9ud");
  CHECK(escapeForLog("a\nb\rc") == "a\\x0ab\\x0dc");
  CHECK(escapeForLog("\x1b[31mred") == "\\x1b[31mred");
  CHECK(escapeForLog("\x00\x7f"s) == "\\x00\\x7f");
  CHECK(escapeForLog("\xc2\x9b") == "\\xc2\\x9b");  // C1 CSI
  CHECK(escapeForLog("\xff\xc0\x80") == "\\xff\\xc0\\x80");
  CHECK(escapeForLog("abcdef", 3) == "abc...");
}

TEST_CASE("promLabelValue escapes per the exposition format and is valid UTF-8", "[safe_text]") {
  CHECK(promLabelValue("n1") == "n1");
  CHECK(promLabelValue("a\"b\\c\nd") == "a\\\"b\\\\c\\nd");
  CHECK(promLabelValue("x\xff") == "x\xef\xbf\xbd");
  CHECK(hexOf("\x00\xff"s) == "00ff");
}
