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
  for (const char* bad : {"", "not base64!", "IbdPNaip2hxZV5nxiJGOwA", "IbdPNaip2hxZV5nxiJGOwA==x",
                          "IbdPNaip-hxZV5nxiJGOwA=="}) {
    CAPTURE(bad);
    auto r = decodeKey(bad);
    REQUIRE(std::holds_alternative<std::string>(r));
    if (*bad != 0) {
      CHECK(std::get<std::string>(r).find(bad) == std::string::npos);
    }
  }
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
