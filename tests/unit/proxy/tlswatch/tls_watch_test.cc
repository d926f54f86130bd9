#include "proxy/tlswatch/tls_watch.h"

#include <uv.h>

#include <catch2/catch.hpp>

#include "../../test_util.h"
#include "proxy/tlswatch/tls_watcher.h"

using namespace sidecrypt::proxy;
using namespace sidecrypt::proxy::tlswatch;
using sidecrypt::test::TempDir;
using sidecrypt::test::writeFile;
namespace fs = std::filesystem;

namespace {

// The temporary directory as the kernel resolves it (its parents may be links).
fs::path realDir(const TempDir& t) {
  return fs::canonical(t.path());
}

// A Kubernetes secret volume as the kubelet writes it: <vol>/..2026_x/{tls.crt,tls.key},
// <vol>/..data -> ..2026_x, <vol>/tls.crt -> ..data/tls.crt, <vol>/tls.key -> ..data/tls.key.
void kubeVolume(const fs::path& vol, const std::string& version, const std::string& body) {
  fs::create_directories(vol / version);
  writeFile(vol / version / "tls.crt", body);
  writeFile(vol / version / "tls.key", "key " + body);
  // The kubelet's atomic swap: a new link under a temporary name, renamed over ..data.
  fs::create_directory_symlink(version, vol / "..data_tmp");
  fs::rename(vol / "..data_tmp", vol / "..data");
  for (const char* name : {"tls.crt", "tls.key"}) {
    if (!fs::is_symlink(fs::symlink_status(vol / name))) {
      fs::create_symlink(fs::path("..data") / name, vol / name);
    }
  }
}

}  // namespace

TEST_CASE("tls watch plan: a plain file is watched by its name in its directory", "[tlswatch]") {
  TempDir t;
  const fs::path d = realDir(t);
  writeFile(d / "cert.pem", "a");
  const auto plan = planWatch({d / "cert.pem"}, {});
  REQUIRE(plan.dirs.size() == 1);
  CHECK(plan.concerns(d.string(), "cert.pem"));
  // The writer's temporary file is not the certificate; its rename over the name is.
  CHECK_FALSE(plan.concerns(d.string(), "cert.pem.tmp"));
  CHECK_FALSE(plan.concerns(d.string(), ".cert.pem.swp"));
  // An event on the directory itself (no name) always concerns it; other directories never.
  CHECK(plan.concerns(d.string(), ""));
  CHECK_FALSE(plan.concerns((d / "other").string(), "cert.pem"));
}

TEST_CASE("tls watch plan: a missing file is watched where it will appear", "[tlswatch]") {
  TempDir t;
  const fs::path d = realDir(t);
  const auto plan = planWatch({d / "later.pem"}, {});
  CHECK(plan.concerns(d.string(), "later.pem"));
}

TEST_CASE("tls watch plan: a Kubernetes secret volume is followed through ..data", "[tlswatch]") {
  TempDir t;
  const fs::path vol = realDir(t) / "tls";
  kubeVolume(vol, "..2026_12_06_01", "one");
  const auto plan = planWatch({vol / "tls.crt", vol / "tls.key"}, {});
  // The link the kubelet swaps, the names in the volume, and the files in the current version.
  CHECK(plan.concerns(vol.string(), "..data"));
  CHECK(plan.concerns(vol.string(), "tls.crt"));
  CHECK(plan.concerns(vol.string(), "tls.key"));
  CHECK(plan.concerns((vol / "..2026_12_06_01").string(), "tls.crt"));
  CHECK_FALSE(plan.concerns(vol.string(), "..data_tmp"));
  CHECK(plan.dirs.size() == 2);

  // After the swap the plan follows the new version's directory.
  kubeVolume(vol, "..2026_12_06_02", "two");
  fs::remove_all(vol / "..2026_12_06_01");
  const auto next = planWatch({vol / "tls.crt", vol / "tls.key"}, {});
  CHECK(next.concerns((vol / "..2026_12_06_02").string(), "tls.key"));
  CHECK(next.dirs.count((vol / "..2026_12_06_01").string()) == 0);
  CHECK_FALSE(next == plan);
}

