// One-way UDP latency load tool for the end-to-end benchmark (issue 5, docs/benchmarks.md).
//
//   bench_udp_latency send --bind IP:PORT --to IP:PORT --rate PPS --count N [--warmup W]
//                          [--size BYTES]
//   bench_udp_latency recv --bind IP:PORT --expect N [--warmup W] [--idle-ms MS]
//                          [--max-seconds S] [--label NAME]
//
// The sender binds the "agent" port and sends count + warmup datagrams at a fixed rate (absolute
// deadlines on CLOCK_MONOTONIC; a late datagram goes out at once, the schedule does not slip).
// Each payload is a valid memberlist user message (first byte 8, then opaque bytes), so a proxy
// that drops what an agent would reject lets it through; inside it carry a magic, a sequence
// number and the CLOCK_MONOTONIC time taken right before sendto(). The receiver records, per
// datagram, its own CLOCK_MONOTONIC time when recvmmsg() returned minus the send time: the
// one-way latency as an application sees it (network namespaces share the clock). Datagrams with
// sequence < warmup count for drops but not for latency. Both print one JSON line on stdout; the
// receiver prints "ready" on stderr once it is bound. Every loop is bounded in count and time.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr uint8_t kUserMsg = 8;  // memberlist userMsg: the agent hands the rest to its delegate
constexpr uint64_t kMagic = 0x3153544e45425343ULL;  // "CSBENTS1" little-endian
constexpr size_t kHeaderBytes = 1 + 8 + 8 + 8;      // type, magic, sequence, send time
constexpr size_t kMaxSize = 65000;
constexpr unsigned kBatch = 64;

int64_t nowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

timespec toTimespec(int64_t ns) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / 1000000000);
  ts.tv_nsec = static_cast<long>(ns % 1000000000);
  return ts;
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench_udp_latency: %s\n", what.c_str());
  std::exit(2);
}

[[noreturn]] void dieErrno(const std::string& what) {
  die(what + ": " + std::strerror(errno));
}

sockaddr_in parseAddr(const std::string& s) {
  const auto colon = s.rfind(':');
  if (colon == std::string::npos) {
    die("address needs IP:PORT: " + s);
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  if (inet_pton(AF_INET, s.substr(0, colon).c_str(), &a.sin_addr) != 1) {
    die("bad IPv4 address: " + s);
  }
  const long port = std::strtol(s.c_str() + colon + 1, nullptr, 10);
  if (port <= 0 || port > 65535) {
    die("bad port: " + s);
  }
  a.sin_port = htons(static_cast<uint16_t>(port));
  return a;
}

struct Args {
  std::string mode;
  std::string bind;
  std::string to;
  std::string label = "run";
  uint64_t rate = 1000;
  uint64_t count = 1000;
  uint64_t warmup = 0;
  uint64_t expect = 0;
  uint64_t size = 1400;
  uint64_t idle_ms = 1000;
  uint64_t max_seconds = 60;
};

uint64_t parseNumber(const char* flag, const char* v) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long n = std::strtoull(v, &end, 10);
  if (errno != 0 || end == v || *end != '\0') {
    die(std::string("bad number for ") + flag + ": " + v);
  }
  return n;
}

Args parseArgs(int argc, char** argv) {
  if (argc < 2) {
    die("usage: bench_udp_latency send|recv [options] (see the top of udp_latency.cc)");
  }
  Args a;
  a.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (i + 1 >= argc) {
      die("missing value for " + std::string(flag));
    }
    const char* v = argv[++i];
    if (flag == "--bind") {
      a.bind = v;
    } else if (flag == "--to") {
      a.to = v;
    } else if (flag == "--label") {
      a.label = v;
    } else if (flag == "--rate") {
      a.rate = parseNumber(argv[i - 1], v);
    } else if (flag == "--count") {
      a.count = parseNumber(argv[i - 1], v);
    } else if (flag == "--warmup") {
      a.warmup = parseNumber(argv[i - 1], v);
    } else if (flag == "--expect") {
      a.expect = parseNumber(argv[i - 1], v);
    } else if (flag == "--size") {
      a.size = parseNumber(argv[i - 1], v);
    } else if (flag == "--idle-ms") {
      a.idle_ms = parseNumber(argv[i - 1], v);
    } else if (flag == "--max-seconds") {
      a.max_seconds = parseNumber(argv[i - 1], v);
    } else {
      die("unknown option " + std::string(flag));
    }
  }
  if (a.bind.empty()) {
    die("--bind IP:PORT is required");
  }
  return a;
}

