#include "proxy/keyring/keyring_file.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "../../test_util.h"
#include "filters/keyring/keyring_codec.h"

using namespace sidecrypt;
using namespace sidecrypt::proxy;
using filters::SecretBytes;
using filters::keyring::decodeKey;
using sidecrypt::test::TempDir;

namespace {

const std::string kA = "VyCxNNGoItgU4Da78vpwEz72f+XlruLSaDvb9QaqQGg=";
const std::string kB = "gDIPiPyJ/6pkegrXUNVrRK8E3x82Kvu8JnoOXgIOnzw=";

SecretBytes key(const std::string& b64) {
  return std::get<SecretBytes>(decodeKey(b64));
}

std::string loadError(const std::filesystem::path& p) {
  auto r = loadKeyringFile(p);
  REQUIRE(std::holds_alternative<std::string>(r));
  return std::get<std::string>(r);
}

}  // namespace

TEST_CASE("keyring_file: a missing file is reported as missing, not as an error", "[keyring]") {
  TempDir dir;
  CHECK(std::holds_alternative<KeyringMissing>(loadKeyringFile(dir / "none.keyring")));
}

TEST_CASE("keyring_file: an existing file wins over encrypt, with a warning on mismatch",
          "[keyring]") {
  TempDir dir;
  auto file = dir / "local.keyring";
  sidecrypt::test::writeFile(file, "[\"" + kA + "\"]");
  auto enc = key(kB);
  auto r = resolveKeyring(file, &enc, true);
  REQUIRE(std::holds_alternative<ResolvedKeyring>(r));
  auto& res = std::get<ResolvedKeyring>(r);
  REQUIRE(res.keys->size() == 1);
  CHECK(res.keys->primary().raw().equals(key(kA)));
  CHECK_FALSE(res.created);
  REQUIRE(res.warnings.size() == 1);
  CHECK(res.warnings[0] == file.string() +
                               ": keyring does not include the key given by gossip.encrypt; using "
                               "the keyring file (Consul does the same)");
  CHECK(sidecrypt::test::readFile(file) == "[\"" + kA + "\"]");  // untouched

  auto same = key(kA);
  CHECK(std::get<ResolvedKeyring>(resolveKeyring(file, &same, true)).warnings.empty());
}

TEST_CASE("keyring_file: a missing file is created from encrypt, 0600, in a 0700 directory",
          "[keyring]") {
  TempDir dir;
  auto file = dir / "serf" / "local.keyring";
  auto enc = key(kA);
  auto r = resolveKeyring(file, &enc, true);
  REQUIRE(std::holds_alternative<ResolvedKeyring>(r));
  CHECK(std::get<ResolvedKeyring>(r).created);
  CHECK(sidecrypt::test::readFile(file) == "[\n  \"" + kA + "\"\n]");
  CHECK(sidecrypt::test::fileMode(file) == 0600);
  CHECK(sidecrypt::test::fileMode(dir / "serf") == 0700);
  // No temporary file is left behind.
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir / "serf")) {
    ++entries;
  }
  CHECK(entries == 1);
}

TEST_CASE("keyring_file: check-config mode does not create the file", "[keyring]") {
  TempDir dir;
  auto file = dir / "local.keyring";
  auto enc = key(kA);
  auto r = resolveKeyring(file, &enc, false);
  REQUIRE(std::get<ResolvedKeyring>(r).keys);
  CHECK_FALSE(std::filesystem::exists(file));
}

TEST_CASE("keyring_file: neither file nor encrypt means no keyring", "[keyring]") {
  TempDir dir;
  auto r = resolveKeyring(dir / "k", nullptr, true);
  CHECK_FALSE(std::get<ResolvedKeyring>(r).keys);
  CHECK_FALSE(std::filesystem::exists(dir / "k"));
}

TEST_CASE("keyring_file: a corrupt file is refused and left byte-for-byte unchanged", "[keyring]") {
  TempDir dir;
  auto file = dir / "local.keyring";
  const std::string corrupt = "[\"" + kA + "\", \"truncated";
  sidecrypt::test::writeFile(file, corrupt);
  auto enc = key(kB);
  auto r = resolveKeyring(file, &enc, true);
  REQUIRE(std::holds_alternative<std::string>(r));
  CHECK(std::get<std::string>(r) ==
        file.string() + ": corrupt keyring file: line 1: entry 2: unterminated string");
  // A writer that is handed the path refuses too.
  auto ring = filters::keyring::parseKeyringText("[\"" + kB + "\"]");
  auto err = writeKeyringFile(file, *std::get<filters::keyring::KeySetConstSharedPtr>(ring));
  REQUIRE(err.has_value());
  CHECK(err->starts_with("not overwriting: "));
  CHECK(sidecrypt::test::readFile(file) == corrupt);
}

TEST_CASE("keyring_file: group- or world-accessible files are refused and not rewritten",
          "[keyring]") {
  TempDir dir;
  auto file = dir / "local.keyring";
  sidecrypt::test::writeFile(file, "[\"" + kA + "\"]", 0644);
  CHECK(loadError(file) == file.string() +
                               ": keyring file permissions 0644 are too open (group/other may "
                               "access it); run: chmod 600 " +
                               file.string());
  auto enc = key(kA);
  CHECK(std::holds_alternative<std::string>(resolveKeyring(file, &enc, true)));
  CHECK(sidecrypt::test::fileMode(file) == 0644);
}

TEST_CASE("keyring_file: symlinks and directories are refused", "[keyring]") {
  TempDir dir;
  sidecrypt::test::writeFile(dir / "real", "[\"" + kA + "\"]");
  std::filesystem::create_symlink(dir / "real", dir / "link");
  CHECK(loadError(dir / "link").find("symbolic link") != std::string::npos);
  std::filesystem::create_directory(dir / "d");
  CHECK(loadError(dir / "d").find("not a regular file") != std::string::npos);
}

TEST_CASE("keyring_file: atomic rewrite replaces the whole file and keeps 0600", "[keyring]") {
  TempDir dir;
  auto file = dir / "local.keyring";
  sidecrypt::test::writeFile(file, "[\"" + kA + "\"]");
  auto ring = std::get<filters::keyring::KeySetConstSharedPtr>(
      filters::keyring::parseKeyringText("[\"" + kB + "\",\"" + kA + "\"]"));
  REQUIRE_FALSE(writeKeyringFile(file, *ring).has_value());
  CHECK(sidecrypt::test::readFile(file) == "[\n  \"" + kB + "\",\n  \"" + kA + "\"\n]");
  CHECK(sidecrypt::test::fileMode(file) == 0600);
}
