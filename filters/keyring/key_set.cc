#include "filters/keyring/key_set.h"

#include <algorithm>
#include <utility>

namespace sidecrypt::filters::keyring {

std::optional<size_t> KeySet::find(const SecretBytes& raw) const {
  std::optional<size_t> found;
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (!found && keys_[i]->raw().equals(raw)) {
      found = i;
    }
  }
  return found;
}

std::optional<size_t> KeySet::findByFingerprint(std::string_view fp) const {
  if (fp.size() < 8) {
    return std::nullopt;
  }
  std::optional<size_t> found;
  for (size_t i = 0; i < keys_.size(); ++i) {
    if (keys_[i]->fingerprint().compare(0, fp.size(), fp) == 0) {
      if (found) {
        return std::nullopt;  // ambiguous
      }
      found = i;
    }
  }
  return found;
}

std::vector<std::unique_ptr<AeadKey>> KeySet::copyKeys() const {
  std::vector<std::unique_ptr<AeadKey>> out;
  out.reserve(keys_.size() + 1);
  for (const auto& k : keys_) {
    out.push_back(AeadKey::create(SecretBytes::copyOf(k->raw().span())));
  }
  return out;
}

std::shared_ptr<const KeySet> KeySet::clone() const {
  return std::make_shared<const KeySet>(copyKeys());
}

KeySet::Result KeySet::install(const SecretBytes& raw) const {
  if (!isValidKeyLength(raw.size())) {
    return std::string("key size must be 16, 24 or 32 bytes");
  }
  auto keys = copyKeys();
  if (!find(raw)) {
    keys.push_back(AeadKey::create(SecretBytes::copyOf(raw.span())));
  }
  return std::make_shared<const KeySet>(std::move(keys));
}

KeySet::Result KeySet::use(const SecretBytes& raw) const {
  auto idx = find(raw);
  if (!idx) {
    return std::string("requested key is not in the keyring");
  }
  auto keys = copyKeys();
  std::rotate(keys.begin(), keys.begin() + static_cast<ptrdiff_t>(*idx),
              keys.begin() + static_cast<ptrdiff_t>(*idx) + 1);
  return std::make_shared<const KeySet>(std::move(keys));
}

KeySet::Result KeySet::remove(const SecretBytes& raw) const {
  auto idx = find(raw);
  if (idx && *idx == 0) {
    return std::string("removing the primary key is not allowed");
  }
  auto keys = copyKeys();
  if (idx) {
    keys.erase(keys.begin() + static_cast<ptrdiff_t>(*idx));
  }
  return std::make_shared<const KeySet>(std::move(keys));
}

}  // namespace sidecrypt::filters::keyring
