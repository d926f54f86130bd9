// [gossip]: the gossip key, its checks and the keyring files.

#include <sodium.h>

#include <memory>
#include <string>
#include <variant>

#include "filters/keyring/keyring_codec.h"
#include "proxy/config/loader.h"

namespace sidecrypt::proxy::config_detail {

void Loader::loadGossip(toml::table& t) {
  const std::string s = "gossip";
  if (auto* n = t.get("encrypt")) {
    if (!n->is_string()) {
      error(*n, "gossip.encrypt", "expected a base64 string (as printed by `sidecrypt keygen`)");
    } else {
      std::string& text = n->as_string()->get();
      auto decoded = filters::keyring::decodeKey(text);
      // The key text must not linger in the parsed document.
      sodium_memzero(text.data(), text.size());
      if (auto* err = std::get_if<std::string>(&decoded)) {
        error(*n, "gossip.encrypt", *err);
      } else {
        cfg.gossip.encrypt = std::make_shared<const filters::SecretBytes>(
            std::move(std::get<filters::SecretBytes>(decoded)));
      }
    }
  }
  getBool(t, s, "encrypt_verify_incoming", cfg.gossip.encrypt_verify_incoming);
  getBool(t, s, "encrypt_verify_outgoing", cfg.gossip.encrypt_verify_outgoing);
  getPath(t, s, "keyring_file", cfg.gossip.keyring_file);
  getPath(t, s, "wan_keyring_file", cfg.gossip.wan_keyring_file);
  if (auto v = getInt(t, s, "max_streams_per_source", 0, 1'000'000)) {
    cfg.gossip.max_streams_per_source = static_cast<uint32_t>(*v);
  }
  if (getString(t, s, "label", cfg.gossip.label) && cfg.gossip.label.size() > 255) {
    error(*find(t, "label"), "gossip.label",
          "label must be at most 255 bytes, got " + std::to_string(cfg.gossip.label.size()));
  }
}

}  // namespace sidecrypt::proxy::config_detail