TEST_CASE("tls watch plan: absolute links and link loops", "[tlswatch]") {
  TempDir t;
  const fs::path d = realDir(t);
  fs::create_directories(d / "vault");
  writeFile(d / "vault" / "agent.pem", "x");
  fs::create_symlink(d / "vault" / "agent.pem", d / "cert.pem");  // absolute target
  auto plan = planWatch({d / "cert.pem"}, {});
  CHECK(plan.concerns(d.string(), "cert.pem"));
  CHECK(plan.concerns((d / "vault").string(), "agent.pem"));

  fs::create_symlink("loop2", d / "loop1");
  fs::create_symlink("loop1", d / "loop2");
  plan = planWatch({d / "loop1"}, {});  // bounded, no hang
  CHECK(plan.concerns(d.string(), "loop1"));
  CHECK(plan.concerns(d.string(), "loop2"));
}

TEST_CASE("tls watch plan: a CA directory is watched whole, with its subdirectories",
          "[tlswatch]") {
  TempDir t;
  const fs::path ca = realDir(t) / "ca.d";
  fs::create_directories(ca / "sub");
  writeFile(ca / "a.pem", "a");
  const auto plan = planWatch({}, {ca});
  CHECK(plan.concerns(ca.string(), "anything-new.pem"));
  CHECK(plan.concerns((ca / "sub").string(), "b.pem"));
  CHECK(plan.concerns(realDir(t).string(), "ca.d"));  // ca.d renamed or replaced
  CHECK_FALSE(plan.concerns(realDir(t).string(), "other"));
}

TEST_CASE("tls watch targets: ca_path only when ca_file is empty", "[tlswatch]") {
  TlsConfig tls;
  tls.cert_file = "/c.pem";
  tls.key_file = "/k.pem";
  tls.ca_path = "/ca.d";
  std::vector<fs::path> files;
  std::vector<fs::path> trees;
  tlsWatchTargets(tls, files, trees);
  CHECK(files == std::vector<fs::path>{"/c.pem", "/k.pem"});
  CHECK(trees == std::vector<fs::path>{"/ca.d"});
  tls.ca_file = "/ca.pem";
  files.clear();
  trees.clear();
  tlsWatchTargets(tls, files, trees);
  CHECK(files == std::vector<fs::path>{"/c.pem", "/k.pem", "/ca.pem"});
  CHECK(trees.empty());
}

TEST_CASE("tls watch digest: same bytes same digest, any change another", "[tlswatch]") {
  TempDir t;
  const fs::path d = realDir(t);
  writeFile(d / "c.pem", "cert");
  writeFile(d / "k.pem", "key");
  fs::create_directories(d / "ca");
  writeFile(d / "ca" / "1.pem", "ca1");
  const auto a = digestFiles({d / "c.pem", d / "k.pem"}, {d / "ca"});
  // Rewritten with the same bytes (a touch, a rename of an identical copy): unchanged.
  writeFile(d / "c.pem.new", "cert");
  fs::rename(d / "c.pem.new", d / "c.pem");
  CHECK(digestFiles({d / "c.pem", d / "k.pem"}, {d / "ca"}) == a);
  writeFile(d / "k.pem", "key2");
  const auto b = digestFiles({d / "c.pem", d / "k.pem"}, {d / "ca"});
  CHECK(b != a);
  writeFile(d / "ca" / "2.pem", "ca2");
  const auto c = digestFiles({d / "c.pem", d / "k.pem"}, {d / "ca"});
  CHECK(c != b);
  fs::remove(d / "c.pem");  // missing is a state of its own
  CHECK(digestFiles({d / "c.pem", d / "k.pem"}, {d / "ca"}) != c);
  // Contents moved between files are a change: "ab"+"c" is not "a"+"bc".
  writeFile(d / "x", "ab");
  writeFile(d / "y", "c");
  const auto xy = digestFiles({d / "x", d / "y"}, {});
  writeFile(d / "x", "a");
  writeFile(d / "y", "bc");
  CHECK(digestFiles({d / "x", d / "y"}, {}) != xy);
}

