// Load tool for the RPC TLS relay benchmark (issue 6, docs/benchmarks.md), driven by e2e_rpc.sh.
//
//   bench_rpc_load server   --listen IP:PORT
//   bench_rpc_load bulk     --addr IP:PORT [--seconds S] [--chunk BYTES]
//   bench_rpc_load pingpong --addr IP:PORT [--size BYTES] [--count N] [--warmup W]
//   bench_rpc_load cps      --addr IP:PORT [--seconds S] [--concurrency C]
//   bench_rpc_load paced    --addr IP:PORT [--size BYTES] [--count N] [--interval-ms MS]
//   bench_rpc_load idle     --addr IP:PORT [--conns N] [--hold-seconds S]
//   bench_rpc_load tls      --ca F --server-cert F --server-key F --client-cert F --client-key F
//                           [--seconds S] [--server-name NAME]
//
// Every connection starts like a Consul RPC connection: the type byte 0x00 (RPCConsul), which
// sidecrypt's client role needs to see first and carries inside TLS to the agent, then one mode
// byte for the backend: 'S' sink (count bytes to EOF, reply the count as 8 bytes LE), 'E' echo
// (to EOF), 'D' discard (to EOF). The backend is one thread per connection, TCP_NODELAY. Clients
// close gracefully (shutdown(SHUT_WR), read to EOF, close), like Consul's half-close.
//
// `tls` is the crypto micro-measure for Debian's BoringSSL (OPENSSL_SMALL, docs/spec/toolchain.md
// §3.1): ECDSA P-256 sign and verify, X25519, and full mutual-TLS 1.3 handshakes with both ends in
// this thread over a BIO pair, with the certificates the relays use (no session resumption).
//
// Each command prints one JSON line on stdout; `server` prints "LISTENING" on stderr when bound,
// `idle` prints "READY" on stderr once every connection carried one echo. Every loop is bounded
// by a count or a deadline; every socket wait by SO_RCVTIMEO / SO_SNDTIMEO.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/bio.h>
#include <openssl/curve25519.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <string>
#include <thread>
#include <vector>

#if !defined(OPENSSL_IS_BORINGSSL)
#error "bench_rpc_load must be built against BoringSSL (cmake/BoringSSLDebian.cmake)"
#endif

namespace {

constexpr uint8_t kTypeByte = 0x00;  // Consul's RPCConsul
constexpr int kIoTimeoutS = 15;

int64_t nowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

double wallSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench_rpc_load: %s\n", what.c_str());
  std::exit(1);
}

struct Args {
  std::map<std::string, std::string> kv;
  std::string get(const std::string& k, const std::string& def = "") const {
    auto it = kv.find(k);
    return it == kv.end() ? def : it->second;
  }
  long num(const std::string& k, long def) const {
    auto it = kv.find(k);
    if (it == kv.end()) {
      return def;
    }
    char* end = nullptr;
    long v = std::strtol(it->second.c_str(), &end, 10);
    if (end == it->second.c_str() || *end != '\0' || v < 0) {
      die("bad number for --" + k + ": " + it->second);
    }
    return v;
  }
};

sockaddr_in parseAddr(const std::string& s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos) {
    die("address must be IP:PORT: " + s);
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(std::atoi(s.c_str() + colon + 1)));
  if (inet_pton(AF_INET, s.substr(0, colon).c_str(), &a.sin_addr) != 1) {
    die("bad IPv4 address: " + s);
  }
  return a;
}

