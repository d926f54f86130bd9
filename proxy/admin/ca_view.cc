#include "proxy/admin/ca_view.h"

#include <algorithm>

#include "filters/rpc_tls/cert_inventory.h"

namespace sidecrypt::proxy {

namespace {

int hexDigit(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  return -1;
}

bool parseFingerprint(std::string_view hex, CaFingerprint& out) {
  if (hex.size() != out.size() * 2) {
    return false;
  }
  for (size_t i = 0; i < out.size(); ++i) {
    const int hi = hexDigit(hex[2 * i]);
    const int lo = hexDigit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return false;
    }
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

}  // namespace

std::vector<ConfiguredCa> configuredCas(const RuntimeState& state) {
  namespace rt = filters::rpc_tls;
  std::vector<ConfiguredCa> out;
  if (!state.rpc || !state.rpc->certificates) {
    return out;
  }
  const auto& certs = state.rpc->certificates->certs;
  for (const auto& c : certs) {
    if (c.role != rt::CertRole::Ca ||
        std::any_of(out.begin(), out.end(), [&c](const auto& o) { return o.hex == c.sha256; })) {
      continue;
    }
    ConfiguredCa ca;
    if (!parseFingerprint(c.sha256, ca.fingerprint)) {
      continue;
    }
    ca.hex = c.sha256;
    ca.subject = c.subject;
    for (const auto& leaf : certs) {
      if (leaf.role == rt::CertRole::Leaf && leaf.chains_to == c.sha256) {
        const std::string text = "cert_file " + leaf.file + " (" + leaf.subject + ")";
        if (std::find(ca.local_dependents.begin(), ca.local_dependents.end(), text) ==
            ca.local_dependents.end()) {
          ca.local_dependents.push_back(text);
        }
      }
    }
    out.push_back(std::move(ca));
  }
  return out;
}

CaCheckSubject caCheckSubject(const std::vector<ConfiguredCa>& cas, std::string_view given) {
  CaCheckSubject s;
  s.shown = std::string(given);
  for (const auto& ca : cas) {
    if (!given.empty() && ca.hex.compare(0, given.size(), given) == 0) {
      s.fingerprint = ca.fingerprint;
      s.configured = true;
      s.shown = ca.hex;
      s.subject = ca.subject;
      s.local_dependents = ca.local_dependents;
      return s;
    }
  }
  parseFingerprint(given, s.fingerprint);  // unknown here; peers may still have used it
  return s;
}

}  // namespace sidecrypt::proxy
