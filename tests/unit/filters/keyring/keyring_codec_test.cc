#include "filters/keyring/keyring_codec.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <fstream>

#include "../../test_util.h"

using namespace sidecrypt::filters;
using namespace sidecrypt::filters::keyring;

namespace {

std::string errOf(const std::variant<KeySetConstSharedPtr, std::string>& r) {
  REQUIRE(std::holds_alternative<std::string>(r));
  return std::get<std::string>(r);
}

KeySetConstSharedPtr ringOf(const std::variant<KeySetConstSharedPtr, std::string>& r) {
  if (auto* e = std::get_if<std::string>(&r)) {
    FAIL("unexpected error: " << *e);
  }
  return std::get<KeySetConstSharedPtr>(r);
}

const char* k16 = "IbdPNaip2hxZV5nxiJGOwA==";
const char* k32a = "VyCxNNGoItgU4Da78vpwEz72f+XlruLSaDvb9QaqQGg=";
const char* k32b = "gDIPiPyJ/6pkegrXUNVrRK8E3x82Kvu8JnoOXgIOnzw=";

}  // namespace

TEST_CASE("keyring_codec: decodeKey accepts 16, 24 and 32 byte keys", "[keyring]") {
  CHECK(std::get<SecretBytes>(decodeKey(k16)).size() == 16);
  CHECK(std::get<SecretBytes>(decodeKey("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")).size() == 24);
  CHECK(std::get<SecretBytes>(decodeKey(k32a)).size() == 32);
}

TEST_CASE("keyring_codec: decodeKey names the decoded length when it is wrong", "[keyring]") {
  // 31 bytes of zeroes in base64.
  auto r = decodeKey("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==");
  REQUIRE(std::holds_alternative<std::string>(r));
  CHECK(std::get<std::string>(r) == "key must be 16, 24 or 32 bytes of base64, got 31");
}

TEST_CASE("keyring_codec: decodeKey refuses invalid base64 without quoting it", "[keyring]") {
  for (const char* bad :
       {"", "not base64!", "IbdPNaip2hxZV5nxiJGOwA==x",
        "IbdPNaip+hxZV5nxiJG_wA==", "IbdPNaip2hxZV5nxiJGOwA=", "IbdPNaip2hxZV5nxiJGOwA===",
        "IbdPNaip2hxZV5nxiJGOwB==", "IbdPNaip2hxZV5nxiJGOwA==\n", " IbdPNaip2hxZV5nxiJGOwA==",
        "====", "A===", "==", "IbdPNaip2hx=V5nxiJGOwA==", "IbdPNaip2hxZV5nxiJGOw\xc3\xa9=="}) {
    CAPTURE(bad);
    auto r = decodeKey(bad);
    REQUIRE(std::holds_alternative<std::string>(r));
    if (*bad != 0) {
      CHECK(std::get<std::string>(r).find(bad) == std::string::npos);
    }
  }
}

namespace {

// The same key in the URL-safe alphabet, without padding (as `nomad operator gossip keyring
// generate` prints it) or with it.
std::string urlSafe(std::string std_form, bool padded) {
  for (auto& c : std_form) {
    c = c == '+' ? '-' : c == '/' ? '_' : c;
  }
  while (!padded && !std_form.empty() && std_form.back() == '=') {
    std_form.pop_back();
  }
  return std_form;
}

}  // namespace

TEST_CASE("keyring_codec: decodeKey takes both base64 alphabets, padded or not", "[keyring]") {
  for (const char* k : {k16, k32a, k32b}) {
    CAPTURE(k);
    const auto want = std::get<SecretBytes>(decodeKey(k));
    for (const std::string& form :
         {urlSafe(k, false), urlSafe(k, true), urlSafe(k, false) /* std unpadded below */}) {
      auto got = decodeKey(form);
      REQUIRE(std::holds_alternative<SecretBytes>(got));
      CHECK(std::get<SecretBytes>(got).equals(want));
      // Written back in Consul's standard padded form.
      CHECK(encodeKey(std::get<SecretBytes>(got)).view() == k);
    }
    std::string unpadded = k;
    while (unpadded.back() == '=') {
      unpadded.pop_back();
    }
    REQUIRE(std::holds_alternative<SecretBytes>(decodeKey(unpadded)));
    CHECK(std::get<SecretBytes>(decodeKey(unpadded)).equals(want));
  }
  // k32a has a '+', k32b a '/': their URL-safe forms really use the other alphabet.
  CHECK(urlSafe(k32a, false).find('-') != std::string::npos);
  CHECK(urlSafe(k32b, false).find('_') != std::string::npos);
  auto mixed = decodeKey("VyCxNNGoItgU4Da78vpwEz72f+XlruLSaDvb9QaqQGg_");
  REQUIRE(std::holds_alternative<std::string>(mixed));
  CHECK(std::get<std::string>(mixed) ==
        "key mixes the standard ('+', '/') and URL-safe ('-', '_') base64 alphabets");
}