void setTimeouts(int fd, int seconds) {
  timeval tv{seconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

bool writeAll(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) {
      continue;
    }
    if (w <= 0) {
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool readAll(int fd, uint8_t* p, size_t n) {
  while (n > 0) {
    ssize_t r = ::recv(fd, p, n, 0);
    if (r < 0 && errno == EINTR) {
      continue;
    }
    if (r <= 0) {
      return false;
    }
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// Reads and drops everything up to EOF (bounded by SO_RCVTIMEO); true on a clean EOF.
bool drainToEof(int fd) {
  uint8_t buf[4096];
  for (int i = 0; i < 1'000'000; ++i) {
    ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r == 0) {
      return true;
    }
    if (r < 0 && errno != EINTR) {
      return false;
    }
  }
  return false;
}

int dial(const sockaddr_in& to, char mode) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -1;
  }
  setTimeouts(fd, kIoTimeoutS);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0) {
    ::close(fd);
    return -1;
  }
  const uint8_t hdr[2] = {kTypeByte, static_cast<uint8_t>(mode)};
  if (!writeAll(fd, hdr, sizeof hdr)) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool closeGracefully(int fd) {
  ::shutdown(fd, SHUT_WR);
  bool ok = drainToEof(fd);
  ::close(fd);
  return ok;
}

double percentile(std::vector<int64_t>& v, double p) {
  if (v.empty()) {
    return 0;
  }
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return static_cast<double>(v[std::min(i, v.size() - 1)]) / 1000.0;  // ns -> us
}

// ---- backend ----------------------------------------------------------------------------------

void serveOne(int fd) {
  setTimeouts(fd, 600);
  uint8_t hdr[2];
  if (!readAll(fd, hdr, sizeof hdr) || hdr[0] != kTypeByte) {
    ::close(fd);
    return;
  }
  std::vector<uint8_t> buf(256 * 1024);
  uint64_t total = 0;
  for (;;) {
    ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
    if (r < 0 && errno == EINTR) {
      continue;
    }
    if (r <= 0) {
      break;
    }
    total += static_cast<uint64_t>(r);
    if (hdr[1] == 'E' && !writeAll(fd, buf.data(), static_cast<size_t>(r))) {
      break;
    }
  }
  if (hdr[1] == 'S') {
    uint8_t out[8];
    for (int i = 0; i < 8; ++i) {
      out[i] = static_cast<uint8_t>(total >> (8 * i));
    }
    writeAll(fd, out, sizeof out);
  }
  ::shutdown(fd, SHUT_WR);
  ::close(fd);
}

int runServer(const Args& a) {
  const sockaddr_in addr = parseAddr(a.get("listen", "0.0.0.0:8300"));
  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(lfd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(lfd, 4096) != 0) {
    die(std::string("listen: ") + std::strerror(errno));
  }
  std::fprintf(stderr, "LISTENING\n");
  const long max_seconds = a.num("max-seconds", 3600);
  const int64_t deadline = nowNs() + max_seconds * 1'000'000'000LL;
  while (nowNs() < deadline) {
    pollfd p{lfd, POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) {
      continue;
    }
    int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      continue;
    }
    std::thread(serveOne, fd).detach();
  }
  return 0;
}

// ---- clients ----------------------------------------------------------------------------------

int runBulk(const Args& a) {
  const sockaddr_in to = parseAddr(a.get("addr"));
  const long seconds = a.num("seconds", 5);
  std::vector<uint8_t> chunk(static_cast<size_t>(a.num("chunk", 256 * 1024)));
  RAND_bytes(chunk.data(), chunk.size());
  int fd = dial(to, 'S');
  if (fd < 0) {
    die("bulk: connect failed");
  }
  const int64_t t0 = nowNs();
  const int64_t stop = t0 + seconds * 1'000'000'000LL;
  uint64_t sent = 0;
  while (nowNs() < stop) {
    if (!writeAll(fd, chunk.data(), chunk.size())) {
      die("bulk: write failed");
    }
    sent += chunk.size();
  }
  ::shutdown(fd, SHUT_WR);
  uint8_t reply[8];
  if (!readAll(fd, reply, sizeof reply)) {
    die("bulk: no byte count from the backend");
  }
  const int64_t t1 = nowNs();
  uint64_t got = 0;
  for (int i = 7; i >= 0; --i) {
    got = (got << 8) | reply[i];
  }
  drainToEof(fd);
  ::close(fd);
  const double secs = static_cast<double>(t1 - t0) / 1e9;
  std::printf(
      "{\"test\":\"bulk\",\"sent\":%llu,\"received\":%llu,\"seconds\":%.3f,\"MBps\":%.1f}\n",
      static_cast<unsigned long long>(sent), static_cast<unsigned long long>(got), secs,
      static_cast<double>(got) / 1e6 / secs);
  return got == sent ? 0 : 1;
}

int runPingPong(const Args& a) {
  const sockaddr_in to = parseAddr(a.get("addr"));
  const size_t size = static_cast<size_t>(a.num("size", 1024));
  const long count = a.num("count", 5000);
  const long warmup = a.num("warmup", 200);
  std::vector<uint8_t> out(size, 0x5a);
  std::vector<uint8_t> in(size);
  int fd = dial(to, 'E');
  if (fd < 0) {
    die("pingpong: connect failed");
  }
  std::vector<int64_t> lat;
  lat.reserve(static_cast<size_t>(count));
  for (long i = 0; i < warmup + count; ++i) {
    const int64_t t0 = nowNs();
    if (!writeAll(fd, out.data(), size) || !readAll(fd, in.data(), size)) {
      die("pingpong: exchange " + std::to_string(i) + " failed");
    }
    if (i >= warmup) {
      lat.push_back(nowNs() - t0);
    }
  }
  closeGracefully(fd);
  double mean = 0;
  for (auto v : lat) {
    mean += static_cast<double>(v);
  }
  mean = mean / static_cast<double>(lat.size()) / 1000.0;
  const double p50 = percentile(lat, 50), p99 = percentile(lat, 99);
  const double p999 = percentile(lat, 99.9);
  std::printf(
      "{\"test\":\"pingpong\",\"size\":%zu,\"count\":%ld,\"mean_us\":%.1f,\"p50_us\":%.1f,"
      "\"p99_us\":%.1f,\"p999_us\":%.1f}\n",
      size, count, mean, p50, p99, p999);
  return 0;
}

int runCps(const Args& a) {
  const sockaddr_in to = parseAddr(a.get("addr"));
  const long seconds = a.num("seconds", 5);
  const long conc = std::max(1L, a.num("concurrency", 8));
  const int64_t t0 = nowNs();
  const int64_t stop = t0 + seconds * 1'000'000'000LL;
  std::atomic<uint64_t> ok{0}, failed{0}, failed_connect{0};
  std::vector<std::vector<int64_t>> lats(static_cast<size_t>(conc));
  std::vector<std::thread> threads;
  for (long t = 0; t < conc; ++t) {
    threads.emplace_back([&, t] {
      uint8_t msg[32], back[32];
      std::memset(msg, 0x42, sizeof msg);
      for (int i = 0; i < 1'000'000 && nowNs() < stop; ++i) {
        const int64_t s = nowNs();
        int fd = dial(to, 'E');
        if (fd < 0) {
          ++failed_connect;
        }
        bool good = fd >= 0 && writeAll(fd, msg, sizeof msg) && readAll(fd, back, sizeof back);
        if (fd >= 0) {
          good = closeGracefully(fd) && good;
        }
        if (good) {
          ++ok;
          lats[static_cast<size_t>(t)].push_back(nowNs() - s);
        } else {
          ++failed;
        }
      }
    });
  }
  for (auto& th : threads) {
    th.join();
  }
  const double secs = static_cast<double>(nowNs() - t0) / 1e9;
  std::vector<int64_t> all;
  for (auto& l : lats) {
    all.insert(all.end(), l.begin(), l.end());
  }
  const double p50 = percentile(all, 50), p99 = percentile(all, 99);
  std::printf(
      "{\"test\":\"cps\",\"concurrency\":%ld,\"ok\":%llu,\"failed\":%llu,"
      "\"failed_connect\":%llu,\"seconds\":%.3f,\"cps\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n",
      conc, static_cast<unsigned long long>(ok.load()),
      static_cast<unsigned long long>(failed.load()),
      static_cast<unsigned long long>(failed_connect.load()), secs,
      static_cast<double>(ok.load()) / secs, p50 / 1000.0, p99 / 1000.0);
  return failed.load() == 0 ? 0 : 1;
}

int runPaced(const Args& a) {
  const sockaddr_in to = parseAddr(a.get("addr"));
  const size_t size = static_cast<size_t>(a.num("size", 64));
  const long count = a.num("count", 200);
  const long interval_ms = a.num("interval-ms", 10);
  std::vector<uint8_t> out(size, 0x61), in(size);
  int fd = dial(to, 'E');
  if (fd < 0) {
    die("paced: connect failed");
  }
  // One exchange first: the relays' handshake is over and nothing else is in flight.
  if (!writeAll(fd, out.data(), size) || !readAll(fd, in.data(), size)) {
    die("paced: first exchange failed");
  }
  timespec gap{0, 200'000'000};
  nanosleep(&gap, nullptr);
  const double start = wallSeconds();
  for (long i = 0; i < count; ++i) {
    if (!writeAll(fd, out.data(), size) || !readAll(fd, in.data(), size)) {
      die("paced: message " + std::to_string(i) + " failed");
    }
    timespec iv{0, interval_ms * 1'000'000};
    nanosleep(&iv, nullptr);
  }
  const double end = wallSeconds();
  nanosleep(&gap, nullptr);
  closeGracefully(fd);
  std::printf(
      "{\"test\":\"paced\",\"size\":%zu,\"count\":%ld,\"window_start\":%.6f,\"window_end\":%.6f}"
      "\n",
      size, count, start, end);
  return 0;
}

int runIdle(const Args& a) {
  const sockaddr_in to = parseAddr(a.get("addr"));
  const long n = a.num("conns", 100);
  const long hold = a.num("hold-seconds", 30);
  std::vector<int> fds;
  uint8_t msg[16], back[16];
  std::memset(msg, 0x33, sizeof msg);
  for (long i = 0; i < n; ++i) {
    int fd = dial(to, 'E');
    if (fd < 0 || !writeAll(fd, msg, sizeof msg) || !readAll(fd, back, sizeof back)) {
      die("idle: connection " + std::to_string(i) + " failed");
    }
    fds.push_back(fd);
  }
  std::fprintf(stderr, "READY %ld\n", n);
  std::fflush(stderr);
  // Hold until stdin closes (the driver is done measuring) or the bound passes.
  pollfd p{0, POLLIN, 0};
  const int64_t stop = nowNs() + hold * 1'000'000'000LL;
  while (nowNs() < stop) {
    if (::poll(&p, 1, 200) > 0) {
      char c;
      if (::read(0, &c, 1) <= 0) {
        break;
      }
    }
  }
  long clean = 0;
  for (int fd : fds) {
    clean += closeGracefully(fd) ? 1 : 0;
  }
  std::printf("{\"test\":\"idle\",\"conns\":%ld,\"closed_cleanly\":%ld}\n", n, clean);
  return 0;
}

// ---- TLS micro-measure (BoringSSL) ------------------------------------------------------------

std::string sslErrors() {
  std::string out;
  for (uint32_t e = ERR_get_error(); e != 0; e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    out += std::string(out.empty() ? "" : "; ") + buf;
  }
  return out;
}

bssl::UniquePtr<SSL_CTX> makeCtx(bool server, const Args& a) {
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  const std::string who = server ? "server" : "client";
  if (!ctx || SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION) != 1 ||
      SSL_CTX_use_certificate_chain_file(ctx.get(), a.get(who + "-cert").c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx.get(), a.get(who + "-key").c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_load_verify_locations(ctx.get(), a.get("ca").c_str(), nullptr) != 1) {
    die("tls: loading " + who + " credentials: " + sslErrors());
  }
  SSL_CTX_set_verify(ctx.get(),
                     server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER,
                     nullptr);
  SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_TICKET);
  return ctx;
}

