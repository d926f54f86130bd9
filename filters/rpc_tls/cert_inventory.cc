#include "filters/rpc_tls/cert_inventory.h"

#include "filters/common/boringssl.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/digest.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>

namespace sidecrypt::filters::rpc_tls {

namespace {

std::string nameText(const X509_NAME* name) {
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio || name == nullptr ||
      X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) < 0) {
    ERR_clear_error();
    return "";
  }
  const uint8_t* data = nullptr;
  size_t len = 0;
  BIO_mem_contents(bio.get(), &data, &len);
  return {reinterpret_cast<const char*>(data), len};
}

std::string serialText(const ASN1_INTEGER* serial) {
  bssl::UniquePtr<BIGNUM> bn(ASN1_INTEGER_to_BN(serial, nullptr));
  if (!bn) {
    ERR_clear_error();
    return "";
  }
  char* hex = BN_bn2hex(bn.get());
  if (hex == nullptr) {
    return "";
  }
  std::string out(hex);
  OPENSSL_free(hex);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](char c) { return static_cast<char>(c >= 'a' && c <= 'f' ? c - 32 : c); });
  return out;
}

}  // namespace

// UTCTime or GeneralizedTime.
int64_t asn1UnixTime(const ASN1_TIME* t) {
  static const bssl::UniquePtr<ASN1_TIME> kEpoch(ASN1_TIME_set(nullptr, 0));
  int days = 0;
  int seconds = 0;
  if (t == nullptr || !kEpoch || ASN1_TIME_diff(&days, &seconds, kEpoch.get(), t) != 1) {
    ERR_clear_error();
    return 0;
  }
  return int64_t{days} * 86400 + seconds;
}

namespace {

std::string fingerprint(const X509* cert) {
  uint8_t md[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &len) != 1) {
    ERR_clear_error();
    return "";
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(size_t{len} * 2);
  for (unsigned i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 0xf];
  }
  return out;
}

}  // namespace

const char* certRoleName(CertRole role) {
  switch (role) {
    case CertRole::Leaf:
      return "leaf";
    case CertRole::Intermediate:
      return "intermediate";
    case CertRole::Ca:
      return "ca";
  }
  return "leaf";
}

const char* certStateName(CertState s) {
  switch (s) {
    case CertState::Ok:
      return "ok";
    case CertState::Expiring:
      return "expiring";
    case CertState::Expired:
      return "expired";
    case CertState::NotYetValid:
      return "not-yet-valid";
  }
  return "ok";
}

CertState certState(const CertificateInfo& c, int64_t now) {
  if (now < c.not_before) {
    return CertState::NotYetValid;
  }
  if (now > c.not_after) {
    return CertState::Expired;
  }
  return c.not_after - now < kExpiringSeconds ? CertState::Expiring : CertState::Ok;
}

void CertInventory::add(CertificateInfo c) {
  const bool listed = std::any_of(certs.begin(), certs.end(), [&c](const CertificateInfo& o) {
    return o.role == c.role && o.file == c.file && o.sha256 == c.sha256;
  });
  if (!listed) {
    certs.push_back(std::move(c));
  }
}

const CertificateInfo* CertInventory::caByFingerprint(const std::string& sha256) const {
  for (const auto& c : certs) {
    if (c.role == CertRole::Ca && c.sha256 == sha256) {
      return &c;
    }
  }
  return nullptr;
}

namespace {

std::string asn1Text(const ASN1_STRING* s) {
  if (s == nullptr) {
    return "";
  }
  return {reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
          static_cast<size_t>(ASN1_STRING_length(s))};
}

}  // namespace

std::string certCommonName(const X509* cert) {
  X509_NAME* subject = X509_get_subject_name(cert);
  const int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (idx < 0) {
    return "";
  }
  return asn1Text(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx)));
}

std::vector<std::string> certDnsNames(const X509* cert) {
  std::vector<std::string> out;
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) {
    return out;
  }
  for (size_t i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    if (name->type == GEN_DNS) {
      out.push_back(asn1Text(name->d.dNSName));
    }
  }
  GENERAL_NAMES_free(names);
  return out;
}

CertificateInfo describeCertificate(const x509_st* cert, CertRole role, std::string file) {
  CertificateInfo info;
  info.role = role;
  info.file = std::move(file);
  info.subject = nameText(X509_get_subject_name(cert));
  info.issuer = nameText(X509_get_issuer_name(cert));
  info.serial = serialText(X509_get0_serialNumber(cert));
  info.not_before = asn1UnixTime(X509_get0_notBefore(cert));
  info.not_after = asn1UnixTime(X509_get0_notAfter(cert));
  info.sha256 = fingerprint(cert);
  return info;
}

}  // namespace sidecrypt::filters::rpc_tls
