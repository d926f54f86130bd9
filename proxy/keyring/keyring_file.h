#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "filters/common/secret_bytes.h"
#include "filters/keyring/key_set.h"

namespace sidecrypt::proxy {

using filters::SecretBytes;
using filters::keyring::KeySetConstSharedPtr;

struct KeyringMissing {};
// Loads a Consul/Serf keyring file. Refuses (with an error naming the file and the problem) a
// file that is not a regular file, is readable or writable by group/other, cannot be read, or
// does not parse. Never modifies anything.
std::variant<KeySetConstSharedPtr, KeyringMissing, std::string> loadKeyringFile(
    const std::filesystem::path& path);

// Writes atomically: temporary file in the same directory (0600), fsync, rename over the
// target, fsync the directory. Creates a missing parent directory with 0700. Refuses to replace
// an existing file that does not load cleanly, so a corrupt keyring is never overwritten.
// Returns an error message or nullopt.
std::optional<std::string> writeKeyringFile(const std::filesystem::path& path,
                                            const filters::keyring::KeySet& keys);

// Consul's startup precedence (docs/spec/consul-rpc-tls.md §4.2): an existing file wins over
// `encrypt` (with a warning when it lacks that key); a missing file is created from `encrypt`;
// neither means no keyring.
struct ResolvedKeyring {
  KeySetConstSharedPtr keys;  // null when neither file nor encrypt exists
  bool created = false;
  std::vector<std::string> warnings;
};
std::variant<ResolvedKeyring, std::string> resolveKeyring(const std::filesystem::path& path,
                                                          const SecretBytes* encrypt,
                                                          bool create_if_missing);

}  // namespace sidecrypt::proxy