// One full mutual-TLS handshake, both ends here, over a BIO pair. Returns false on failure.
bool handshakeOnce(SSL_CTX* cctx, SSL_CTX* sctx, uint16_t version, const std::string& name) {
  bssl::UniquePtr<SSL> c(SSL_new(cctx)), s(SSL_new(sctx));
  BIO *bc = nullptr, *bs = nullptr;
  if (!c || !s || BIO_new_bio_pair(&bc, 0, &bs, 0) != 1) {
    return false;
  }
  SSL_set_bio(c.get(), bc, bc);
  SSL_set_bio(s.get(), bs, bs);
  SSL_set_min_proto_version(c.get(), version);
  SSL_set_max_proto_version(c.get(), version);
  SSL_set_tlsext_host_name(c.get(), name.c_str());
  SSL_set1_host(c.get(), name.c_str());
  SSL_set_connect_state(c.get());
  SSL_set_accept_state(s.get());
  bool cdone = false, sdone = false;
  for (int i = 0; i < 64 && !(cdone && sdone); ++i) {
    if (!cdone) {
      int r = SSL_do_handshake(c.get());
      if (r == 1) {
        cdone = true;
      } else if (SSL_get_error(c.get(), r) != SSL_ERROR_WANT_READ) {
        return false;
      }
    }
    if (!sdone) {
      int r = SSL_do_handshake(s.get());
      if (r == 1) {
        sdone = true;
      } else if (SSL_get_error(s.get(), r) != SSL_ERROR_WANT_READ) {
        return false;
      }
    }
  }
  // TLS 1.3: the server checks the client's certificate in its last flight; read it through.
  return cdone && sdone && SSL_get_verify_result(s.get()) == X509_V_OK &&
         SSL_get_verify_result(c.get()) == X509_V_OK;
}

