#include "filters/common/regular_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <future>

#include "../../test_util.h"
#include "filters/rpc_tls/tls_context.h"
#include "proxy/config/config_loader.h"
#include "proxy/keyring/keyring_file.h"

using namespace sidecrypt;
using sidecrypt::test::TempDir;

namespace {

// Runs `load` on another thread and requires it to return within two seconds. A loader that
// blocks in open(2) on a FIFO with no writer is released by opening the FIFO for writing (so
// the test fails instead of hanging), then the result is awaited.
template <typename F>
auto returnsPromptly(const std::filesystem::path& fifo, F load) {
  auto fut = std::async(std::launch::async, load);
  const bool prompt = fut.wait_for(std::chrono::seconds(2)) == std::future_status::ready;
  if (!prompt) {
    int w = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
    if (w >= 0) {
      ::close(w);
    }
  }
  CHECK(prompt);
  return fut.get();
}

}  // namespace

TEST_CASE("regular_file: a FIFO, a directory and a device are refused without blocking",
          "[files]") {
  TempDir dir;
  const auto fifo = dir / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  auto r = returnsPromptly(fifo, [&] { return filters::readRegularFile(fifo, 1024); });
  REQUIRE(std::holds_alternative<std::string>(r));
  CHECK_THAT(std::get<std::string>(r), Catch::Contains("is a FIFO, not a regular file"));

  auto d = filters::readRegularFile(dir.path(), 1024);
  REQUIRE(std::holds_alternative<std::string>(d));
  CHECK_THAT(std::get<std::string>(d), Catch::Contains("is a directory"));

  auto n = filters::readRegularFile("/dev/zero", 1024);
  REQUIRE(std::holds_alternative<std::string>(n));
  CHECK_THAT(std::get<std::string>(n), Catch::Contains("is a device"));
}

TEST_CASE("regular_file: a regular file is read whole into locked memory, up to the limit",
          "[files]") {
  TempDir dir;
  test::writeFile(dir / "f", "hello");
  auto r = filters::readRegularFile(dir / "f", 5);
  REQUIRE(std::holds_alternative<filters::SecretBytes>(r));
  CHECK(std::get<filters::SecretBytes>(r).view() == "hello");
  auto big = filters::readRegularFile(dir / "f", 4);
  REQUIRE(std::holds_alternative<std::string>(big));
  CHECK_THAT(std::get<std::string>(big), Catch::Contains("larger than 4 bytes"));
  auto missing = filters::readRegularFile(dir / "nope", 4);
  REQUIRE(std::holds_alternative<std::string>(missing));
  CHECK_THAT(std::get<std::string>(missing), Catch::Contains("cannot open: No such file"));
}

TEST_CASE("regular_file: config, keyring and certificate paths that name a FIFO fail at once",
          "[files]") {
  TempDir dir;
  const auto fifo = dir / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);

  auto cfg = returnsPromptly(fifo, [&] { return proxy::loadConfig(fifo); });
  REQUIRE(std::holds_alternative<std::vector<proxy::ConfigError>>(cfg));
  CHECK_THAT(std::get<std::vector<proxy::ConfigError>>(cfg).front().message,
             Catch::Contains("is a FIFO"));

  auto ring = returnsPromptly(fifo, [&] { return proxy::loadKeyringFile(fifo); });
  REQUIRE(std::holds_alternative<std::string>(ring));
  CHECK_THAT(std::get<std::string>(ring), Catch::Contains("is a FIFO"));

  for (int which = 0; which < 3; ++which) {
    filters::rpc_tls::TlsSettings s;
    const auto certs =
        std::filesystem::path(SIDECRYPT_SOURCE_DIR) / "tests/unit/filters/rpc_tls/certs";
    s.ca_file = which == 0 ? fifo : certs / "consul-agent-ca.pem";
    s.cert_file = which == 1 ? fifo : certs / "dc1-server-consul-0.pem";
    s.key_file = which == 2 ? fifo : certs / "dc1-server-consul-0-key.pem";
    auto ctx = returnsPromptly(fifo, [&] {
      return filters::rpc_tls::TlsContext::create(s, filters::rpc_tls::TlsRole::Server);
    });
    REQUIRE(std::holds_alternative<std::string>(ctx));
    CHECK_THAT(std::get<std::string>(ctx), Catch::Contains("is a FIFO"));
  }
}
