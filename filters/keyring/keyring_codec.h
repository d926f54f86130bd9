#pragma once

#include <span>
#include <string>
#include <string_view>
#include <variant>

#include "filters/common/secret_bytes.h"
#include "filters/keyring/key_set.h"

namespace sidecrypt::filters::keyring {

// Decodes one key into locked memory: base64 in the standard alphabet (Consul's form, as
// `consul keygen` prints it) or the URL-safe one (`nomad operator gossip keyring generate`),
// with or without '=' padding; not both alphabets in one key. Errors never quote the input.
// Keys are always written back in Consul's form (encodeKey).
std::variant<SecretBytes, std::string> decodeKey(std::string_view base64);
SecretBytes encodeKey(const SecretBytes& raw);  // standard base64, padded

// Parses the body of a Serf/Consul keyring file: a JSON array of base64 keys, primary first
// (serf/local.keyring). Whitespace anywhere JSON allows it; duplicate keys collapse into the
// first (as memberlist's AddKey does). Errors name the line and the entry, never the key.
std::variant<KeySetConstSharedPtr, std::string> parseKeyringText(std::string_view text);

// Serialises as Serf does after a change (two-space indent, no trailing newline), so an
// operator can copy the file into an agent's data_dir/serf/.
SecretBytes formatKeyringText(const KeySet& keys);

}  // namespace sidecrypt::filters::keyring