template <typename F>
double opsPerSecond(double seconds, F&& op, long* done) {
  const int64_t t0 = nowNs();
  const int64_t stop = t0 + static_cast<int64_t>(seconds * 1e9);
  long n = 0;
  while (nowNs() < stop && n < 100'000'000) {
    for (int i = 0; i < 16; ++i) {
      if (!op()) {
        die("tls: operation failed: " + sslErrors());
      }
    }
    n += 16;
  }
  *done = n;
  return static_cast<double>(n) / (static_cast<double>(nowNs() - t0) / 1e9);
}

int runTls(const Args& a) {
  const double seconds = static_cast<double>(a.num("seconds", 3));
  const std::string name = a.get("server-name", "server.dc1.consul");
  bssl::UniquePtr<SSL_CTX> sctx = makeCtx(true, a), cctx = makeCtx(false, a);

  bssl::UniquePtr<BIO> kb(BIO_new_file(a.get("server-key").c_str(), "r"));
  bssl::UniquePtr<EVP_PKEY> pkey(kb ? PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr)
                                    : nullptr);
  if (!pkey || EVP_PKEY_id(pkey.get()) != EVP_PKEY_EC) {
    die("tls: the server key is not an EC key");
  }
  EC_KEY* ec = EVP_PKEY_get0_EC_KEY(pkey.get());
  uint8_t digest[32];
  RAND_bytes(digest, sizeof digest);
  std::vector<uint8_t> sig(ECDSA_size(ec));
  unsigned sig_len = 0;
  long n_sign = 0, n_verify = 0, n_x = 0, n13 = 0, n12 = 0;
  const double sign = opsPerSecond(
      seconds, [&] { return ECDSA_sign(0, digest, sizeof digest, sig.data(), &sig_len, ec) == 1; },
      &n_sign);
  const double verify = opsPerSecond(
      seconds, [&] { return ECDSA_verify(0, digest, sizeof digest, sig.data(), sig_len, ec) == 1; },
      &n_verify);
  const double x25519 = opsPerSecond(
      seconds,
      [&] {
        uint8_t pub[32], priv[32], peer_pub[32], peer_priv[32], shared[32];
        X25519_keypair(pub, priv);
        X25519_keypair(peer_pub, peer_priv);
        return X25519(shared, priv, peer_pub) == 1;
      },
      &n_x);
  const double hs13 = opsPerSecond(
      seconds, [&] { return handshakeOnce(cctx.get(), sctx.get(), TLS1_3_VERSION, name); }, &n13);
  const double hs12 = opsPerSecond(
      seconds, [&] { return handshakeOnce(cctx.get(), sctx.get(), TLS1_2_VERSION, name); }, &n12);
  std::printf(
      "{\"test\":\"tls\",\"library\":\"%s\",\"ecdsa_p256_sign_per_s\":%.0f,"
      "\"ecdsa_p256_verify_per_s\":%.0f,\"x25519_pairs_per_s\":%.0f,"
      "\"mtls13_handshakes_per_s\":%.0f,\"mtls12_handshakes_per_s\":%.0f,"
      "\"sign_us\":%.1f,\"verify_us\":%.1f,\"x25519_pair_us\":%.1f,\"mtls13_us\":%.1f,"
      "\"mtls12_us\":%.1f}\n",
      OPENSSL_VERSION_TEXT, sign, verify, x25519, hs13, hs12, 1e6 / sign, 1e6 / verify,
      1e6 / x25519, 1e6 / hs13, 1e6 / hs12);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: bench_rpc_load server|bulk|pingpong|cps|paced|idle|tls --key value ...\n");
    return 2;
  }
  Args a;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (std::strncmp(argv[i], "--", 2) != 0) {
      die(std::string("expected --key value, got ") + argv[i]);
    }
    a.kv[argv[i] + 2] = argv[i + 1];
  }
  if ((argc - 2) % 2 != 0) {
    die("every option takes a value");
  }
  const std::string cmd = argv[1];
  if (cmd == "server") {
    return runServer(a);
  }
  if (cmd == "bulk") {
    return runBulk(a);
  }
  if (cmd == "pingpong") {
    return runPingPong(a);
  }
  if (cmd == "cps") {
    return runCps(a);
  }
  if (cmd == "paced") {
    return runPaced(a);
  }
  if (cmd == "idle") {
    return runIdle(a);
  }
  if (cmd == "tls") {
    return runTls(a);
  }
  die("unknown command " + cmd);
}
