#!/usr/bin/env python3
"""End-to-end RPC TLS relay benchmark of issue 6 (run through tests/bench/e2e_rpc.sh).

Topology, two hosts in network namespaces on one bridge (harness.Lab), host c (client) and
host s (server):

  client (c) -> relay A (c: plaintext in, TLS out) -> relay B (s: TLS in, plaintext out)
             -> backend (s, bench_rpc_load server on 0.0.0.0:8300)

Relay pairs, all with the same Consul-shaped ECDSA P-256 certificates (certs-example/
make-certs.sh), mutual TLS, the server name server.dc1.consul verified, no session resumption:

  direct     no relays: client -> s:8300 (reference)
  sidecrypt  A = sidecrypt client role, B = sidecrypt server role (verify_incoming), both
             capturing port 8300 with TPROXY; the client dials s:8300 unchanged
  sidecrypt-l  the same sidecrypt pair with explicit listeners instead of interception, in the
             other relays' topology (A 127.0.0.1:9000 -> B s:9443 -> 127.0.0.1:8300), no rules
  stunnel    stunnel4 pair (A 127.0.0.1:9000 -> B s:9443), sessionResume = no
  haproxy    haproxy pair in TCP mode, nbthread 1, no-ssl-reuse
  socat      socat OPENSSL pair (one forked process per connection)
  go         Go crypto/tls pair (tests/peers/tlspeer relay, built offline): B requires client
             certificates; A keeps no session cache (Go's client resumes only with one)

A pair name takes options after colons (issue 18's comparison): `sidecrypt-l:loops=2` ([runtime]
loops in both configs), `sidecrypt-l:noresume` (tls.session_resumption = false on both: every
handshake full; without it A resumes with B after the first connection), `haproxy:nbthread=2:
reuse` (haproxy's default session reuse instead of no-ssl-reuse), `go:resume` (A keeps a session
cache), and `:pin` on any relay pair (A on CPU 0, B on CPU 1 with taskset; the client and backend
float), `:alt` on a sidecrypt pair (run --sidecrypt-alt instead of --sidecrypt: two builds side by
side in one run, round-robin). For sidecrypt and go the handshakes of A and B are counted full vs resumed
(sidecrypt's outbound/inbound_handshakes_full|resumed over the cps test; go's over the run).

Per pair: RSS of A and B with 100 idle connections (after one echo each) against the fresh
relays; bytes on the wire (tcpdump on the bridge, A -> B TCP payload) per paced 64-byte message;
1 KiB ping-pong p50/p99; bulk MB/s over one stream; new connections per second with a full
handshake each. Every connection starts with the Consul type byte 0x00. Prints Markdown on
stdout; --json keeps the raw numbers. Needs root. Every wait is bounded; the run stops starting
new measurements after --budget seconds.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import time

sys.dont_write_bytecode = True
from bench_common import ROOT, harness, machine  # noqa: E402

PAIRS = ("direct", "sidecrypt", "sidecrypt-l", "stunnel", "haproxy", "socat", "go")
OPTIONS = {"sidecrypt": ("loops", "noresume", "pin", "alt"),
           "sidecrypt-l": ("loops", "noresume", "pin", "alt"),
           "stunnel": ("pin",), "haproxy": ("nbthread", "reuse", "pin"), "socat": ("pin",),
           "go": ("resume", "pin"), "direct": ()}


def parse_pair(spec):
    """'haproxy:nbthread=2:reuse' -> ('haproxy', {'nbthread': '2', 'reuse': True})."""
    base, *rest = spec.split(":")
    if base not in OPTIONS:
        raise SystemExit("unknown pair %s" % base)
    opts = {}
    for o in rest:
        k, _, v = o.partition("=")
        if k not in OPTIONS[base]:
            raise SystemExit("pair %s takes no option %s (it takes %s)" % (
                base, k, ", ".join(OPTIONS[base]) or "none"))
        opts[k] = v if v else True
    return base, opts
BACKEND_PORT = 8300
A_PORT = 9000   # relay A's plaintext listener (127.0.0.1 in c), for the non-TPROXY pairs
B_PORT = 9443   # relay B's TLS listener on s's address, for the non-TPROXY pairs
SERVER_NAME = "server.dc1.consul"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", required=True, help="build dir with sidecrypt and bench_rpc_load")
    ap.add_argument("--sidecrypt", help="sidecrypt binary (default: BUILD/sidecrypt)")
    ap.add_argument("--pairs", default=",".join(PAIRS))
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds of bulk, ping-pong and cps per pair (median reported)")
    ap.add_argument("--seconds", type=int, default=4, help="seconds per bulk / cps round")
    ap.add_argument("--pingpong", type=int, default=5000, help="1 KiB exchanges per round")
    ap.add_argument("--concurrency", type=int, default=8, help="cps client threads")
    ap.add_argument("--idle", type=int, default=100, help="idle connections for the RSS test")
    ap.add_argument("--paced", type=int, default=200, help="paced 64-byte messages")
    ap.add_argument("--ignore-sigpipe", action="store_true",
                    help="start sidecrypt with SIGPIPE ignored (inherited across exec); a "
                         "workaround while sidecrypt itself does not ignore it")
    ap.add_argument("--keep-time-wait", action="store_true",
                    help="leave host s's TIME_WAIT sockets on (by default the run sets "
                         "net.ipv4.tcp_max_tw_buckets=0 there: with sidecrypt's TPROXY rules a "
                         "new connection that reuses a 4-tuple still in TIME_WAIT on s hangs, "
                         "which stalls the new-connections test; see docs/benchmarks.md)")
    ap.add_argument("--budget", type=float, default=1500.0)
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, pcaps)")
    ap.add_argument("--sidecrypt-alt", help="second sidecrypt binary, for the pairs with :alt")
    ap.add_argument("--cps-only", action="store_true",
                    help="only the new-connections test (no idle RSS, wire bytes, ping-pong, "
                    "bulk)")
    ap.add_argument("--perf", metavar="DIR",
                    help="perf record -g each relay (A and B apart) during the cps test into "
                    "DIR/<pair>-r<round>-<A|B>.data (perf's sampling adds to the CPU measured); "
                    "tests/bench/perf_split.py sorts the samples into cost classes")
    ap.add_argument("--perf-args", default="record -q -g -F 999",
                    help="the perf command with --perf (e.g. 'record -q --call-graph "
                    "dwarf,16384 -F 499', or 'trace -s' for system call counts)")
    return ap.parse_args()


def status_kb(pid, keys=("VmRSS", "VmHWM")):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k = line.split(":")[0]
                if k in keys:
                    out[k] = int(line.split()[1])
    except OSError:  # gone (a socat child that just finished)
        pass
    return out


def pss_kb(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid):
    """pid and all its descendants (socat forks one child per connection)."""
    out, todo = [], [pid]
    for _ in range(10000):
        if not todo:
            break
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir("/proc/%d/task" % p):
                with open("/proc/%d/task/%s/children" % (p, t)) as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def memory(pid):
    pids = tree(pid)
    return {"procs": len(pids), "rss_kb": sum(status_kb(p).get("VmRSS", 0) for p in pids),
            "pss_kb": sum(pss_kb(p) for p in pids), "hwm_kb": status_kb(pid).get("VmHWM", 0)}


def pcap_frames(path):
    """[(time, src, dst, dport, frame_len, tcp_payload_len)] of IPv4 TCP frames (stdlib)."""
    with open(path, "rb") as f:
        data = f.read()
    out = []
    if len(data) < 24:
        return out
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xa1b2c3d4, 0xa1b23c4d) else ">"
    nano = magic in (0xa1b23c4d, 0x4d3cb2a1)
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, incl, orig = struct.unpack(endian + "IIII", data[pos:pos + 16])
        frame = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        if len(frame) < 34 or struct.unpack(">H", frame[12:14])[0] != 0x0800:
            continue
        ip = frame[14:]
        ihl, total = (ip[0] & 0x0F) * 4, struct.unpack(">H", ip[2:4])[0]
        if ip[9] != 6:
            continue
        tcp = ip[ihl:total]
        off = (tcp[12] >> 4) * 4
        t = sec + frac / (1e9 if nano else 1e6)
        out.append((t, ".".join(map(str, ip[12:16])), ".".join(map(str, ip[16:20])),
                    struct.unpack(">H", tcp[2:4])[0], orig, len(tcp) - off))
    return out


class Bench:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.sidecrypt = os.path.abspath(args.sidecrypt or os.path.join(self.build, "sidecrypt"))
        self.sidecrypt_alt = os.path.abspath(args.sidecrypt_alt) if args.sidecrypt_alt else None
        self.tool = os.path.join(self.build, "tests", "bench", "bench_rpc_load")
        self.tlspeer = None  # built on first use of the go pair
        self.loops_ok = None
        for p in (self.sidecrypt, self.tool) + ((self.sidecrypt_alt,) if self.sidecrypt_alt else ()):
            if not os.access(p, os.X_OK):
                raise SystemExit("missing %s: build the targets sidecrypt and bench_rpc_load" % p)
        os.environ["SIDECRYPT_BIN"] = self.sidecrypt
        self.t0 = time.monotonic()
        self.w = harness.Workdir()
        self.seq = 0
        self.results = {"machine": machine(), "pairs": {}, "notes": [],
                        "loadavg_start": os.getloadavg()}
        self.lab = None
        # SCHED_FIFO (chrt) was tried and made every pair slower (p50 ~480 us): the veth
        # packet path runs in ksoftirqd, which real-time tasks starve. Normal scheduling only.
        self.rt = []

    def over_budget(self):
        return time.monotonic() - self.t0 > self.args.budget

    def log(self, name):
        self.seq += 1
        return os.path.join(self.w.path, "%02d-%s.log" % (self.seq, name))

    # --- setup ------------------------------------------------------------------------------

    def certs(self):
        d = os.path.join(self.w.path, "certs")
        r = subprocess.run(["bash", os.path.join(ROOT, "certs-example", "make-certs.sh"), d],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise SystemExit("make-certs.sh failed: " + r.stderr)
        c = lambda n: os.path.join(d, n)
        self.ca = c("consul-agent-ca.pem")
        self.srv = (c("dc1-server-consul-0.pem"), c("dc1-server-consul-0-key.pem"))
        self.cli = (c("dc1-client-consul-0.pem"), c("dc1-client-consul-0-key.pem"))
        for name, (crt, key) in (("server", self.srv), ("client", self.cli)):
            with open(c(name + "-combined.pem"), "w") as out:  # haproxy's crt: cert + key
                out.write(harness.read(crt) + harness.read(key))
        self.srv_combined, self.cli_combined = c("server-combined.pem"), c("client-combined.pem")

    def setup(self):
        self.certs()
        self.lab = harness.Lab(["c", "s"])
        for h in ("c", "s"):
            # Wide, for the connection tests, but above every fixed port of the relays
            # (sidecrypt's 15001/15006 included): an outgoing connection lingering in
            # FIN_WAIT2 on a listener's port makes the next relay's bind fail.
            self.lab.run(h, "sysctl", "-qw", "net.ipv4.ip_local_port_range=20000 65000")
        if not self.args.keep_time_wait:
            self.lab.run("s", "sysctl", "-qw", "net.ipv4.tcp_max_tw_buckets=0")
            self.results["notes"].append(
                "host s ran with net.ipv4.tcp_max_tw_buckets=0 (no TIME_WAIT sockets, all "
                "pairs): a SYN reusing a 4-tuple in TIME_WAIT bypasses sidecrypt's tproxy rule "
                "and hangs (see the issue 6 findings)")
        self.sip, self.cip = self.lab.ip("s"), self.lab.ip("c")
        self.backend = self.lab.spawn("s", self.rt + [self.tool, "server", "--listen",
                                            "0.0.0.0:%d" % BACKEND_PORT, "--max-seconds",
                                            str(int(self.args.budget) + 600)],
                                      self.log("backend"))
        harness.wait_for(lambda: "LISTENING" in harness.read(self.backend.log_path), 10,
                         what="backend listening")

    # --- relays -----------------------------------------------------------------------------

    def sidecrypt_cfg(self, host, server, listeners=False, opts=None):
        opts = opts or {}
        crt, key = self.srv if server else self.cli
        tls = {"ca_file": self.ca, "cert_file": crt, "key_file": key,
               "verify_outgoing": True, "verify_server_hostname": True}
        if opts.get("noresume"):
            tls["session_resumption"] = False
        runtime = "" if "loops" not in opts else "[runtime]\nloops = %d\n" % int(opts["loops"])
        if server:
            # Every benchmark connection comes from host c: lift Consul's per-IP limit (100) so
            # the 100 idle connections plus a closing one from an earlier test all fit.
            tls.update(verify_incoming=True, rpc_max_conns_per_client=1000)
        data_dir = os.path.join(self.w.path, "data-" + host)
        if listeners:
            listen, upstream = (("%s:%d" % (self.sip, B_PORT), "127.0.0.1:%d" % BACKEND_PORT)
                                if server else
                                ("127.0.0.1:%d" % A_PORT, "%s:%d" % (self.sip, B_PORT)))
            body = harness.rpc_proxy_toml(
                data_dir=data_dir, server=server, tls=tls, log_level="info",
                listeners=[{"listen": listen, "upstream": upstream,
                            "direction": "inbound" if server else "outbound"}])
            return self.w.file("sidecrypt-l-%s.toml" % host, body + runtime)
        body = harness.rpc_proxy_toml(data_dir=data_dir, server=server, tls=tls,
                                      ports=[(BACKEND_PORT, "rpc")], log_level="info")
        return self.w.file("sidecrypt-%s.toml" % host, body + runtime)

    def loops_supported(self):
        if self.loops_ok is None:
            cfg = self.sidecrypt_cfg("probe", True, True, {"loops": 2})
            r = subprocess.run([self.sidecrypt, "check-config", cfg], capture_output=True,
                               text=True, timeout=30)
            self.loops_ok = r.returncode == 0
        return self.loops_ok

    def go_peer(self):
        if self.tlspeer is None:
            out = os.path.join(self.build, "peers")
            r = subprocess.run(["bash", os.path.join(ROOT, "tests", "peers", "build.sh"), out],
                               capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                raise RuntimeError("building tlspeer failed: " + r.stderr[-2000:])
            self.tlspeer = os.path.join(out, "tlspeer")
        return self.tlspeer

    def spawn(self, host, argv, name, ignore_sigpipe=False, cpu=None):
        log = self.log(name)
        f = open(log, "w")
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        p = subprocess.Popen(["ip", "netns", "exec", self.lab.ns(host)] + pin + self.rt + argv,
                             stdout=f, stderr=subprocess.STDOUT,
                             restore_signals=not ignore_sigpipe)
        p.log_path, p.log_file = log, f
        self.lab.procs.append(p)
        return p

    def start(self, spec):
        """Starts relay A and B for the pair `spec`; returns ({"A": proc, "B": proc}, client
        target)."""
        pair, opts = parse_pair(spec)
        if pair == "direct":
            return {}, "%s:%d" % (self.sip, BACKEND_PORT)
        cpu_a, cpu_b = (0, 1) if opts.get("pin") else (None, None)
        if "loops" in opts and not self.loops_supported():
            raise RuntimeError("this sidecrypt has no [runtime] loops")
        a_target = "127.0.0.1:%d" % A_PORT
        binary = self.sidecrypt
        if opts.get("alt"):
            if not self.sidecrypt_alt:
                raise SystemExit("pair %s needs --sidecrypt-alt" % spec)
            binary = self.sidecrypt_alt
        if pair == "sidecrypt":
            ign = self.args.ignore_sigpipe
            procs = {"B": self.spawn("s", [binary, "run", "-c",
                                           self.sidecrypt_cfg("s", True, False, opts)],
                                     "sidecrypt-B", ign, cpu_b),
                     "A": self.spawn("c", [binary, "run", "-c",
                                           self.sidecrypt_cfg("c", False, False, opts)],
                                     "sidecrypt-A", ign, cpu_a)}
            for p in procs.values():
                harness.wait_for(lambda p=p: "started:" in harness.read(p.log_path) or
                                 p.poll() is not None, 15, what="sidecrypt started")
            a_target = "%s:%d" % (self.sip, BACKEND_PORT)  # captured by TPROXY in c
        elif pair == "sidecrypt-l":
            ign = self.args.ignore_sigpipe
            procs = {"B": self.spawn("s", [binary, "run", "-c",
                                           self.sidecrypt_cfg("s", True, True, opts)], "scl-B",
                                     ign, cpu_b),
                     "A": self.spawn("c", [binary, "run", "-c",
                                           self.sidecrypt_cfg("c", False, True, opts)], "scl-A",
                                     ign, cpu_a)}
            for p in procs.values():
                harness.wait_for(lambda p=p: "started:" in harness.read(p.log_path) or
                                 p.poll() is not None, 15, what="sidecrypt started")
        elif pair == "stunnel":
            common = ["foreground = yes", "pid =", "debug = 3", "sessionResume = no",
                      "ciphersuites = TLS_AES_128_GCM_SHA256", "verifyChain = yes",
                      "CAfile = %s" % self.ca]
            a = common + ["[a]", "client = yes", "accept = %s" % a_target,
                          "connect = %s:%d" % (self.sip, B_PORT), "cert = %s" % self.cli[0],
                          "key = %s" % self.cli[1], "checkHost = %s" % SERVER_NAME,
                          "sni = %s" % SERVER_NAME]
            b = common + ["[b]", "accept = %s:%d" % (self.sip, B_PORT),
                          "connect = 127.0.0.1:%d" % BACKEND_PORT, "cert = %s" % self.srv[0],
                          "key = %s" % self.srv[1]]
            procs = {"B": self.spawn("s", ["stunnel", self.w.file("stunnel-b.conf",
                                                                  "\n".join(b) + "\n")],
                                     "stunnel-B", cpu=cpu_b),
                     "A": self.spawn("c", ["stunnel", self.w.file("stunnel-a.conf",
                                                                  "\n".join(a) + "\n")],
                                     "stunnel-A", cpu=cpu_a)}
        elif pair == "haproxy":
            reuse = "" if opts.get("reuse") else " no-ssl-reuse"
            g = ["global", "  nbthread %d" % int(opts.get("nbthread", 1)), "  maxconn 4000",
                 "  ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256",
                 "  ssl-default-server-ciphersuites TLS_AES_128_GCM_SHA256",
                 "defaults", "  mode tcp", "  timeout connect 5s", "  timeout client 1h",
                 "  timeout server 1h"]
            a = g + ["frontend fa", "  bind %s" % a_target, "  default_backend ba",
                     "backend ba",
                     "  server b %s:%d ssl crt %s ca-file %s verify required verifyhost %s "
                     "sni str(%s)%s" % (self.sip, B_PORT, self.cli_combined, self.ca,
                                        SERVER_NAME, SERVER_NAME, reuse)]
            b = g + ["frontend fb",
                     "  bind %s:%d ssl crt %s ca-file %s verify required" % (
                         self.sip, B_PORT, self.srv_combined, self.ca),
                     "  default_backend bb", "backend bb",
                     "  server agent 127.0.0.1:%d" % BACKEND_PORT]
            procs = {"B": self.spawn("s", ["haproxy", "-db", "-f", self.w.file(
                         "haproxy-b.cfg", "\n".join(b) + "\n")], "haproxy-B", cpu=cpu_b),
                     "A": self.spawn("c", ["haproxy", "-db", "-f", self.w.file(
                         "haproxy-a.cfg", "\n".join(a) + "\n")], "haproxy-A", cpu=cpu_a)}
        elif pair == "socat":
            procs = {
                "B": self.spawn("s", [
                    "socat", "OPENSSL-LISTEN:%d,bind=%s,reuseaddr,fork,backlog=1024,cert=%s,"
                    "key=%s,cafile=%s,verify=1" % (B_PORT, self.sip, self.srv[0], self.srv[1],
                                                   self.ca),
                    "TCP:127.0.0.1:%d,nodelay" % BACKEND_PORT], "socat-B", cpu=cpu_b),
                "A": self.spawn("c", [
                    "socat", "TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork,backlog=1024,nodelay"
                    % A_PORT,
                    "OPENSSL:%s:%d,cert=%s,key=%s,cafile=%s,verify=1,commonname=%s,nodelay"
                    % (self.sip, B_PORT, self.cli[0], self.cli[1], self.ca, SERVER_NAME)],
                    "socat-A", cpu=cpu_a)}
        elif pair == "go":
            peer = self.go_peer()
            common = ["-ca", self.ca, "-lifetime", "%ds" % (int(self.args.budget) + 600)]
            procs = {"B": self.spawn("s", [peer, "relay", "-role", "b", "-listen", "%s:%d" % (
                                         self.sip, B_PORT), "-upstream", "127.0.0.1:%d" %
                                         BACKEND_PORT, "-cert", self.srv[0], "-key", self.srv[1]]
                                     + common, "go-B", cpu=cpu_b),
                     "A": self.spawn("c", [peer, "relay", "-role", "a", "-listen", a_target,
                                           "-upstream", "%s:%d" % (self.sip, B_PORT),
                                           "-server-name", SERVER_NAME, "-cert", self.cli[0],
                                           "-key", self.cli[1], "-session-cache",
                                           "64" if opts.get("resume") else "0"] + common,
                                     "go-A", cpu=cpu_a)}
        else:
            raise SystemExit("unknown pair " + pair)
        deadline = time.monotonic() + 15
        why = "%s relays did not pass one echo within 15 s" % pair
        while time.monotonic() < deadline:  # ready when one echo goes through
            exited = [p for p in procs.values() if p.poll() is not None]
            if exited:
                why = "%s exited:\n%s" % (pair, harness.read(exited[0].log_path)[-3000:])
                break
            r = self.client("pingpong", a_target, "--count", "1", "--warmup", "0", check=False,
                            timeout=10)
            if r is not None:
                return procs, a_target
            time.sleep(0.3)
        self.stop(procs)  # the relay still running must not hold its ports into the next pair
        raise RuntimeError(why)

    def stop(self, procs):
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            p.log_file.close()
        if any(os.path.basename(p.log_path).endswith("sidecrypt-A.log") for p in procs.values()):
            # sidecrypt leaves its rules in place when it stops (fail closed); lift them so the
            # next pair's traffic to port 8300 is not captured or dropped.
            for host in ("c", "s"):
                self.lab.run(host, self.sidecrypt, "rules", "remove", "-c",
                             self.sidecrypt_cfg(host, host == "s"), timeout=30)
        time.sleep(0.5)

    def alive(self, pair, procs):
        for name, p in procs.items():
            if p.poll() is not None:
                rc = p.returncode
                why = ("killed by " + signal.Signals(-rc).name) if rc < 0 else "exit %d" % rc
                raise RuntimeError("%s relay %s died (%s); log tail:\n%s" % (
                    pair, name, why, harness.read(p.log_path)[-1500:]))

    # --- measurements -----------------------------------------------------------------------

    def client(self, cmd, target, *args, check=True, timeout=120):
        r = self.lab.run("c", *self.rt, self.tool, cmd, "--addr", target, *args, check=False,
                         timeout=timeout)
        lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
        if cmd == "cps" and lines:  # failed connections are counted and reported, not fatal
            return json.loads(lines[-1])
        if r.returncode != 0 or not lines:
            if check:
                raise RuntimeError("bench_rpc_load %s failed (rc %d): %s %s" % (
                    cmd, r.returncode, r.stdout[-500:], r.stderr[-1500:]))
            return None
        return json.loads(lines[-1])

    def idle_rss(self, pair, procs, target):
        before = {k: memory(p.pid) for k, p in procs.items()}
        idle = subprocess.Popen(["ip", "netns", "exec", self.lab.ns("c")] + self.rt + [
                                 self.tool, "idle",
                                 "--addr", target, "--conns", str(self.args.idle),
                                 "--hold-seconds", "60"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            line = ""
            while time.monotonic() < deadline and "READY" not in line:
                line = idle.stderr.readline()
                if not line and idle.poll() is not None:
                    raise RuntimeError("idle client failed: " + idle.stderr.read())
            time.sleep(1.0)
            during = {k: memory(p.pid) for k, p in procs.items()}
        finally:
            idle.stdin.close()
            try:
                out = idle.stdout.read()
                idle.wait(60)
            except subprocess.TimeoutExpired:
                idle.kill()
                idle.wait(5)
                out = ""
        res = {}
        for k in procs:
            res[k] = {"before_kb": before[k]["rss_kb"], "idle_kb": during[k]["rss_kb"],
                      "before_pss_kb": before[k]["pss_kb"], "idle_pss_kb": during[k]["pss_kb"],
                      "procs": during[k]["procs"],
                      "per_conn_kb": round((during[k]["rss_kb"] - before[k]["rss_kb"])
                                           / self.args.idle, 1),
                      "per_conn_pss_kb": round((during[k]["pss_kb"] - before[k]["pss_kb"])
                                               / self.args.idle, 1)}
        res["closed"] = out.strip()
        return res

    def paced(self, pair, target):
        pcap = os.path.join(self.w.path, "paced-%s.pcap" % pair)
        dport = BACKEND_PORT if pair.split(":")[0] in ("direct", "sidecrypt") else B_PORT
        cap = self.lab.capture(pcap, "tcp and src host %s and dst host %s and dst port %d"
                               % (self.cip, self.sip, dport))
        try:
            r = self.client("paced", target, "--size", "64", "--count", str(self.args.paced),
                            "--interval-ms", "10")
        finally:
            time.sleep(0.5)
            cap.terminate()
            try:
                cap.wait(5)
            except subprocess.TimeoutExpired:
                cap.kill()
                cap.wait(5)
        frames = [f for f in pcap_frames(pcap)
                  if r["window_start"] - 0.002 <= f[0] <= r["window_end"] + 0.002 and f[5] > 0]
        n = self.args.paced
        payload = sum(f[5] for f in frames)
        return {"messages": n, "segments": len(frames), "payload_bytes": payload,
                "frame_bytes": sum(f[4] for f in frames),
                "payload_per_msg": round(payload / n, 2),
                "frame_per_msg": round(sum(f[4] for f in frames) / n, 2),
                "segments_per_msg": round(len(frames) / n, 3)}

    def cpu_s(self, procs):
        """CPU seconds (user + system, reaped children included) of each relay so far."""
        out = {}
        for k, p in procs.items():
            total = 0
            for pid in tree(p.pid):
                try:
                    with open("/proc/%d/stat" % pid) as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
                except (OSError, IndexError, ValueError):
                    pass
            out[k] = total / os.sysconf("SC_CLK_TCK")
        return out

    def measured(self, procs, fn):
        """Runs fn(); returns its result with the relays' CPU seconds (A + B) while it ran."""
        before = self.cpu_s(procs)
        r = fn()
        after = self.cpu_s(procs)
        r["relay_cpu_s"] = round(sum(after[k] - before[k] for k in after), 3)
        r["relay_cpu_s_each"] = {k: round(after[k] - before[k], 3) for k in after}
        return r

    def perf_start(self, pair, rnd, procs):
        """perf record -g on each relay apart (the cps test only, --perf)."""
        if not self.args.perf:
            return []
        os.makedirs(self.args.perf, exist_ok=True)
        recs = []
        for k, p in procs.items():
            out = os.path.join(self.args.perf, "%s-r%d-%s.data" % (
                pair.replace(":", "_").replace("=", ""), rnd + 1, k))
            recs.append(subprocess.Popen(["perf"] + self.args.perf_args.split()
                                         + ["-o", out, "-p", str(p.pid)],
                                         stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL))
        time.sleep(0.5)  # perf attached before the first connection
        return recs

    @staticmethod
    def perf_stop(recs):
        for r in recs:
            r.send_signal(signal.SIGINT)
        for r in recs:
            try:
                r.wait(60)
            except subprocess.TimeoutExpired:
                r.kill()
                r.wait(5)

    def run_round(self, pair, rnd):
        """One round for one pair on freshly started relays. The first round also measures the
        idle RSS (first, on fresh relays) and the wire bytes."""
        res = self.results["pairs"].setdefault(
            pair, {"rounds": {"pingpong": [], "bulk": [], "cps": []}, "hwm_kb": {}})
        procs, target = self.start(pair)  # stops what it started if it fails
        res["target"] = target
        try:
            if rnd == 0 and not self.args.cps_only:
                if procs:
                    res["idle"] = self.idle_rss(pair, procs, target)
                    self.alive(pair, procs)
                res["paced"] = self.paced(pair, target)
                self.alive(pair, procs)
            rounds = res["rounds"]
            if not self.args.cps_only:
                rounds["pingpong"].append(self.client(
                    "pingpong", target, "--size", "1024", "--count", str(self.args.pingpong),
                    "--warmup", "200"))
                rounds["bulk"].append(self.measured(procs, lambda: self.client(
                    "bulk", target, "--seconds", str(self.args.seconds))))
            counted = pair.split(":")[0] in ("sidecrypt", "sidecrypt-l")
            before = {k: harness.dump_counters(p) for k, p in procs.items()} if counted else {}
            recs = self.perf_start(pair, rnd, procs)
            try:
                rounds["cps"].append(self.measured(procs, lambda: self.client(
                    "cps", target, "--seconds", str(self.args.seconds), "--concurrency",
                    str(self.args.concurrency), timeout=self.args.seconds + 60)))
            finally:
                self.perf_stop(recs)
            if counted:  # which handshakes the cps test made: A's outbound, B's inbound
                after = {k: harness.dump_counters(p) for k, p in procs.items()}
                hs = {}
                for k, d in (("A", "outbound"), ("B", "inbound")):
                    for kind in ("full", "resumed"):
                        name = "%s_handshakes_%s" % (d, kind)
                        hs["%s_%s" % (k, kind)] = (harness.counter(after[k], "rpc", name) -
                                                   harness.counter(before[k], "rpc", name))
                rounds["cps"][-1]["handshakes"] = hs
            self.alive(pair, procs)
            for k, p in procs.items():
                res["hwm_kb"][k] = max(res["hwm_kb"].get(k, 0), memory(p.pid)["hwm_kb"])
        finally:
            self.stop(procs)
            if pair.split(":")[0] == "go":  # tlspeer relay's totals, printed at SIGTERM
                hs = {}
                for k, p in procs.items():
                    lines = [l for l in harness.read(p.log_path).splitlines()
                             if l.startswith("RELAY")]
                    if lines:
                        f = dict(w.split("=", 1) for w in lines[-1].split()[1:])
                        hs["%s_full" % k], hs["%s_resumed" % k] = int(f["full"]), int(f["resumed"])
                res.setdefault("run_handshakes", []).append(hs)

    def summarise(self):
        for pair, res in self.results["pairs"].items():
            rounds = res["rounds"]
            med = lambda k, f: statistics.median(r[f] for r in rounds[k]) if rounds[k] else None
            bulk_cpu = [r["relay_cpu_s"] / (r["received"] / 1e6) for r in rounds["bulk"]]
            cps_cpu = [r["relay_cpu_s"] / r["ok"] for r in rounds["cps"] if r["ok"]]
            cps_each = {k: [r["relay_cpu_s_each"][k] / r["ok"] for r in rounds["cps"]
                            if r["ok"] and k in r.get("relay_cpu_s_each", {})] for k in "AB"}
            res["median"] = {"p50_us": med("pingpong", "p50_us"),
                             "p99_us": med("pingpong", "p99_us"),
                             "MBps": med("bulk", "MBps"), "cps": med("cps", "cps"),
                             "cps_p50_ms": med("cps", "p50_ms"),
                             "cps_p99_ms": med("cps", "p99_ms"),
                             "cps_failed": sum(r["failed"] for r in rounds["cps"]),
                             "cps_attempts": sum(r["failed"] + r["ok"] for r in rounds["cps"]),
                             "bulk_relay_cpu_ms_per_MB": round(1e3 * statistics.median(bulk_cpu),
                                                               3) if bulk_cpu else None,
                             "cps_relay_cpu_ms_per_conn": round(1e3 * statistics.median(cps_cpu),
                                                                3) if cps_cpu else None,
                             "cps_relay_cpu_ms_per_conn_each": {
                                 k: round(1e3 * statistics.median(v), 3)
                                 for k, v in cps_each.items() if v},
                             "cps_relay_cpu_ms_per_conn_rounds": [
                                 round(1e3 * c, 3) for c in cps_cpu]}
            hs = [r["handshakes"] for r in rounds["cps"] if "handshakes" in r]
            hs = hs or res.get("run_handshakes", [])
            if hs:
                res["median"]["handshakes"] = {k: sum(h.get(k, 0) for h in hs)
                                               for k in ("A_full", "A_resumed", "B_full",
                                                         "B_resumed")}
                res["median"]["handshakes_scope"] = ("cps tests" if "handshakes" in
                                                     rounds["cps"][0] else "whole run")

    def micro(self):
        r = subprocess.run([self.tool, "tls", "--ca", self.ca, "--server-cert", self.srv[0],
                            "--server-key", self.srv[1], "--client-cert", self.cli[0],
                            "--client-key", self.cli[1], "--seconds", "3"],
                           capture_output=True, text=True, timeout=120)
        bssl = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else {}
        ossl = {}
        if shutil.which("openssl"):
            o = subprocess.run(["openssl", "speed", "-seconds", "3", "ecdsap256", "ecdhx25519"],
                               capture_output=True, text=True, timeout=120).stdout
            for line in o.splitlines():
                w = line.split()
                if "ecdsa" in line and "nistp256" in line and len(w) >= 7:
                    ossl["ecdsa_p256_sign_per_s"] = float(w[-2])
                    ossl["ecdsa_p256_verify_per_s"] = float(w[-1])
                if "ecdh" in line and "X25519" in line:
                    ossl["x25519_derive_per_s"] = float(w[-1])
            ossl["version"] = subprocess.run(["openssl", "version"], capture_output=True,
                                             text=True).stdout.strip()
        return {"boringssl": bssl, "openssl": ossl}

    def run(self):
        self.setup()
        self.results["micro"] = {} if self.args.cps_only else self.micro()
        pairs = self.args.pairs.split(",")
        # Round-robin: each round starts every pair afresh, so a change in the machine's other
        # load spreads over all pairs instead of biasing one.
        for rnd in range(self.args.repeat):
            for pair in pairs:
                if self.over_budget():
                    self.results["notes"].append("budget reached in round %d before %s"
                                                 % (rnd + 1, pair))
                    break
                if "error" in self.results["pairs"].get(pair, {}):
                    continue
                print("e2e_rpc: round %d %s ..." % (rnd + 1, pair), file=sys.stderr)
                try:
                    self.run_round(pair, rnd)
                except RuntimeError as e:
                    self.results["pairs"].setdefault(pair, {})["error"] = str(e)
                    print("e2e_rpc: %s failed: %s" % (pair, e), file=sys.stderr)
        self.summarise()
        self.results["loadavg_end"] = os.getloadavg()
        return self.results

    def cleanup(self):
        if self.lab:
            self.lab.cleanup()
        if self.args.keep:
            print("e2e_rpc: kept %s" % self.w.path, file=sys.stderr)
        else:
            self.w.cleanup()


