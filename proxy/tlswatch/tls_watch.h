#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "filters/rpc_tls/cert_inventory.h"
#include "proxy/config/config.h"

namespace sidecrypt::proxy::tlswatch {

// Watching the TLS files (tls.cert_file, key_file, ca_file, ca_path) for changes, without the
// event loop: which directories to watch and which of their entries matter (WatchPlan), whether
// the files' contents changed (digestFiles), and when a burst of events has settled (Debouncer).
// proxy/tlswatch/tls_watcher.h puts libuv's inotify handles on top; the Server rebuilds the TLS
// setup on a worker thread when the settled contents differ (docs/architecture.md, "Certificate
// file watching").

// The directories to watch with inotify and, in each, the entry names whose events concern a
// watched file. A file is followed through every symbolic link on its way (a Kubernetes secret
// volume's tls.crt -> ..data/tls.crt with ..data -> ..2026_x: the entries "tls.crt" and "..data"
// of the volume directory and "tls.crt" of ..2026_x), so both a rename over the file and a swap
// of any link on its path are seen. A CA directory (ca_path) is watched whole, with its
// subdirectories.
struct WatchPlan {
  struct Dir {
    std::set<std::string> names;
    bool whole = false;  // every entry concerns a watched file
    // The directory's identity when planned: a directory replaced under the same path (removed
    // and created again) needs a new watch.
    uint64_t dev = 0;
    uint64_t ino = 0;
  };
  std::map<std::string, Dir> dirs;  // absolute, lexically normal paths

  // Whether an event on `name` in the watched directory `dir` concerns a watched file. An event
  // without a name (the directory itself) always does.
  bool concerns(const std::string& dir, std::string_view name) const;
  bool operator==(const WatchPlan& o) const;
};

// The most directories a CA tree adds to a plan (a ca_path with more is watched in part and
// logged; `sidecrypt reload` still reads all of it).
constexpr size_t kMaxTreeDirs = 256;
// The most symbolic links followed on one path (as the kernel's ELOOP limit).
constexpr int kMaxLinkHops = 40;

// The plan for `files` (each followed through its links) and `trees` (directories watched whole).
// A missing entry is planned in the directory that would hold it, so its creation is seen.
// Reads the file system (lstat, readlink): call it off the loop.
WatchPlan planWatch(const std::vector<std::filesystem::path>& files,
                    const std::vector<std::filesystem::path>& trees);

// The files and trees of a TLS config: cert_file, key_file, ca_file, and ca_path only when
// ca_file is empty (ca_file wins, as in Consul).
void tlsWatchTargets(const TlsConfig& tls, std::vector<std::filesystem::path>& files,
                     std::vector<std::filesystem::path>& trees);

// BLAKE2b-256 over each file's path and content (a missing or unreadable file counts as such)
// and over every regular file under each tree, in sorted order: equal digests mean nothing to
// reload. The key file is read through a buffer that is wiped; no content is kept.
using Digest = std::array<uint8_t, 32>;
Digest digestFiles(const std::vector<std::filesystem::path>& files,
                   const std::vector<std::filesystem::path>& trees);

// A watched change must not make things worse on its own: a certificate file cut at a PEM
// boundary (the leaf written, its intermediates not yet) still parses and matches its key, but
// no longer chains to the configured CAs. When a leaf that chained in `running` does not chain
// in `next`, this names it (one line per leaf) and the watch keeps the running set; an explicit
// `sidecrypt reload` still applies such a set (the operator's decision, as `doctor` reports).
std::vector<std::string> chainRegressions(const filters::rpc_tls::CertInventory& running,
                                          const filters::rpc_tls::CertInventory& next);

// Waits for a burst of events to settle: fires `quiet_ms` after the last event, but no later
// than `max_ms` after the first one, so a file rewritten without pause is still picked up.
class Debouncer {
 public:
  Debouncer(uint64_t quiet_ms, uint64_t max_ms) : quiet_ms_(quiet_ms), max_ms_(max_ms) {}
  // An event at `now_ms`: how long from now until the burst counts as settled.
  uint64_t onEvent(uint64_t now_ms);
  void fired() { first_.reset(); }
  bool pending() const { return first_.has_value(); }
  void setQuiet(uint64_t quiet_ms, uint64_t max_ms) {
    quiet_ms_ = quiet_ms;
    max_ms_ = max_ms;
  }

 private:
  uint64_t quiet_ms_;
  uint64_t max_ms_;
  std::optional<uint64_t> first_;
};

// Every watch outcome in one list, rendered as /status `tls_watch`, the `status` text and
// sidecrypt_tls_watch_reloads_total{result}: `applied` a new set was swapped in, `unchanged`
// events came but the contents were the same (nothing done), `failed` the new set was refused
// (the running one stays).
#define SIDECRYPT_TLS_WATCH_COUNTERS(COUNTER) \
  COUNTER(applied)                            \
  COUNTER(unchanged)                          \
  COUNTER(failed)

struct WatchCounters {
#define SIDECRYPT_TLS_WATCH_DECLARE(name) uint64_t name = 0;
  SIDECRYPT_TLS_WATCH_COUNTERS(SIDECRYPT_TLS_WATCH_DECLARE)
#undef SIDECRYPT_TLS_WATCH_DECLARE

  template <typename Fn>
  void forEach(Fn&& fn) const {
#define SIDECRYPT_TLS_WATCH_VISIT(name) fn(#name, name);
    SIDECRYPT_TLS_WATCH_COUNTERS(SIDECRYPT_TLS_WATCH_VISIT)
#undef SIDECRYPT_TLS_WATCH_VISIT
  }
};

// What `sidecrypt status` shows about the watch.
struct WatchStatus {
  bool enabled = false;  // tls.watch and there are TLS files to watch
  size_t directories = 0;
  WatchCounters counters;
  int64_t last_unix_ms = 0;  // the last applied or failed attempt; 0: none yet
  bool last_ok = true;
  std::string last_text;  // "applied" or the errors, one per line
};

}  // namespace sidecrypt::proxy::tlswatch
