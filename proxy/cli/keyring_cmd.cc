#include <sodium.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <variant>

#include "filters/keyring/keyring_codec.h"
#include "proxy/cli/commands.h"
#include "proxy/keyring/keyring_file.h"

namespace sidecrypt::proxy::cli {

using filters::SecretBytes;
using filters::keyring::AeadKey;
using filters::keyring::KeySet;

int keygen() {
  filters::ensureSodium();
  const SecretBytes text = filters::keyring::encodeKey(filters::keyring::randomKey(32));
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
  return 0;
}

namespace {

// Reads one key from stdin into locked memory (so it never shows in `ps`).
std::variant<SecretBytes, std::string> readKeyFromStdin() {
  SecretBytes line(256);
  size_t n = 0;
  int c = 0;
  while (n < line.size() && (c = std::fgetc(stdin)) != EOF && c != '\n') {
    if (c != '\r' && c != ' ' && c != '\t') {
      line.data()[n++] = static_cast<uint8_t>(c);
    }
  }
  line.truncate(n);
  return filters::keyring::decodeKey(line.view());
}

void printRing(const std::filesystem::path& file, const KeySet& ring) {
  std::cout << "keyring " << file.string() << " (" << ring.size()
            << (ring.size() == 1 ? " key)\n" : " keys)\n");
  for (size_t i = 0; i < ring.size(); ++i) {
    std::cout << "  " << i << "  " << ring.fingerprint(i) << (i == 0 ? "  primary" : "") << "\n";
  }
}

}  // namespace

int keyringCommand(KeyringOp op, const std::filesystem::path& file, const std::string& key) {
  filters::ensureSodium();
  auto loaded = loadKeyringFile(file);
  if (auto* err = std::get_if<std::string>(&loaded)) {
    std::cerr << "sidecrypt: " << *err << "\n";
    return 1;
  }
  const bool missing = std::holds_alternative<KeyringMissing>(loaded);
  if (missing && op != KeyringOp::Install) {
    std::cerr << "sidecrypt: " << file.string()
              << ": no keyring file (create one with `sidecrypt keyring install KEY --file "
              << file.string() << "`)\n";
    return 1;
  }
  auto ring = missing ? std::make_shared<const KeySet>(std::vector<std::unique_ptr<AeadKey>>{})
                      : std::get<filters::keyring::KeySetConstSharedPtr>(loaded);
  if (op == KeyringOp::List) {
    printRing(file, *ring);
    return 0;
  }

  // Resolve the key argument: base64, "-" (stdin), or a fingerprint of an installed key.
  std::variant<SecretBytes, std::string> decoded = std::string("no key given");
  if (key == "-") {
    decoded = readKeyFromStdin();
  } else if (op != KeyringOp::Install && key.size() >= 8 && key.size() <= 64 &&
             key.find_first_not_of("0123456789abcdef") == std::string::npos) {
    if (auto idx = ring->findByFingerprint(key)) {
      decoded = SecretBytes::copyOf(ring->at(*idx).raw().span());
    } else {
      decoded = std::string("no installed key has fingerprint ") + key;
    }
  } else {
    decoded = filters::keyring::decodeKey(key);
  }
  if (auto* err = std::get_if<std::string>(&decoded)) {
    std::cerr << "sidecrypt: " << *err << "\n";
    return 1;
  }
  const auto& raw = std::get<SecretBytes>(decoded);
  KeySet::Result next = op == KeyringOp::Install ? ring->install(raw)
                        : op == KeyringOp::Use   ? ring->use(raw)
                                                 : ring->remove(raw);
  if (auto* err = std::get_if<std::string>(&next)) {
    std::cerr << "sidecrypt: " << file.string() << ": " << *err << "\n";
    return 1;
  }
  const auto& updated = *std::get<filters::keyring::KeySetConstSharedPtr>(next);
  if (auto err = writeKeyringFile(file, updated)) {
    std::cerr << "sidecrypt: " << *err << "\n";
    return 1;
  }
  printRing(file, updated);
  return 0;
}

}  // namespace sidecrypt::proxy::cli
