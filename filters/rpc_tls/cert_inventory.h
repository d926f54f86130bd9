#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

// Forward declarations only: users of this header need no BoringSSL include path order.
struct x509_st;
struct asn1_string_st;

namespace sidecrypt::filters::rpc_tls {

// Where a certificate sidecrypt loads itself sits in its TLS setup.
enum class CertRole : uint8_t {
  Leaf,          // the first certificate of cert_file: the one sidecrypt presents
  Intermediate,  // any further certificate of cert_file (sent along with the leaf)
  Ca,            // a trust anchor from ca_file, or from a file under ca_path
};
const char* certRoleName(CertRole role);

// One certificate as loaded (never a peer's): what the metrics, `status`, `doctor` and the CA
// checks need. Plain data, parsed once where the TLS contexts are built (off the loop).
struct CertificateInfo {
  CertRole role = CertRole::Leaf;
  std::string file;        // the file it was read from, as configured (ca_path: the file in it)
  std::string subject;     // RFC 2253, e.g. "CN=server.dc1.consul,O=HashiCorp"
  std::string issuer;      // RFC 2253
  std::string serial;      // upper-case hex of whole bytes, as `openssl x509 -serial`
  int64_t not_before = 0;  // unix seconds
  int64_t not_after = 0;   // unix seconds
  std::string sha256;      // lower-case hex SHA-256 of the DER encoding
  // Leaf only, and only when a CA is configured: the SHA-256 of the configured CA the leaf chains
  // to (validity dates ignored), or "" with chain_error saying why it does not.
  std::string chains_to;
  std::string chain_error;
};

// Every certificate of one TLS setup, in load order (cert_file first, then the CAs). Part of the
// immutable setup a reload swaps in whole (RpcTlsSetup::certificates).
struct CertInventory {
  std::vector<CertificateInfo> certs;

  // Adds `c` unless the same certificate (role, file, fingerprint) is already listed.
  void add(CertificateInfo c);
  // The configured CAs (role Ca) with this fingerprint; nullptr if none.
  const CertificateInfo* caByFingerprint(const std::string& sha256) const;
};
using CertInventoryConstPtr = std::shared_ptr<const CertInventory>;

// An ASN1_TIME as unix seconds (0 if it cannot be read).
int64_t asn1UnixTime(const asn1_string_st* t);

// A peer certificate's subject CN ("" if none) and its DNS SANs, in certificate order.
std::string certCommonName(const x509_st* cert);
std::vector<std::string> certDnsNames(const x509_st* cert);

// Reads what the inventory lists from a parsed certificate.
CertificateInfo describeCertificate(const x509_st* cert, CertRole role, std::string file);

// Validity of a certificate at `now` (unix seconds).
enum class CertState : uint8_t {
  Ok,
  Expiring,     // valid, fewer than kExpiringSeconds left
  Expired,      // now > notAfter (notAfter itself is the last valid second, RFC 5280)
  NotYetValid,  // now < notBefore
};
constexpr int64_t kExpiringSeconds = int64_t{30} * 86400;
const char* certStateName(CertState s);
CertState certState(const CertificateInfo& c, int64_t now);

}  // namespace sidecrypt::filters::rpc_tls