TEST_CASE("tls watch debounce: settles after the last event, bounded by the first", "[tlswatch]") {
  Debouncer d(500, 5000);
  CHECK_FALSE(d.pending());
  CHECK(d.onEvent(1000) == 500);
  CHECK(d.pending());
  CHECK(d.onEvent(1300) == 500);  // each event restarts the quiet time
  CHECK(d.onEvent(5800) == 200);  // ... but never past first + max (6000)
  CHECK(d.onEvent(6100) == 0);
  d.fired();
  CHECK_FALSE(d.pending());
  CHECK(d.onEvent(7000) == 500);  // a new burst
}

TEST_CASE("tls watcher: a rename into place settles once; unrelated names are ignored",
          "[tlswatch]") {
  TempDir t;
  const fs::path d = realDir(t);
  writeFile(d / "cert.pem", "one");
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  int settled = 0;
  {
    TlsWatcher w(&loop, 50, [&settled] { ++settled; });
    CHECK(w.apply(planWatch({d / "cert.pem"}, {})) == 1);
    CHECK(w.apply(planWatch({d / "cert.pem"}, {})) == 0);  // the same directory keeps its watch
    uv_timer_t stop_timer;
    uv_timer_init(&loop, &stop_timer);
    auto run_for = [&loop, &stop_timer](uint64_t ms) {
      uv_timer_start(
          &stop_timer, [](uv_timer_t* h) { uv_stop(h->loop); }, ms, 0);
      uv_run(&loop, UV_RUN_DEFAULT);
    };
    writeFile(d / "other.txt", "noise");
    run_for(200);
    CHECK(settled == 0);
    // Write a temporary file, then rename it over the certificate: several events, one check.
    writeFile(d / "cert.pem.tmp", "two");
    fs::rename(d / "cert.pem.tmp", d / "cert.pem");
    writeFile(d / "cert.pem", "three");
    run_for(300);
    CHECK(settled == 1);
    uv_close(reinterpret_cast<uv_handle_t*>(&stop_timer), nullptr);
  }
  uv_run(&loop, UV_RUN_DEFAULT);  // the watcher's handles close
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("tls watcher: a Kubernetes ..data swap is seen", "[tlswatch]") {
  TempDir t;
  const fs::path vol = realDir(t) / "tls";
  kubeVolume(vol, "..v1", "one");
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  int settled = 0;
  {
    TlsWatcher w(&loop, 50, [&settled] { ++settled; });
    w.apply(planWatch({vol / "tls.crt", vol / "tls.key"}, {}));
    uv_timer_t stop_timer;
    uv_timer_init(&loop, &stop_timer);
    kubeVolume(vol, "..v2", "two");
    uv_timer_start(
        &stop_timer, [](uv_timer_t* h) { uv_stop(h->loop); }, 300, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(settled == 1);
    uv_close(reinterpret_cast<uv_handle_t*>(&stop_timer), nullptr);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

namespace {

sidecrypt::filters::rpc_tls::CertificateInfo leafOf(const std::string& file, const std::string& ca,
                                                    const std::string& err) {
  sidecrypt::filters::rpc_tls::CertificateInfo c;
  c.role = sidecrypt::filters::rpc_tls::CertRole::Leaf;
  c.file = file;
  c.serial = "0A";
  c.chains_to = ca;
  c.chain_error = err;
  return c;
}

}  // namespace

TEST_CASE("tls watch: a new leaf that stops chaining to the CAs is a regression, named",
          "[tlswatch]") {
  using sidecrypt::filters::rpc_tls::CertInventory;
  CertInventory running;
  running.add(leafOf("/etc/tls/server.pem", "ab12", ""));
  CertInventory cut;
  cut.add(leafOf("/etc/tls/server.pem", "", "unable to get local issuer certificate"));
  const auto r = chainRegressions(running, cut);
  REQUIRE(r.size() == 1);
  CHECK(r[0].find("/etc/tls/server.pem") != std::string::npos);
  CHECK(r[0].find("unable to get local issuer certificate") != std::string::npos);

  // Still chaining (to another configured CA: a CA rotation) is not a regression.
  CertInventory rotated;
  rotated.add(leafOf("/etc/tls/server.pem", "cd34", ""));
  CHECK(chainRegressions(running, rotated).empty());
  // A leaf that did not chain before (no CA configured, or already foreign) is not made worse.
  CHECK(chainRegressions(cut, cut).empty());
  CertInventory none;
  CHECK(chainRegressions(none, cut).empty());
}
