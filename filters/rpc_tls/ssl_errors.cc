#include "filters/rpc_tls/ssl_errors.h"

#include "filters/common/boringssl.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cctype>
#include <string_view>

namespace sidecrypt::filters::rpc_tls {

namespace {

// "CERTIFICATE_VERIFY_FAILED" -> "certificate verify failed". Alert reasons name what the peer
// sent us, so say so: "TLSV1_ALERT_UNKNOWN_CA" -> "peer sent alert: unknown ca".
std::string humanReason(std::string_view reason) {
  std::string prefix;
  for (std::string_view alert : {"SSLV3_ALERT_", "TLSV1_ALERT_"}) {
    if (reason.substr(0, alert.size()) == alert) {
      prefix = "peer sent alert: ";
      reason.remove_prefix(alert.size());
      break;
    }
  }
  std::string out = prefix;
  for (char c : reason) {
    out.push_back(c == '_' ? ' ' : static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  return out;
}

std::string lowerFirst(std::string s) {
  if (!s.empty()) {
    s[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(s[0])));
  }
  return s;
}

}  // namespace

std::string drainSslErrors(long verify_result) {
  // The first error is the root cause; later entries are the callers that passed it up.
  const uint32_t first = ERR_get_error();
  ERR_clear_error();
  if (first == 0) {
    return "";
  }
  const char* reason = ERR_reason_error_string(first);
  std::string out = reason != nullptr ? humanReason(reason) : "error " + std::to_string(first);
  if (ERR_GET_LIB(first) == ERR_LIB_SSL &&
      ERR_GET_REASON(first) == SSL_R_CERTIFICATE_VERIFY_FAILED && verify_result != X509_V_OK) {
    out += ": " + lowerFirst(X509_verify_cert_error_string(verify_result));
  }
  return out;
}

}  // namespace sidecrypt::filters::rpc_tls
