#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "filters/rpc_tls/cert_inventory.h"

namespace sidecrypt::proxy {

// Decides which certificate expiry warnings are due: one per certificate per threshold (30, 7
// and 1 days before notAfter, then expired), and one when a certificate is not valid yet. Pure:
// the caller passes the time (the Server its wall clock, tests any time they like) and logs what
// comes back; it never reads a file or the clock.
class CertExpiryWatch {
 public:
  static constexpr int64_t kDay = 86400;
  static constexpr int64_t kThresholds[] = {30 * kDay, 7 * kDay, 1 * kDay};

  // The warnings due at `now` (unix seconds) that were not given before, as log lines. A
  // certificate that left the inventory (replaced by a reload) is forgotten.
  std::vector<std::string> check(const filters::rpc_tls::CertInventory& inventory, int64_t now);

  // Seconds from `now` until the next threshold any certificate crosses, within [1, max_s]: the
  // caller's timer fires then, so the warning comes on time even for a certificate that expires
  // in seconds, and at least every max_s otherwise.
  static int64_t nextCheckIn(const filters::rpc_tls::CertInventory& inventory, int64_t now,
                             int64_t max_s = 3600);

 private:
  struct Warned {
    int level = 0;  // 0 none, 1..3 the thresholds above, 4 expired
    bool not_yet_valid = false;
  };
  std::map<std::string, Warned> warned_;  // by role, file and fingerprint
};

// A unix time as UTC text, e.g. 2026-12-06T13:00:00Z (logs, status).
std::string utcText(int64_t unix_seconds);

}  // namespace sidecrypt::proxy