TEST_CASE("keyring_codec: a keyring file with URL-safe keys is read and written back standard",
          "[keyring]") {
  auto ring = ringOf(parseKeyringText("[\n  \"" + urlSafe(k32b, false) + "\",\n  \"" +
                                      urlSafe(k32a, true) + "\"\n]"));
  REQUIRE(ring->size() == 2);
  CHECK(formatKeyringText(*ring).view() ==
        std::string("[\n  \"") + k32b + "\",\n  \"" + k32a + "\"\n]");
  CHECK(errOf(parseKeyringText("[\n\"" + std::string(k32a) + "\",\n\"Vy-x/NGoItgU\"]")) ==
        "line 3: entry 2: key mixes the standard ('+', '/') and URL-safe ('-', '_') base64 "
        "alphabets");
}

TEST_CASE("keyring_codec: encodeKey is standard padded base64", "[keyring]") {
  auto raw = std::get<SecretBytes>(decodeKey(k32b));
  CHECK(encodeKey(raw).view() == k32b);
  CHECK(encodeKey(randomKey(32)).size() == 44);  // like consul keygen
}

TEST_CASE("keyring_codec: parses Consul's compact and Serf's indented files", "[keyring]") {
  auto compact = ringOf(parseKeyringText(std::string("[\"") + k32a + "\"]"));
  CHECK(compact->size() == 1);
  auto indented =
      ringOf(parseKeyringText(std::string("[\n  \"") + k32a + "\",\n  \"" + k16 + "\"\n]\n"));
  REQUIRE(indented->size() == 2);
  CHECK(indented->primary().raw().equals(std::get<SecretBytes>(decodeKey(k32a))));
  CHECK(indented->at(1).raw().size() == 16);
}

TEST_CASE("keyring_codec: the vector keyring parses in ring order", "[keyring][vectors]") {
  std::ifstream in(sidecrypt::test::vectorsDir() / "keyring.json");
  auto doc = nlohmann::json::parse(in);
  auto ring = ringOf(parseKeyringText(doc["keyring_base64"].dump()));
  REQUIRE(ring->size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    const auto& raw = ring->at(i).raw();
    CHECK(sidecrypt::test::toHex(raw.data(), raw.size()) == doc["keyring_hex"][i]);
  }
}

TEST_CASE("keyring_codec: duplicate keys collapse into the first", "[keyring]") {
  auto ring =
      ringOf(parseKeyringText(std::string("[\"") + k32a + "\",\"" + k32b + "\",\"" + k32a + "\"]"));
  CHECK(ring->size() == 2);
}

TEST_CASE("keyring_codec: malformed files give a line and a reason, never a key", "[keyring]") {
  CHECK(errOf(parseKeyringText("[]")) == "no keys present in keyring");
  CHECK(errOf(parseKeyringText("")) ==
        "line 1: expected a JSON array of base64 keys, like [\"<key>\"]");
  CHECK(errOf(parseKeyringText("{\"a\":1}")).starts_with("line 1: expected a JSON array"));
  CHECK(errOf(parseKeyringText(std::string("[\"") + k32a + "\",]")) ==
        "line 1: expected a quoted base64 key as entry 2");
  CHECK(errOf(parseKeyringText(std::string("[\"") + k32a + "\"")) ==
        "line 1: unexpected end of file inside the key array");
  CHECK(errOf(parseKeyringText(std::string("[\n\"") + k32a + "\"\n] x")) ==
        "line 3: unexpected data after the key array");
  CHECK(errOf(parseKeyringText("[\n\n\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\"]")) ==
        "line 3: entry 1: key must be 16, 24 or 32 bytes of base64, got 31");
  auto escaped = errOf(parseKeyringText("[\"Vy\\/CxNN\"]"));
  CHECK(escaped == "line 1: entry 1: escape sequences are not valid in a base64 key");
}

TEST_CASE("keyring_codec: format matches Serf's MarshalIndent output exactly", "[keyring]") {
  auto ring = ringOf(parseKeyringText(std::string("[\"") + k32a + "\",\"" + k16 + "\"]"));
  auto text = formatKeyringText(*ring);
  CHECK(text.view() == std::string("[\n  \"") + k32a + "\",\n  \"" + k16 + "\"\n]");
}
