#include "proxy/tlswatch/tls_watch.h"

#include <sodium.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <memory>
#include <system_error>

namespace sidecrypt::proxy::tlswatch {

namespace fs = std::filesystem;

namespace {

void setIdentity(WatchPlan::Dir& d, const fs::path& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    d.dev = st.st_dev;
    d.ino = st.st_ino;
  }
}

WatchPlan::Dir& dirOf(WatchPlan& plan, const fs::path& dir) {
  const std::string key = dir.lexically_normal().string();
  auto [it, added] = plan.dirs.try_emplace(key);
  if (added) {
    setIdentity(it->second, key);
  }
  return it->second;
}

// A directory and its subdirectories (not through links), watched whole, up to kMaxTreeDirs.
void addTree(WatchPlan& plan, const fs::path& root, size_t& budget) {
  if (budget == 0) {
    return;
  }
  --budget;
  dirOf(plan, root).whole = true;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(root, ec), end; !ec && it != end && budget > 0;
       it.increment(ec)) {
    if (it->is_directory(ec) && !it->is_symlink(ec)) {
      --budget;
      dirOf(plan, it->path()).whole = true;
    }
  }
}

// Walks `path` as the kernel resolves it, component by component, planning the entry of every
// symbolic link met and the final entry. `tree`: the final directory is watched whole.
void addPath(WatchPlan& plan, const fs::path& path, bool tree, size_t& budget) {
  std::error_code ec;
  const fs::path abs = fs::absolute(path, ec).lexically_normal();
  if (ec) {
    return;
  }
  std::deque<std::string> rest;
  for (const auto& part : abs.relative_path()) {
    rest.push_back(part.string());
  }
  fs::path cur = abs.root_path();
  int hops = 0;
  while (!rest.empty()) {
    const std::string name = rest.front();
    rest.pop_front();
    if (name.empty() || name == ".") {
      continue;
    }
    if (name == "..") {
      cur = cur.parent_path();
      continue;
    }
    const fs::path next = cur / name;
    const auto st = fs::symlink_status(next, ec);
    if (ec || !fs::exists(st)) {
      dirOf(plan, cur).names.insert(name);  // its creation (or rename into place) is an event
      return;
    }
    if (fs::is_symlink(st)) {
      dirOf(plan, cur).names.insert(name);  // a swap of this link is an event
      const fs::path target = fs::read_symlink(next, ec);
      if (ec || ++hops > kMaxLinkHops) {
        return;
      }
      std::deque<std::string> expanded;
      for (const auto& part : target.relative_path()) {
        expanded.push_back(part.string());
      }
      rest.insert(rest.begin(), expanded.begin(), expanded.end());
      if (target.is_absolute()) {
        cur = target.root_path();
      }
      continue;
    }
    if (rest.empty()) {
      dirOf(plan, cur).names.insert(name);
      if (tree && fs::is_directory(st)) {
        addTree(plan, next, budget);
      }
      return;
    }
    cur = next;
  }
}

void hashBytes(crypto_generichash_state& h, const void* p, size_t n) {
  crypto_generichash_update(&h, static_cast<const unsigned char*>(p), n);
}

void hashFile(crypto_generichash_state& h, const fs::path& file) {
  const std::string name = file.string();
  hashBytes(h, name.data(), name.size() + 1);  // with its NUL: "a" + "bc" != "ab" + "c"
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(name.c_str(), "rbe"), &std::fclose);
  if (!f) {
    const char missing = 0;
    hashBytes(h, &missing, 1);
    return;
  }
  const char present = 1;
  hashBytes(h, &present, 1);
  // Key files pass through here: a buffer on the stack, wiped before it goes.
  std::array<unsigned char, 8192> buf{};
  uint64_t total = 0;
  size_t n = 0;
  while ((n = std::fread(buf.data(), 1, buf.size(), f.get())) > 0) {
    hashBytes(h, buf.data(), n);
    total += n;
  }
  sodium_memzero(buf.data(), buf.size());
  hashBytes(h, &total, sizeof(total));
}

}  // namespace

bool WatchPlan::concerns(const std::string& dir, std::string_view name) const {
  auto it = dirs.find(dir);
  if (it == dirs.end()) {
    return false;
  }
  return name.empty() || it->second.whole || it->second.names.count(std::string(name)) > 0;
}

bool WatchPlan::operator==(const WatchPlan& o) const {
  if (dirs.size() != o.dirs.size()) {
    return false;
  }
  return std::equal(dirs.begin(), dirs.end(), o.dirs.begin(), [](const auto& a, const auto& b) {
    return a.first == b.first && a.second.names == b.second.names &&
           a.second.whole == b.second.whole && a.second.dev == b.second.dev &&
           a.second.ino == b.second.ino;
  });
}

WatchPlan planWatch(const std::vector<fs::path>& files, const std::vector<fs::path>& trees) {
  WatchPlan plan;
  size_t budget = kMaxTreeDirs;
  for (const auto& f : files) {
    addPath(plan, f, false, budget);
  }
  for (const auto& t : trees) {
    addPath(plan, t, true, budget);
  }
  return plan;
}

void tlsWatchTargets(const TlsConfig& tls, std::vector<fs::path>& files,
                     std::vector<fs::path>& trees) {
  for (const auto* p : {&tls.cert_file, &tls.key_file, &tls.ca_file}) {
    if (!p->empty()) {
      files.push_back(*p);
    }
  }
  if (tls.ca_file.empty() && !tls.ca_path.empty()) {
    trees.push_back(tls.ca_path);
  }
}

Digest digestFiles(const std::vector<fs::path>& files, const std::vector<fs::path>& trees) {
  crypto_generichash_state h;
  crypto_generichash_init(&h, nullptr, 0, sizeof(Digest));
  for (const auto& f : files) {
    hashFile(h, f);
  }
  for (const auto& t : trees) {
    std::vector<fs::path> found;
    std::error_code ec;
    for (fs::recursive_directory_iterator it(t, ec), end; !ec && it != end; it.increment(ec)) {
      if (!it->is_directory(ec)) {
        found.push_back(it->path());
      }
    }
    std::sort(found.begin(), found.end());
    const uint64_t count = found.size();
    hashBytes(h, &count, sizeof(count));
    for (const auto& f : found) {
      hashFile(h, f);
    }
  }
  Digest out{};
  crypto_generichash_final(&h, out.data(), out.size());
  return out;
}

uint64_t Debouncer::onEvent(uint64_t now_ms) {
  if (!first_) {
    first_ = now_ms;
  }
  const uint64_t settle = now_ms + quiet_ms_;
  const uint64_t latest = *first_ + std::max(max_ms_, quiet_ms_);
  const uint64_t at = std::min(settle, latest);
  return at > now_ms ? at - now_ms : 0;
}

std::vector<std::string> chainRegressions(const filters::rpc_tls::CertInventory& running,
                                          const filters::rpc_tls::CertInventory& next) {
  using filters::rpc_tls::CertRole;
  std::vector<std::string> out;
  for (const auto& leaf : next.certs) {
    if (leaf.role != CertRole::Leaf || leaf.chain_error.empty()) {
      continue;
    }
    for (const auto& before : running.certs) {
      if (before.role == CertRole::Leaf && before.file == leaf.file && !before.chains_to.empty()) {
        out.push_back(leaf.file + ": the new certificate (serial " + leaf.serial +
                      ") does not chain to the configured CAs (" + leaf.chain_error +
                      ") while the running one does; a half-written chain? Keeping the running "
                      "set; `sidecrypt reload` applies it anyway");
        break;
      }
    }
  }
  return out;
}

}  // namespace sidecrypt::proxy::tlswatch
