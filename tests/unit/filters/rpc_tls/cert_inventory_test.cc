// The certificate inventory a TLS context builds from the files it loads (issue 19, item 1):
// what the expiry metrics, `status`, `doctor` and the CA checks read.
#include "filters/rpc_tls/cert_inventory.h"

#include <catch2/catch.hpp>

#include <algorithm>

#include "../../test_util.h"
#include "tls_test_util.h"

using namespace sidecrypt::rpc_tls_test;
using sidecrypt::filters::rpc_tls::CertificateInfo;
using sidecrypt::filters::rpc_tls::CertInventory;
using sidecrypt::filters::rpc_tls::CertRole;
using sidecrypt::filters::rpc_tls::CertState;
using sidecrypt::filters::rpc_tls::certState;
using sidecrypt::test::readFile;
using sidecrypt::test::TempDir;
using sidecrypt::test::writeFile;

namespace {

// `openssl x509 -noout -fingerprint -sha256` of the fixtures, lower case without colons.
const std::string kCaSha256 = "9df47f7f7913981da180a6d9afce02806f48c49e39c483268d8cd8fd65029b60";
const std::string kOtherCaSha256 =
    "7d86c49801c8f8504c18000ed22c610814169e8d817677132f1eee82fa225ad6";

std::vector<CertificateInfo> ofRole(const CertInventory& inv, CertRole role) {
  std::vector<CertificateInfo> out;
  std::copy_if(inv.certs.begin(), inv.certs.end(), std::back_inserter(out),
               [role](const CertificateInfo& c) { return c.role == role; });
  return out;
}

}  // namespace

TEST_CASE("cert_inventory: the leaf and the CA as loaded, the leaf chaining to the CA",
          "[rpc_tls][cert_inventory]") {
  const auto ctx = mustCreate(serverSettings(), TlsRole::Server);
  const CertInventory& inv = ctx->certificates();
  REQUIRE(inv.certs.size() == 2);
  const CertificateInfo& leaf = inv.certs[0];  // cert_file first
  CHECK(leaf.role == CertRole::Leaf);
  CHECK(leaf.file == (certs() / "dc1-server-consul-0.pem").string());
  CHECK(leaf.subject == "CN=server.dc1.consul");
  CHECK(leaf.serial == "4A2BF1773B0C17D4D31C582E69DBC946");
  // openssl x509 -dates: Nov 29 01:46:23 2026 GMT .. Nov  5 01:46:23 2126 GMT
  CHECK(leaf.not_before == 1795916783);
  CHECK(leaf.not_after == 4949516783);
  CHECK(leaf.sha256.size() == 64);
  CHECK(leaf.chains_to == kCaSha256);
  CHECK(leaf.chain_error.empty());
  const CertificateInfo& ca = inv.certs[1];
  CHECK(ca.role == CertRole::Ca);
  CHECK(ca.file == (certs() / "consul-agent-ca.pem").string());
  CHECK(ca.sha256 == kCaSha256);
  CHECK(ca.subject.rfind("CN=Consul Agent CA ", 0) == 0);
  CHECK(ca.subject.find(",O=HashiCorp Inc.,") != std::string::npos);
  CHECK(leaf.issuer == ca.subject);
  CHECK(inv.caByFingerprint(kCaSha256) == &ca);
  CHECK(inv.caByFingerprint(leaf.sha256) == nullptr);  // a leaf is not a CA
}

TEST_CASE("cert_inventory: a leaf from a foreign CA does not chain, and says why",
          "[rpc_tls][cert_inventory]") {
  TlsSettings s = serverSettings(false);
  s.cert_file = negative("other-server.pem");
  s.key_file = negative("other-server-key.pem");
  const auto ctx = mustCreate(s, TlsRole::Server);  // loading works: only peers would refuse it
  const auto leaves = ofRole(ctx->certificates(), CertRole::Leaf);
  REQUIRE(leaves.size() == 1);
  CHECK(leaves[0].chains_to.empty());
  CHECK(leaves[0].chain_error == "unable to get local issuer certificate");
  // With both CAs trusted (a rotation's bundle) it chains, to the other one.
  s.ca_file = negative("ca-bundle.pem");
  const auto bundled = mustCreate(s, TlsRole::Server);
  const auto cas = ofRole(bundled->certificates(), CertRole::Ca);
  REQUIRE(cas.size() == 2);
  CHECK(cas[0].sha256 == kOtherCaSha256);
  CHECK(cas[1].sha256 == kCaSha256);
  CHECK(ofRole(bundled->certificates(), CertRole::Leaf)[0].chains_to == kOtherCaSha256);
}

TEST_CASE("cert_inventory: further certificates of cert_file are intermediates; ca_path files",
          "[rpc_tls][cert_inventory]") {
  TempDir dir;
  const auto chain = dir.path() / "chain.pem";
  writeFile(chain, readFile(certs() / "dc1-server-consul-0.pem") +
                       readFile(certs() / "consul-agent-ca.pem"));
  const auto cas = dir.path() / "cas";
  std::filesystem::create_directories(cas / "sub");
  writeFile(cas / "sub" / "a.pem", readFile(certs() / "consul-agent-ca.pem"));
  writeFile(cas / "b.pem", readFile(negative("other-ca.pem")));
  TlsSettings s = serverSettings();
  s.ca_file.clear();
  s.ca_path = cas;
  s.cert_file = chain;
  const auto ctx = mustCreate(s, TlsRole::Server);
  const CertInventory& inv = ctx->certificates();
  REQUIRE(inv.certs.size() == 4);
  CHECK(inv.certs[0].role == CertRole::Leaf);
  CHECK(inv.certs[1].role == CertRole::Intermediate);
  CHECK(inv.certs[1].file == chain.string());
  CHECK(inv.certs[1].sha256 == kCaSha256);
  CHECK(inv.certs[2].file == (cas / "b.pem").string());  // sorted, as loaded
  CHECK(inv.certs[3].file == (cas / "sub" / "a.pem").string());
  CHECK(inv.certs[0].chains_to == kCaSha256);
}

TEST_CASE("cert_inventory: a context without a CA gives no chain verdict",
          "[rpc_tls][cert_inventory]") {
  TlsSettings s = serverSettings(false);
  s.ca_file.clear();
  const auto ctx = mustCreate(s, TlsRole::Server);
  REQUIRE(ctx->certificates().certs.size() == 1);
  CHECK(ctx->certificates().certs[0].chains_to.empty());
  CHECK(ctx->certificates().certs[0].chain_error.empty());
}

TEST_CASE("cert_inventory: state at a given time", "[rpc_tls][cert_inventory]") {
  CertificateInfo c;
  c.not_before = 1000;
  c.not_after = 1000 + 90 * 86400;
  CHECK(certState(c, 999) == CertState::NotYetValid);
  CHECK(certState(c, 1000) == CertState::Ok);
  CHECK(certState(c, c.not_after - 30 * 86400) == CertState::Ok);
  CHECK(certState(c, c.not_after - 30 * 86400 + 1) == CertState::Expiring);
  CHECK(certState(c, c.not_after) == CertState::Expiring);  // the last valid second
  CHECK(certState(c, c.not_after + 1) == CertState::Expired);
}
