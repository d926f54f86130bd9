// Fuzzes proxy.toml loading: TOML syntax, schema checks, value validation.
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "proxy/config/config_loader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sidecrypt::proxy;
  auto result =
      loadConfigText(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.toml");
  if (auto* errs = std::get_if<std::vector<ConfigError>>(&result)) {
    if (errs->empty()) {
      __builtin_trap();  // a failure must always say why
    }
    for (const auto& e : *errs) {
      if (e.format().empty()) {
        __builtin_trap();
      }
    }
  }
  return 0;
}
