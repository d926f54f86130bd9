#include "proxy/observe/cert_expiry.h"

#include <algorithm>
#include <ctime>

#include "filters/common/safe_text.h"

namespace sidecrypt::proxy {

namespace rt = filters::rpc_tls;

namespace {

constexpr int kExpiredLevel = 4;

// The highest threshold crossed at `now`: 0 none, 1 = 30 days, 2 = 7 days, 3 = 1 day, 4 expired.
int levelAt(const rt::CertificateInfo& c, int64_t now) {
  if (now > c.not_after) {
    return kExpiredLevel;
  }
  int level = 0;
  for (int64_t t : CertExpiryWatch::kThresholds) {
    if (c.not_after - now <= t) {
      ++level;
    }
  }
  return level;
}

std::string describe(const rt::CertificateInfo& c) {
  return std::string(rt::certRoleName(c.role)) + " certificate " +
         filters::escapeForLog(c.subject) + " (serial " + c.serial + ") in " +
         filters::escapeForLog(c.file, 1024);
}

std::string keyOf(const rt::CertificateInfo& c) {
  return std::string(rt::certRoleName(c.role)) + "\n" + c.file + "\n" + c.sha256;
}

}  // namespace

std::vector<std::string> CertExpiryWatch::check(const rt::CertInventory& inventory, int64_t now) {
  std::vector<std::string> out;
  std::map<std::string, Warned> next;
  for (const auto& c : inventory.certs) {
    const std::string key = keyOf(c);
    auto found = warned_.find(key);
    Warned w = found != warned_.end() ? found->second : Warned{};
    const int level = levelAt(c, now);
    if (level > w.level) {
      if (level == kExpiredLevel) {
        out.push_back(describe(c) + " EXPIRED at " + utcText(c.not_after) + " (" +
                      std::to_string(now - c.not_after) +
                      " s ago): peers that check it refuse the handshake; replace it");
      } else {
        const int64_t days = kThresholds[level - 1] / kDay;
        out.push_back(describe(c) + " expires within " + std::to_string(days) +
                      (days == 1 ? " day" : " days") + ", at " + utcText(c.not_after) + " (in " +
                      std::to_string(c.not_after - now) + " s)");
      }
      w.level = level;
    }
    if (now < c.not_before && !w.not_yet_valid) {
      out.push_back(describe(c) + " is not valid yet: valid from " + utcText(c.not_before) +
                    " (in " + std::to_string(c.not_before - now) +
                    " s); check the clock or the issuer");
      w.not_yet_valid = true;
    }
    next[key] = w;
  }
  warned_ = std::move(next);
  return out;
}

int64_t CertExpiryWatch::nextCheckIn(const rt::CertInventory& inventory, int64_t now,
                                     int64_t max_s) {
  int64_t next = max_s;
  for (const auto& c : inventory.certs) {
    // levelAt moves up at notAfter - threshold, and to expired one second after notAfter.
    for (int64_t at : {c.not_after - kThresholds[0], c.not_after - kThresholds[1],
                       c.not_after - kThresholds[2], c.not_after + 1}) {
      if (at > now) {
        next = std::min(next, at - now);
      }
    }
  }
  return std::max<int64_t>(next, 1);
}

std::string utcText(int64_t unix_seconds) {
  const auto t = static_cast<time_t>(unix_seconds);
  struct tm tm {};
  char buf[32] = {};
  if (gmtime_r(&t, &tm) == nullptr || strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    return std::to_string(unix_seconds);
  }
  return buf;
}

}  // namespace sidecrypt::proxy
