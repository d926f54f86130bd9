// The CA argument of `sidecrypt check remove-ca`: a PEM file holding the CA, or its SHA-256
// fingerprint (hex, colons and case as openssl prints it allowed; a prefix of at least 8 digits).
#include "filters/common/boringssl.h"

#include <openssl/digest.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "proxy/cli/commands.h"

namespace sidecrypt::proxy::cli {

namespace {

constexpr size_t kMinPrefix = 8;
constexpr size_t kSha256Hex = 64;

std::optional<std::string> fingerprintText(const std::string& arg) {
  std::string out;
  for (const char c : arg) {
    if (c == ':') {
      continue;
    }
    if (std::isxdigit(static_cast<unsigned char>(c)) == 0) {
      return std::nullopt;
    }
    out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  if (out.size() < kMinPrefix || out.size() > kSha256Hex) {
    return std::nullopt;
  }
  return out;
}

}  // namespace

std::optional<std::string> caFingerprintArg(const std::string& arg, std::string& error) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(arg, ec)) {
    if (auto fp = fingerprintText(arg)) {
      return fp;
    }
    error = arg + ": neither a readable PEM file nor a SHA-256 fingerprint (hex, at least " +
            std::to_string(kMinPrefix) + " digits)";
    return std::nullopt;
  }
  std::ifstream in(arg, std::ios::binary);
  const std::string pem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (!in.good() && !in.eof()) {
    error = arg + ": cannot read";
    return std::nullopt;
  }
  bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<ptrdiff_t>(pem.size())));
  bssl::UniquePtr<X509> cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)
                                 : nullptr);
  if (!cert) {
    ERR_clear_error();
    error = arg + ": no PEM certificate found";
    return std::nullopt;
  }
  if (bssl::UniquePtr<X509> second{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)}) {
    error = arg +
            ": holds more than one certificate; give the file of the one CA to remove, or "
            "its SHA-256 fingerprint";
    return std::nullopt;
  }
  ERR_clear_error();
  uint8_t md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  if (X509_digest(cert.get(), EVP_sha256(), md, &len) != 1) {
    ERR_clear_error();
    error = arg + ": cannot compute the fingerprint";
    return std::nullopt;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 0xf];
  }
  return out;
}

}  // namespace sidecrypt::proxy::cli
