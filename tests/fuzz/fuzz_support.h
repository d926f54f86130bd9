#pragma once

// What several fuzz targets share: the check that ends a run as a crash, a key ring written the
// way keyring files and tests/vectors write keys, and the RPC TLS unit-test certificates.

#include <cstdlib>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "filters/common/secret_bytes.h"
#include "filters/keyring/aead_key.h"
#include "filters/keyring/key_set.h"
#include "filters/keyring/keyring_codec.h"
#include "filters/rpc_tls/tls_context.h"

namespace sidecrypt::fuzz {

// A property every input must keep: a failure traps, which libFuzzer and the replay main
// (replay_main.cc) both report as a crash of that input.
inline void check(bool ok) {
  if (!ok) {
    __builtin_trap();
  }
}

// A key ring of base64 keys, in decrypt order (empty: a ring without keys).
inline filters::keyring::KeySetConstSharedPtr keyRing(
    std::initializer_list<std::string_view> base64_keys) {
  std::vector<std::unique_ptr<filters::keyring::AeadKey>> keys;
  keys.reserve(base64_keys.size());
  for (auto text : base64_keys) {
    auto raw = filters::keyring::decodeKey(text);
    if (!std::holds_alternative<filters::SecretBytes>(raw)) {
      std::abort();  // the keys are part of the source
    }
    keys.push_back(
        filters::keyring::AeadKey::create(std::move(std::get<filters::SecretBytes>(raw))));
  }
  return std::make_shared<const filters::keyring::KeySet>(std::move(keys));
}

// The ring of tests/vectors/streams.json (the keys its sealed streams were made with), which the
// stream fuzzers' corpora use.
inline filters::keyring::KeySetConstSharedPtr streamsRing() {
  static const filters::keyring::KeySetConstSharedPtr keys =
      keyRing({"ZUTCN36dH/D4qztNxEr6h0gTZhM9ps72y9npWlD64FY=",
               "awbDutZp1k/QXM9SrfdepIhhVwekawb+TGZo8LkMM5I=",
               "xzo1B7xxEAS7IVndXWDj6t9qIxkCH+Vt/TBngGPnjiU=",
               "x/UJxzpSKN0nXSSLTEsxdo7x+jJikcASAPCMd3aboEA="});
  return keys;
}

// A TLS context with the dc1 server's certificate from the unit-test fixtures
// (tests/unit/filters/rpc_tls/certs), found from the source root.
inline filters::rpc_tls::TlsContextSharedPtr dc1ServerContext(filters::rpc_tls::TlsRole role,
                                                              bool verify_incoming) {
  const auto dir = std::filesystem::path(SIDECRYPT_SOURCE_DIR) / "tests/unit/filters/rpc_tls/certs";
  filters::rpc_tls::TlsSettings s;
  s.ca_file = dir / "consul-agent-ca.pem";
  s.cert_file = dir / "dc1-server-consul-0.pem";
  s.key_file = dir / "dc1-server-consul-0-key.pem";
  s.verify_incoming = verify_incoming;
  auto made = filters::rpc_tls::TlsContext::create(s, role);
  if (std::holds_alternative<std::string>(made)) {
    std::abort();  // the fixtures are part of the source tree
  }
  return std::get<filters::rpc_tls::TlsContextSharedPtr>(made);
}

}  // namespace sidecrypt::fuzz
