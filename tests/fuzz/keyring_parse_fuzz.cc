// Fuzzes the keyring file parser (untrusted: an operator-edited or damaged file).
#include <cstdint>
#include <string_view>
#include <variant>

#include "filters/keyring/keyring_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sidecrypt::filters::keyring;
  auto parsed = parseKeyringText(std::string_view(reinterpret_cast<const char*>(data), size));
  if (auto* ring = std::get_if<KeySetConstSharedPtr>(&parsed)) {
    // A ring that parsed must survive a format/parse round trip unchanged.
    auto text = formatKeyringText(**ring);
    auto again = parseKeyringText(text.view());
    auto* ring2 = std::get_if<KeySetConstSharedPtr>(&again);
    if (ring2 == nullptr || (*ring2)->size() != (*ring)->size()) {
      __builtin_trap();
    }
    for (size_t i = 0; i < (*ring)->size(); ++i) {
      if (!(*ring2)->at(i).raw().equals((*ring)->at(i).raw())) {
        __builtin_trap();
      }
    }
  }
  return 0;
}