def report(res, args):
    m = res["machine"]
    out = ["Machine: %d CPUs (%s), kernel %s. %d round(s), pairs round-robin, bulk/cps %d s "
           "each, cps concurrency %d, %s; medians over the rounds. Load average %s at the start, "
           "%s at the end." % (
               m["nproc"], m["cpu"], m["kernel"], args.repeat, args.seconds, args.concurrency,
               "normal scheduling", "/".join("%.1f" % x for x in res["loadavg_start"]),
               "/".join("%.1f" % x for x in res.get("loadavg_end", ()))), ""]
    if args.cps_only:
        return report_cps(res, out)
    out += ["| pair | bulk MB/s | relay CPU per MB (A+B) | 1 KiB ping-pong p50 / p99 (µs) "
            "| new conns/s | conn latency p50 / p99 (ms) | relay CPU per conn (A+B) "
            "| wire bytes per 64 B msg: TCP payload / frame (segments) |",
            "|---|---|---|---|---|---|---|---|"]
    ms = lambda v: "%.3f ms" % v if v is not None else "—"
    for pair, r in res["pairs"].items():
        if "error" in r:
            out.append("| %s | failed: %s | | | | | | |" % (pair, r["error"].splitlines()[0]))
            continue
        md, pc = r["median"], r["paced"]
        cps = "%.0f" % md["cps"]
        if md["cps_failed"]:
            cps += " (%d of %d failed)" % (md["cps_failed"], md["cps_attempts"])
        out.append("| %s | %.0f | %s | %.0f / %.0f | %s | %.2f / %.2f | %s | %.1f / %.1f (%.2f) |"
                   % (pair, md["MBps"], ms(md["bulk_relay_cpu_ms_per_MB"]) if pair != "direct"
                      else "—", md["p50_us"], md["p99_us"], cps, md["cps_p50_ms"],
                      md["cps_p99_ms"], ms(md["cps_relay_cpu_ms_per_conn"]) if pair != "direct"
                      else "—", pc["payload_per_msg"], pc["frame_per_msg"],
                      pc["segments_per_msg"]))
    out += ["", "Handshakes A made (outbound) and B took (inbound), full / resumed: sidecrypt's "
            "counters over the cps tests; go's totals over the whole run.", "",
            "| pair | A full / resumed | B full / resumed | scope |", "|---|---|---|---|"]
    for pair, r in res["pairs"].items():
        h = r.get("median", {}).get("handshakes")
        if h:
            out.append("| %s | %d / %d | %d / %d | %s |" % (
                pair, h["A_full"], h["A_resumed"], h["B_full"], h["B_resumed"],
                r["median"]["handshakes_scope"]))
    tls = {p: r["median"]["cps"] for p, r in res["pairs"].items()
           if "median" in r and r["median"]["cps"] and not p.startswith(("direct", "sidecrypt"))}
    if tls:
        best = max(tls, key=tls.get)
        out += ["", "New connections/s against the best other TLS relay (%s, %.0f/s):" % (
            best, tls[best]), ""]
        for p, r in res["pairs"].items():
            if p.startswith("sidecrypt") and "median" in r and r["median"]["cps"]:
                out.append("- %s: %.0f/s = **%.2f×**" % (p, r["median"]["cps"],
                                                         r["median"]["cps"] / tls[best]))
    # On a shared machine the wall-clock rate swings with the other load; the relays' CPU per
    # connection (A+B) is what bounds a CPU-bound server: capacity ratio = best other / ours.
    cpu = {p: r["median"]["cps_relay_cpu_ms_per_conn"] for p, r in res["pairs"].items()
           if "median" in r and r["median"].get("cps_relay_cpu_ms_per_conn")}
    other = {p: v for p, v in cpu.items() if not p.startswith(("direct", "sidecrypt"))}
    if other:
        best = min(other, key=other.get)
        out += ["", "Relay CPU per new connection (A+B) against the best other TLS relay (%s, "
                "%.3f ms): connections per CPU-second, ratio:" % (best, other[best]), ""]
        for p, v in cpu.items():
            if p.startswith("sidecrypt"):
                out.append("- %s: %.3f ms = **%.2f×**" % (p, v, other[best] / v))
    out += ["", "| pair | relay | RSS idle (kB) | RSS with %d idle conns (kB) | per conn (kB) "
            "| PSS per conn (kB) | processes | peak RSS over the run (kB) |" % args.idle,
            "|---|---|---|---|---|---|---|---|"]
    for pair, r in res["pairs"].items():
        if "error" in r or "idle" not in r:
            continue
        for k in ("A", "B"):
            i = r["idle"][k]
            out.append("| %s | %s | %d | %d | %.1f | %.1f | %d | %s |" % (
                pair, k, i["before_kb"], i["idle_kb"], i["per_conn_kb"], i["per_conn_pss_kb"],
                i["procs"], r.get("hwm_kb", {}).get(k, "")))
    b, o = res["micro"]["boringssl"], res["micro"]["openssl"]
    if b:
        out += ["", "| crypto (one core) | Debian BoringSSL (OPENSSL_SMALL) | %s |"
                % o.get("version", "OpenSSL"), "|---|---|---|"]
        row = lambda name, bv, ov: out.append("| %s | %s | %s |" % (name, bv, ov))
        us = lambda per_s: "%.1f µs" % (1e6 / per_s) if per_s else "—"
        row("ECDSA P-256 sign", us(b["ecdsa_p256_sign_per_s"]), us(o.get("ecdsa_p256_sign_per_s")))
        row("ECDSA P-256 verify", us(b["ecdsa_p256_verify_per_s"]),
            us(o.get("ecdsa_p256_verify_per_s")))
        row("X25519 (BoringSSL: 2 keygen + 1 derive; openssl speed: 1 derive)",
            us(b["x25519_pairs_per_s"]), us(o.get("x25519_derive_per_s")))
        row("full mutual-TLS 1.3 handshake, both ends in one thread", "%.0f µs (%.0f/s)"
            % (b["mtls13_us"], b["mtls13_handshakes_per_s"]), "—")
        row("full mutual-TLS 1.2 handshake, both ends in one thread", "%.0f µs (%.0f/s)"
            % (b["mtls12_us"], b["mtls12_handshakes_per_s"]), "—")
    for n in res["notes"]:
        out.append("")
        out.append("Note: " + n)
    return "\n".join(out)


