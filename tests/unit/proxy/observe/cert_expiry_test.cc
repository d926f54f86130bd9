// Certificate expiry warnings (issue 19, item 1): once per threshold (30, 7, 1 days, expired)
// per certificate, driven by an injected time.
#include "proxy/observe/cert_expiry.h"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using sidecrypt::filters::rpc_tls::CertificateInfo;
using sidecrypt::filters::rpc_tls::CertInventory;
using sidecrypt::filters::rpc_tls::CertRole;
using sidecrypt::proxy::CertExpiryWatch;

namespace {

constexpr int64_t kDay = 86400;
constexpr int64_t kNotAfter = 2'000'000'000;

CertInventory one(const std::string& sha256 = "aa", int64_t not_after = kNotAfter) {
  CertificateInfo c;
  c.role = CertRole::Leaf;
  c.file = "/etc/consul/server.pem";
  c.subject = "CN=server.dc1.consul";
  c.serial = "0A";
  c.not_before = not_after - 365 * kDay;
  c.not_after = not_after;
  c.sha256 = sha256;
  CertInventory inv;
  inv.add(c);
  return inv;
}

bool mentions(const std::vector<std::string>& lines, const std::string& what) {
  return lines.size() == 1 && lines[0].find(what) != std::string::npos &&
         lines[0].find("CN=server.dc1.consul (serial 0A) in /etc/consul/server.pem") !=
             std::string::npos;
}

}  // namespace

TEST_CASE("cert_expiry: one warning per threshold as time passes", "[cert_expiry]") {
  const CertInventory inv = one();
  CertExpiryWatch w;
  CHECK(w.check(inv, kNotAfter - 40 * kDay).empty());
  CHECK(w.check(inv, kNotAfter - 30 * kDay - 1).empty());
  CHECK(mentions(w.check(inv, kNotAfter - 30 * kDay), "expires within 30 days"));
  CHECK(w.check(inv, kNotAfter - 30 * kDay).empty());  // once
  CHECK(w.check(inv, kNotAfter - 8 * kDay).empty());
  CHECK(mentions(w.check(inv, kNotAfter - 6 * kDay), "expires within 7 days"));
  CHECK(w.check(inv, kNotAfter - 5 * kDay).empty());
  CHECK(mentions(w.check(inv, kNotAfter - kDay), "expires within 1 day"));
  CHECK(w.check(inv, kNotAfter).empty());  // the last valid second
  CHECK(mentions(w.check(inv, kNotAfter + 1), "EXPIRED at 2033-05-18T03:33:20Z (1 s ago)"));
  CHECK(w.check(inv, kNotAfter + 3600).empty());
  CHECK(w.check(inv, kNotAfter + 100 * kDay).empty());
}

TEST_CASE("cert_expiry: a late start warns once, at the level reached", "[cert_expiry]") {
  CertExpiryWatch w;
  CHECK(mentions(w.check(one(), kNotAfter - 3 * kDay), "expires within 7 days"));
  CertExpiryWatch expired;
  CHECK(mentions(expired.check(one(), kNotAfter + 5), "EXPIRED"));
  CHECK(expired.check(one(), kNotAfter + 6).empty());
}

TEST_CASE("cert_expiry: a replaced certificate starts afresh; a removed one is forgotten",
          "[cert_expiry]") {
  CertExpiryWatch w;
  CHECK(mentions(w.check(one("aa"), kNotAfter + 1), "EXPIRED"));
  // A reload brought a renewed certificate (another fingerprint) in the same file.
  CHECK(w.check(one("bb", kNotAfter + 365 * kDay), kNotAfter + 2).empty());
  CHECK(mentions(w.check(one("bb", kNotAfter + 365 * kDay), kNotAfter + 340 * kDay),
                 "expires within 30 days"));
  // The old one back (a rollback): it warns again, since it is in use again.
  CHECK(mentions(w.check(one("aa"), kNotAfter + 341 * kDay), "EXPIRED"));
}

TEST_CASE("cert_expiry: a certificate not valid yet warns once", "[cert_expiry]") {
  CertInventory inv = one();
  CertExpiryWatch w;
  const int64_t before = inv.certs[0].not_before - 10;
  CHECK(mentions(w.check(inv, before), "is not valid yet"));
  CHECK(w.check(inv, before + 1).empty());
  CHECK(w.check(inv, inv.certs[0].not_before).empty());
}

TEST_CASE("cert_expiry: the next check lands on the next threshold, at most an hour away",
          "[cert_expiry]") {
  const CertInventory inv = one();
  CHECK(CertExpiryWatch::nextCheckIn(inv, kNotAfter - 40 * kDay) == 3600);
  CHECK(CertExpiryWatch::nextCheckIn(inv, kNotAfter - 30 * kDay - 10) == 10);
  CHECK(CertExpiryWatch::nextCheckIn(inv, kNotAfter - 2) == 3);  // expired at notAfter + 1
  CHECK(CertExpiryWatch::nextCheckIn(inv, kNotAfter + 1) == 3600);
  CHECK(CertExpiryWatch::nextCheckIn(CertInventory{}, 0) == 3600);
  CHECK(CertExpiryWatch::nextCheckIn(inv, kNotAfter - 2, 1) == 1);
  // Several certificates: the nearest threshold of any.
  CertInventory two = one("aa");
  two.add(one("bb", kNotAfter + 5).certs[0]);
  CHECK(CertExpiryWatch::nextCheckIn(two, kNotAfter - 2) == 3);
  CHECK(CertExpiryWatch::nextCheckIn(two, kNotAfter + 2) == 4);
}
