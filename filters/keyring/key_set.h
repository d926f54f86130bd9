#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "filters/keyring/aead_key.h"

namespace sidecrypt::filters::keyring {

// An immutable keyring snapshot: index 0 is the primary (seals everything); decryption tries
// every key in order (memberlist keyring.go). Shared read-only between the data path and the
// control plane; a change builds a new KeySet.
class KeySet {
 public:
  explicit KeySet(std::vector<std::unique_ptr<AeadKey>> keys) : keys_(std::move(keys)) {}

  bool empty() const { return keys_.empty(); }
  size_t size() const { return keys_.size(); }
  const AeadKey& primary() const { return *keys_.front(); }
  const AeadKey& at(size_t i) const { return *keys_[i]; }
  std::string fingerprint(size_t i) const { return keys_[i]->fingerprint(); }

  // Index of `raw` in the ring (constant-time compare per key), if present.
  std::optional<size_t> find(const SecretBytes& raw) const;
  // Index of the key whose fingerprint is `fp` (an unambiguous prefix of >= 8 hex digits).
  std::optional<size_t> findByFingerprint(std::string_view fp) const;

  // Consul's keyring operations (memberlist keyring.go; messages as current memberlist).
  // Each returns the new ring or an error message; `this` is unchanged.
  using Result = std::variant<std::shared_ptr<const KeySet>, std::string>;
  Result install(const SecretBytes& raw) const;  // no-op if present; first key becomes primary
  Result use(const SecretBytes& raw) const;      // key must be installed
  Result remove(const SecretBytes& raw) const;   // primary cannot be removed; absent is a no-op

  std::shared_ptr<const KeySet> clone() const;

 private:
  std::vector<std::unique_ptr<AeadKey>> copyKeys() const;
  std::vector<std::unique_ptr<AeadKey>> keys_;
};
using KeySetConstSharedPtr = std::shared_ptr<const KeySet>;

}  // namespace sidecrypt::filters::keyring