def report_cps(res, out):
    """The report of a --cps-only run: new connections and the relays' CPU per connection."""
    out += ["| pair | new conns/s | conn latency p50 / p99 (ms) | relay CPU per conn A+B "
            "(rounds) | A | B | handshakes A / B (full / resumed) |", "|---|---|---|---|---|---|---|"]
    for pair, r in res["pairs"].items():
        if "error" in r:
            out.append("| %s | failed: %s | | | | | |" % (pair, r["error"].splitlines()[0]))
            continue
        md = r["median"]
        each = md.get("cps_relay_cpu_ms_per_conn_each", {})
        h = md.get("handshakes")
        out.append("| %s | %.0f | %.2f / %.2f | %s (%s) | %s | %s | %s |" % (
            pair, md["cps"], md["cps_p50_ms"], md["cps_p99_ms"],
            "%.3f ms" % md["cps_relay_cpu_ms_per_conn"] if md["cps_relay_cpu_ms_per_conn"]
            else "—", ", ".join("%.3f" % c for c in md["cps_relay_cpu_ms_per_conn_rounds"]),
            "%.3f" % each["A"] if "A" in each else "—",
            "%.3f" % each["B"] if "B" in each else "—",
            "%d / %d · %d / %d" % (h["A_full"], h["A_resumed"], h["B_full"], h["B_resumed"])
            if h else "—"))
    for n in res["notes"]:
        out += ["", "Note: " + n]
    return "\n".join(out)


def main():
    args = parse_args()
    if os.geteuid() != 0:
        raise SystemExit("e2e_rpc: needs root (network namespaces, netfilter, tcpdump)")
    bench = Bench(args)
    try:
        res = bench.run()
    finally:
        bench.cleanup()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    print(report(res, args))


if __name__ == "__main__":
    main()