int boundSocket(const std::string& bind_to) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    dieErrno("socket");
  }
  const int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
    dieErrno("SO_REUSEADDR");
  }
  // What memberlist asks for on its UDP listener (capped by net.core.rmem_max).
  const int rcvbuf = 2 << 20;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) != 0) {
    dieErrno("SO_RCVBUF");
  }
  const sockaddr_in a = parseAddr(bind_to);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
    dieErrno("bind " + bind_to);
  }
  return fd;
}

void put64(uint8_t* p, uint64_t v) {
  std::memcpy(p, &v, sizeof v);
}

uint64_t get64(const uint8_t* p) {
  uint64_t v = 0;
  std::memcpy(&v, p, sizeof v);
  return v;
}

int runSender(const Args& a) {
  if (a.to.empty()) {
    die("send needs --to IP:PORT");
  }
  if (a.rate == 0 || a.rate > 10000000) {
    die("--rate must be 1..10000000");
  }
  if (a.size < kHeaderBytes || a.size > kMaxSize) {
    die("--size must be " + std::to_string(kHeaderBytes) + ".." + std::to_string(kMaxSize));
  }
  const uint64_t total = a.count + a.warmup;
  if (total == 0 || total > 100000000) {
    die("--count + --warmup must be 1..100000000");
  }
  // The default 50 us timer slack would blur a 50 us schedule.
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  const int fd = boundSocket(a.bind);
  const sockaddr_in to = parseAddr(a.to);
  std::vector<uint8_t> payload(a.size);
  for (size_t i = 0; i < payload.size(); ++i) {
    payload[i] = static_cast<uint8_t>(i * 131 + 7);  // opaque user-message bytes
  }
  payload[0] = kUserMsg;
  put64(payload.data() + 1, kMagic);

  const int64_t interval = static_cast<int64_t>(1000000000 / a.rate);
  const int64_t start = nowNs() + 1000000;  // first datagram 1 ms from now
  uint64_t sent = 0;
  uint64_t errors = 0;
  uint64_t late = 0;
  int64_t max_late = 0;
  int first_errno = 0;
  for (uint64_t seq = 0; seq < total; ++seq) {
    const int64_t due = start + static_cast<int64_t>(seq) * interval;
    int64_t now = nowNs();
    if (now < due) {
      const timespec ts = toTimespec(due);
      while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
      }
      now = nowNs();
    }
    const int64_t lateness = now - due;
    if (lateness > interval) {
      ++late;
    }
    max_late = std::max(max_late, lateness);
    put64(payload.data() + 9, seq);
    put64(payload.data() + 17, static_cast<uint64_t>(nowNs()));
    const ssize_t n = sendto(fd, payload.data(), payload.size(), 0,
                             reinterpret_cast<const sockaddr*>(&to), sizeof to);
    if (n == static_cast<ssize_t>(payload.size())) {
      ++sent;
    } else {
      if (errors == 0) {
        first_errno = errno;
      }
      ++errors;
    }
  }
  const double elapsed = static_cast<double>(nowNs() - start) / 1e9;
  std::printf("{\"mode\":\"send\",\"sent\":%" PRIu64 ",\"send_errors\":%" PRIu64
              ",\"first_error\":\"%s\",\"late_over_one_interval\":%" PRIu64
              ",\"max_late_us\":%.1f,\"elapsed_s\":%.3f,\"achieved_pps\":%.0f}\n",
              sent, errors, errors != 0 ? std::strerror(first_errno) : "", late,
              static_cast<double>(max_late) / 1e3, elapsed,
              elapsed > 0 ? static_cast<double>(sent) / elapsed : 0.0);
  close(fd);
  return 0;
}

double percentileUs(const std::vector<int64_t>& sorted, double p) {
  if (sorted.empty()) {
    return 0.0;
  }
  // Nearest rank.
  size_t rank = static_cast<size_t>(p / 100.0 * static_cast<double>(sorted.size()) + 0.999999);
  rank = std::clamp<size_t>(rank, 1, sorted.size());
  return static_cast<double>(sorted[rank - 1]) / 1e3;
}

