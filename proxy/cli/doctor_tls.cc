// `sidecrypt doctor`, the checks of the certificates: each one sidecrypt would load for the RPC
// port (leaf, intermediates, CAs) is valid now, and the leaf chains to the configured CAs. The
// files are read here, as a start or reload reads them (buildRpcTlsSetup), not asked of the
// running proxy: doctor also judges a configuration before it is deployed.
#include <chrono>
#include <string>
#include <variant>
#include <vector>

#include "filters/common/safe_text.h"
#include "proxy/cli/doctor.h"
#include "proxy/runtime_state.h"

namespace sidecrypt::proxy::cli::doctor {

namespace rt = filters::rpc_tls;

namespace {

std::string named(const rt::CertificateInfo& c) {
  return std::string(rt::certRoleName(c.role)) + " " + filters::escapeForLog(c.subject) +
         " (serial " + c.serial + ", " + filters::escapeForLog(c.file, 1024) + ")";
}

std::string daysText(int64_t seconds) {
  const int64_t days = seconds / 86400;
  return days != 0 ? std::to_string(days) + " days" : std::to_string(seconds) + " s";
}

}  // namespace

void Doctor::checkCertificates() {
  const TlsConfig& t = cfg_.tls;
  if (!usesRpc(cfg_) || (t.cert_file.empty() && t.ca_file.empty() && t.ca_path.empty())) {
    add("tls", Status::Info,
        "no certificate configured for the RPC port ([tls] in " + cfg_path_ + ")");
    return;
  }
  auto built = buildRpcTlsSetup(cfg_);
  if (const auto* errs = std::get_if<std::vector<std::string>>(&built)) {
    std::string detail;
    for (const auto& e : *errs) {
      detail += (detail.empty() ? "" : "\n  ") + e;
    }
    add("tls.load", Status::Fail, detail,
        "correct the files named above, then: sidecrypt check-config " + cfg_path_);
    return;
  }
  const auto& setup = std::get<RpcTlsSetupConstPtr>(built);
  const rt::CertInventory none;
  const rt::CertInventory& inv = setup->certificates ? *setup->certificates : none;
  if (inv.certs.empty()) {
    add("tls", Status::Info,
        "the configured certificates are not used: this agent neither verifies outgoing RPC nor "
        "serves RPC with TLS");
    return;
  }
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  std::string bad;
  std::string expiring;
  const rt::CertificateInfo* nearest = nullptr;
  for (const auto& c : inv.certs) {
    switch (rt::certState(c, now)) {
      case rt::CertState::Expired:
        bad += "\n  " + named(c) + ": EXPIRED " + daysText(now - c.not_after) + " ago";
        break;
      case rt::CertState::NotYetValid:
        bad += "\n  " + named(c) + ": NOT VALID YET, valid in " + daysText(c.not_before - now);
        break;
      case rt::CertState::Expiring:
        expiring += "\n  " + named(c) + ": expires in " + daysText(c.not_after - now);
        break;
      case rt::CertState::Ok:
        break;
    }
    if (nearest == nullptr || c.not_after < nearest->not_after) {
      nearest = &c;
    }
  }
  const std::string count = std::to_string(inv.certs.size()) + " certificate(s)";
  if (!bad.empty()) {
    add("tls.validity", Status::Fail, count + ", not valid now:" + bad + expiring,
        "issue new certificates and write them in place of the files above, then: sidecrypt "
        "reload  # a not-yet-valid one: check this host's clock (timedatectl)");
  } else if (!expiring.empty()) {
    add("tls.validity", Status::Warn, count + ", expiring within 30 days:" + expiring,
        "renew them before they expire, then: sidecrypt reload");
  } else {
    add("tls.validity", Status::Ok,
        count + " valid; the first to expire: " + named(*nearest) + " in " +
            daysText(nearest->not_after - now));
  }
  const std::string cas =
      !t.ca_file.empty() ? "ca_file " + t.ca_file.string() : "ca_path " + t.ca_path.string();
  for (const auto& c : inv.certs) {
    if (c.role != rt::CertRole::Leaf) {
      continue;
    }
    if (t.ca_file.empty() && t.ca_path.empty()) {
      add("tls.chain", Status::Info,
          named(c) + ": no ca_file or ca_path, the chain is not checked");
    } else if (const auto* ca = inv.caByFingerprint(c.chains_to); ca != nullptr) {
      add("tls.chain", Status::Ok,
          named(c) + " chains to the CA " + filters::escapeForLog(ca->subject) + " (" +
              filters::escapeForLog(ca->file, 1024) + ")");
    } else {
      add("tls.chain", Status::Fail,
          named(c) + " does not chain to the CAs of " + cas + " (" +
              filters::escapeForLog(c.chain_error.empty() ? "no chain" : c.chain_error) +
              "): peers that verify it refuse the handshake",
          "use a certificate issued by a CA in " + cas +
              " (with its intermediates after it in cert_file), or add its issuer to " + cas);
    }
  }
}

}  // namespace sidecrypt::proxy::cli::doctor