int runReceiver(const Args& a) {
  if (a.expect == 0 || a.expect > 100000000) {
    die("recv needs --expect 1..100000000");
  }
  if (a.warmup >= a.expect) {
    die("--warmup must be below --expect");
  }
  const int fd = boundSocket(a.bind);
  const timeval tick{0, 100000};  // wake at least every 100 ms to check the time limits
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tick, sizeof tick) != 0) {
    dieErrno("SO_RCVTIMEO");
  }
  std::fprintf(stderr, "ready\n");
  std::fflush(stderr);

  std::vector<uint8_t> seen(a.expect, 0);
  std::vector<int64_t> latencies;
  latencies.reserve(a.expect - a.warmup);
  static uint8_t buffers[kBatch][2048];
  mmsghdr msgs[kBatch];
  iovec iovs[kBatch];
  uint64_t unique = 0;
  uint64_t duplicates = 0;
  uint64_t reordered = 0;
  uint64_t foreign = 0;
  uint64_t highest = 0;
  bool any = false;
  const int64_t deadline = nowNs() + static_cast<int64_t>(a.max_seconds) * 1000000000;
  const int64_t idle = static_cast<int64_t>(a.idle_ms) * 1000000;
  int64_t last_rx = 0;
  while (unique < a.expect) {
    for (unsigned i = 0; i < kBatch; ++i) {
      iovs[i] = {buffers[i], sizeof buffers[i]};
      msgs[i] = mmsghdr{};
      msgs[i].msg_hdr.msg_iov = &iovs[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
    }
    const int n = recvmmsg(fd, msgs, kBatch, MSG_WAITFORONE, nullptr);
    const int64_t rx = nowNs();
    if (n <= 0) {
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        dieErrno("recvmmsg");
      }
      if (rx > deadline || (any && rx - last_rx > idle)) {
        break;
      }
      continue;
    }
    last_rx = rx;
    for (int i = 0; i < n; ++i) {
      const uint8_t* p = buffers[i];
      if (msgs[i].msg_len < kHeaderBytes || p[0] != kUserMsg || get64(p + 1) != kMagic) {
        ++foreign;
        continue;
      }
      const uint64_t seq = get64(p + 9);
      if (seq >= a.expect) {
        ++foreign;
        continue;
      }
      if (seen[seq] != 0) {
        ++duplicates;
        continue;
      }
      seen[seq] = 1;
      ++unique;
      if (any && seq < highest) {
        ++reordered;
      }
      highest = std::max(highest, seq);
      any = true;
      if (seq >= a.warmup) {
        latencies.push_back(rx - static_cast<int64_t>(get64(p + 17)));
      }
    }
    if (rx > deadline) {
      break;
    }
  }
  std::sort(latencies.begin(), latencies.end());
  double mean = 0;
  for (int64_t l : latencies) {
    mean += static_cast<double>(l);
  }
  mean = latencies.empty() ? 0.0 : mean / static_cast<double>(latencies.size()) / 1e3;
  std::printf("{\"mode\":\"recv\",\"label\":\"%s\",\"expected\":%" PRIu64 ",\"received\":%" PRIu64
              ",\"drops\":%" PRIu64 ",\"duplicates\":%" PRIu64 ",\"reordered\":%" PRIu64
              ",\"foreign\":%" PRIu64
              ",\"samples\":%zu,\"p50_us\":%.1f,\"p90_us\":%.1f"
              ",\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f,\"mean_us\":%.1f}\n",
              a.label.c_str(), a.expect, unique, a.expect - unique, duplicates, reordered, foreign,
              latencies.size(), percentileUs(latencies, 50), percentileUs(latencies, 90),
              percentileUs(latencies, 99), percentileUs(latencies, 99.9),
              latencies.empty() ? 0.0 : static_cast<double>(latencies.back()) / 1e3, mean);
  close(fd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parseArgs(argc, argv);
  if (a.mode == "send") {
    return runSender(a);
  }
  if (a.mode == "recv") {
    return runReceiver(a);
  }
  die("mode must be send or recv");
}
