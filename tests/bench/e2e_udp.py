#!/usr/bin/env python3
"""End-to-end UDP benchmark of issue 5: 1400-byte gossip datagrams from host A to host B
(network namespaces on one bridge, harness.Lab) over three paths, in one run:

  direct     sender A:7001 -> receiver B:7001
  socat      sender -> socat in A -> socat in B -> receiver (plaintext userspace relay, 2 hops)
  sidecrypt  sender A:7946 -> B:7946 unchanged; sidecrypt in A seals (TPROXY capture, raw send
             from A:7946), sidecrypt in B opens and delivers with A's address (2 hops)

at each rate (default 1,000 and 20,000 datagrams/s), once unpinned and once with every process
(sender, receiver, socat, sidecrypt) pinned to CPU 0 with `taskset -c 0`. The three paths take
turns, --repeat rounds of --seconds each; a row shows the median of each percentile over the
rounds. Added latency per hop = (path - direct) / 2, for p50 and p99. sidecrypt's RSS (VmRSS) is read idle, one second after
it started, and at the end of the 20,000/s run. Prints a Markdown report on stdout; --json keeps
the raw numbers. Needs root (namespaces, netfilter). Run from the repository root:

  sudo python3 tests/bench/e2e_udp.py --build /work/build-bench

Every loop is bounded in count and time; the whole run stops after --budget seconds.
"""
import argparse
import json
import os
import signal
import sys
import time

sys.dont_write_bytecode = True
from bench_common import harness, machine  # noqa: E402

GOSSIP_PORT = 7946
DIRECT_PORT = 7001
SOCAT_PORTS = (7100, 7101, 7102, 7103)  # sender, socat A, socat B, receiver
PATHS = ("direct", "socat", "sidecrypt")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build",
                    help="build directory with sidecrypt and tests/bench/bench_udp_latency")
    ap.add_argument("--sidecrypt", help="sidecrypt binary (default: BUILD/sidecrypt)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds per rate; the paths take turns within a round, and the table "
                         "shows the median of each percentile over the rounds")
    ap.add_argument("--seconds", type=float, default=4.0,
                    help="measured seconds per path and rate (after a 0.5 s warm-up)")
    ap.add_argument("--rates", default="1000,20000", help="datagrams per second, comma-separated")
    ap.add_argument("--modes", default="unpinned,pinned", help="unpinned and/or pinned")
    ap.add_argument("--size", type=int, default=1400, help="UDP payload bytes the agent sends")
    ap.add_argument("--budget", type=float, default=540.0,
                    help="stop starting new measurements after this many seconds")
    ap.add_argument("--rt", action="store_true",
                    help="run every benchmark process SCHED_FIFO (chrt -f 50), to shield the "
                         "measurement from other load on a shared machine")
    ap.add_argument("--json", help="also write the raw results here")
    return ap.parse_args()


def rss_kb(pid):
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:", "RssShmem:")):
                    out[line.split(":")[0]] = int(line.split()[1])
    except FileNotFoundError:
        pass
    return out


def cpu_ticks(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (FileNotFoundError, IndexError, ValueError):
        return 0


def udp_counters(lab, host):
    """The Udp line of the host namespace's /proc/net/snmp, as a dict."""
    lines = [l.split() for l in lab.run(host, "cat", "/proc/net/snmp").stdout.splitlines()
             if l.startswith("Udp:")]
    if len(lines) < 2:
        return {}
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:])}


def softnet_dropped():
    """Sum over CPUs of /proc/net/softnet_stat column 2 (backlog queue full: net-wide)."""
    total = 0
    with open("/proc/net/softnet_stat") as f:
        for line in f:
            total += int(line.split()[1], 16)
    return total


def delta(after, before):
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0) != 0}


def last_json(path):
    for line in reversed(harness.read(path).splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("no JSON result in %s:\n%s" % (path, harness.read(path)[-2000:]))


class Bench:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.sidecrypt = os.path.abspath(args.sidecrypt or os.path.join(self.build, "sidecrypt"))
        self.tool = os.path.join(self.build, "tests", "bench", "bench_udp_latency")
        for p in (self.sidecrypt, self.tool):
            if not os.access(p, os.X_OK):
                raise SystemExit("missing %s: build the targets sidecrypt and bench_udp_latency"
                                 % p)
        os.environ["SIDECRYPT_BIN"] = self.sidecrypt
        self.start = time.monotonic()
        self.results = []
        self.rss = {}
        self.counters = {}
        self.w = harness.Workdir()
        self.lab = harness.Lab(["a", "b"])
        self.seq = 0

    def over_budget(self):
        return time.monotonic() - self.start > self.args.budget

    def log(self, name):
        self.seq += 1
        return os.path.join(self.w.path, "%02d-%s.log" % (self.seq, name))

    # --- processes --------------------------------------------------------------------------

    def proxy_config(self, host, key):
        data = os.path.join(self.w.path, "data-" + host)
        body = "\n".join([
            "[agent]", 'profile = "custom"', 'data_dir = "%s"' % data,
            "[gossip]", 'encrypt = "%s"' % key,
            "[intercept]", "install_rules = true", 'drain_time = "0s"',
            "[[intercept.port]]", "port = %d" % GOSSIP_PORT, 'protocol = "gossip"',
            'transport = "udp"', 'name = "bench"',
            "[log]", 'level = "info"', ""])
        return self.w.file("proxy-%s.toml" % host, body)

    def start_sidecrypts(self, pin, key):
        procs = {}
        for host in ("a", "b"):
            cfg = self.proxy_config(host, key)
            procs[host] = self.lab.spawn(host, pin + [self.sidecrypt, "run", "--config", cfg],
                                         self.log("sidecrypt-" + host))
        for host, p in procs.items():
            harness.wait_for(lambda p=p: "started:" in harness.read(p.log_path) or
                             p.poll() is not None, 15, what="sidecrypt started in " + host)
            if p.poll() is not None:
                raise RuntimeError("sidecrypt exited:\n" + harness.read(p.log_path))
            with open("/proc/%d/comm" % p.pid) as f:
                comm = f.read().strip()
            if comm != "sidecrypt":
                raise RuntimeError("pid %d is %r, not sidecrypt" % (p.pid, comm))
        return procs

    def stop(self, procs):
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(10)
            except Exception:  # noqa: BLE001 - bounded: kill after 10 s
                p.kill()
                p.wait(5)

    def start_socats(self, pin):
        b = self.lab.ip("b")
        _, pa, pb, pr = SOCAT_PORTS
        procs = {
            "a": self.lab.spawn("a", pin + [
                "socat", "-u", "UDP4-RECV:%d,bind=127.0.0.1,rcvbuf=2097152" % pa,
                "UDP4-SENDTO:%s:%d" % (b, pb)], self.log("socat-a")),
            "b": self.lab.spawn("b", pin + [
                "socat", "-u", "UDP4-RECV:%d,bind=%s,rcvbuf=2097152" % (pb, b),
                "UDP4-SENDTO:127.0.0.1:%d" % pr], self.log("socat-b")),
        }
        time.sleep(0.3)
        for host, p in procs.items():
            if p.poll() is not None:
                raise RuntimeError("socat in %s exited:\n%s" % (host, harness.read(p.log_path)))
        return procs

    # --- one measurement --------------------------------------------------------------------

    def endpoints(self, path):
        a, b = self.lab.ip("a"), self.lab.ip("b")
        if path == "direct":
            return ("%s:%d" % (a, DIRECT_PORT), "%s:%d" % (b, DIRECT_PORT),
                    "%s:%d" % (b, DIRECT_PORT))
        if path == "socat":
            ps, pa, _, pr = SOCAT_PORTS
            return ("127.0.0.1:%d" % ps, "127.0.0.1:%d" % pa, "127.0.0.1:%d" % pr)
        return ("%s:%d" % (a, GOSSIP_PORT), "%s:%d" % (b, GOSSIP_PORT),
                "%s:%d" % (b, GOSSIP_PORT))

    def measure(self, mode, pin, rate, path, relays):
        warmup = max(100, rate // 2)
        count = int(rate * self.args.seconds)
        total = warmup + count
        send_bind, send_to, recv_bind = self.endpoints(path)
        label = "%s-%d-%s" % (mode, rate, path)
        load = os.getloadavg()[0]
        rx = self.lab.spawn("b", pin + [
            self.tool, "recv", "--bind", recv_bind, "--expect", str(total), "--warmup",
            str(warmup), "--idle-ms", "1000", "--max-seconds",
            str(int(self.args.seconds + 20)), "--label", label], self.log("recv-" + label))
        harness.wait_for(lambda: "ready" in harness.read(rx.log_path) or rx.poll() is not None,
                         10, what="receiver ready")
        snmp_before = {h: udp_counters(self.lab, h) for h in ("a", "b")}
        softnet_before = softnet_dropped()
        cpu_before = {h: cpu_ticks(p.pid) for h, p in relays.items()}
        sent = self.lab.run("a", *(pin + [
            self.tool, "send", "--bind", send_bind, "--to", send_to, "--rate", str(rate),
            "--count", str(count), "--warmup", str(warmup), "--size", str(self.args.size)]),
            timeout=self.args.seconds * 3 + 30)
        rss_end = {h: rss_kb(p.pid) for h, p in relays.items()} if path == "sidecrypt" else {}
        cpu_after = {h: cpu_ticks(p.pid) for h, p in relays.items()}
        rx.wait(self.args.seconds + 40)
        res = last_json(rx.log_path)
        res.update({
            "mode": mode, "rate": rate, "path": path, "loadavg_1min_before": load,
            "sender": json.loads(sent.stdout.strip().splitlines()[-1]),
            "udp_snmp_delta": {h: delta(udp_counters(self.lab, h), snmp_before[h])
                               for h in ("a", "b")},
            "softnet_dropped_delta": softnet_dropped() - softnet_before,
            "relay_cpu_s": {h: (cpu_after[h] - cpu_before[h]) / os.sysconf("SC_CLK_TCK")
                            for h in relays},
        })
        if rss_end:
            res["rss_end_kb"] = rss_end
        self.results.append(res)
        print("  %-28s p50 %7.1f  p99 %7.1f  max %8.1f us  drops %d  (sent %d, %.0f/s)" % (
            label, res["p50_us"], res["p99_us"], res["max_us"], res["drops"],
            res["sender"]["sent"], res["sender"]["achieved_pps"]), file=sys.stderr)
        return res

    # --- the run ----------------------------------------------------------------------------

    def run(self):
        key = harness.run(["keygen"], check=True).stdout.strip()
        rates = [int(r) for r in self.args.rates.split(",")]
        for mode in self.args.modes.split(","):
            pin = ["taskset", "-c", "0"] if mode == "pinned" else []
            if self.args.rt:
                pin = ["chrt", "-f", "50"] + pin
            print("%s:" % mode, file=sys.stderr)
            sc = self.start_sidecrypts(pin, key)
            time.sleep(1.0)
            self.rss[mode] = {"idle": {h: rss_kb(p.pid) for h, p in sc.items()}}
            so = self.start_socats(pin)
            try:
                for rate in rates:
                    for rnd in range(max(1, min(self.args.repeat, 20))):
                        for path in PATHS:
                            if self.over_budget():
                                print("  budget of %.0f s reached: stopping" % self.args.budget,
                                      file=sys.stderr)
                                return
                            relays = {"socat": so, "sidecrypt": sc}.get(path, {})
                            res = self.measure(mode, pin, rate, path, relays)
                            res["round"] = rnd
                            if path == "sidecrypt":
                                self.rss[mode]["end_%d" % rate] = res["rss_end_kb"]
                before = {h: harness.read(p.log_path).count("counters:") for h, p in sc.items()}
                for p in sc.values():
                    p.send_signal(signal.SIGUSR1)
                for h, p in sc.items():
                    harness.wait_for(lambda h=h, p=p: harness.read(p.log_path).count("counters:")
                                     > before[h], 5, what="counter dump")
                    self.counters["%s-%s" % (mode, h)] = [
                        l for l in harness.read(p.log_path).splitlines() if "counters:" in l][-1]
            finally:
                self.stop(so)
                self.stop(sc)

    def cleanup(self):
        self.lab.cleanup()
        self.w.cleanup()


# --- report ---------------------------------------------------------------------------------

def find(results, mode, rate, path):
    for r in results:
        if (r["mode"], r["rate"], r["path"]) == (mode, rate, path):
            return r
    return None


def median(values):
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def aggregate(rounds):
    """One row per (mode, rate, path): the median of each percentile over the rounds, the
    largest max, drops and datagrams summed, relay CPU averaged per round."""
    out = []
    for r in rounds:
        if find(out, r["mode"], r["rate"], r["path"]) is not None:
            continue
        same = [x for x in rounds if (x["mode"], x["rate"], x["path"]) ==
                (r["mode"], r["rate"], r["path"])]
        row = {k: r[k] for k in ("mode", "rate", "path")}
        for k in ("p50_us", "p90_us", "p99_us"):
            row[k] = median([x[k] for x in same])
        row["p99_range"] = (min(x["p99_us"] for x in same), max(x["p99_us"] for x in same))
        row["max_us"] = max(x["max_us"] for x in same)
        row["drops"] = sum(x["drops"] for x in same)
        row["expected"] = sum(x["expected"] for x in same)
        row["rounds"] = len(same)
        row["relay_cpu_s"] = {h: sum(x["relay_cpu_s"].get(h, 0) for x in same) / len(same)
                              for h in r["relay_cpu_s"]}
        out.append(row)
    return out


def report(bench, elapsed):
    args, rounds = bench.args, bench.results
    results = aggregate(rounds)
    m = machine()
    out = []
    loads = [r["loadavg_1min_before"] for r in rounds] or [0.0]
    out.append("Machine: %d vCPU, %s, kernel %s. Payload %d bytes (+29 sealed); each row: "
               "median over %d interleaved rounds of %.1f s measured after a 0.5 s warm-up; "
               "run took %.0f s; 1-minute load average before the rounds: %.2f to %.2f%s." % (
                   m["nproc"], m["cpu"], m["kernel"], args.size, args.repeat, args.seconds,
                   elapsed, min(loads), max(loads),
                   "; every process SCHED_FIFO (--rt)" if args.rt else ""))
    out.append("")
    out.append("| cores | rate (pps) | path | p50 µs | p90 µs | p99 µs | p99 range µs | max µs | "
               "drops | added p50/hop µs | added p99/hop µs | relay CPU (A+B) |")
    out.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        d = find(results, r["mode"], r["rate"], "direct")
        if r["path"] == "direct" or d is None:
            a50 = a99 = "—"
        else:
            a50 = "%.1f" % ((r["p50_us"] - d["p50_us"]) / 2)
            a99 = "%.1f" % ((r["p99_us"] - d["p99_us"]) / 2)
        cpu = sum(r["relay_cpu_s"].values())
        busy = ("%.0f%%" % (100 * cpu / (args.seconds + 0.5))) if r["path"] != "direct" else "—"
        out.append("| %s | %d | %s | %.1f | %.1f | %.1f | %.0f–%.0f | %.1f | %d / %d | %s | %s | %s |"
                   % ("all on CPU 0" if r["mode"] == "pinned" else "unpinned", r["rate"],
                      r["path"], r["p50_us"], r["p90_us"], r["p99_us"], r["p99_range"][0],
                      r["p99_range"][1], r["max_us"], r["drops"], r["expected"], a50, a99, busy))
    out.append("")
    out.append("Targets (sidecrypt against the socat relay in the same run):")
    out.append("")
    out.append("| cores | rate (pps) | added p99/hop: sidecrypt | socat | difference (≤ 20 µs?) "
               "| ratio | added p50/hop ratio | sidecrypt drops (0 at 20k?) |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for mode in args.modes.split(","):
        for rate in [int(x) for x in args.rates.split(",")]:
            d, c, s = (find(results, mode, rate, p) for p in PATHS)
            if not (d and s and c):
                continue
            s99, c99 = (s["p99_us"] - d["p99_us"]) / 2, (c["p99_us"] - d["p99_us"]) / 2
            s50, c50 = (s["p50_us"] - d["p50_us"]) / 2, (c["p50_us"] - d["p50_us"]) / 2
            ratio = lambda a, b: ("%.2f×" % (a / b)) if b > 0 else "—"  # noqa: E731
            out.append("| %s | %d | %.1f | %.1f | %+.1f (%s) | %s | %s | %d%s |" % (
                "all on CPU 0" if mode == "pinned" else "unpinned", rate, s99, c99, s99 - c99,
                "met" if s99 - c99 <= 20 else "NOT met", ratio(s99, c99), ratio(s50, c50),
                s["drops"], "" if rate != 20000 else (" (met)" if s["drops"] == 0
                                                      else " (NOT met)")))
    out.append("")
    out.append("sidecrypt memory (kB; VmRSS = RssAnon + RssFile, the latter mostly shared "
               "libraries; VmHWM is the peak):")
    out.append("")
    out.append("| cores | host | when | VmRSS | RssAnon | RssFile | VmHWM |")
    out.append("|---|---|---|---:|---:|---:|---:|")
    for mode, v in bench.rss.items():
        for h in ("a", "b"):
            for when, e in v.items():
                e = e.get(h, {})
                out.append("| %s | %s (%s) | %s | %s | %s | %s | %s |" % (
                    "all on CPU 0" if mode == "pinned" else "unpinned", h,
                    "seals" if h == "a" else "opens",
                    "idle, 1 s after start" if when == "idle" else
                    "end of the %s pps run" % when[4:], e.get("VmRSS", "?"),
                    e.get("RssAnon", "?"), e.get("RssFile", "?"), e.get("VmHWM", "?")))
    out.append("")
    out.append("Kernel drop counters during each row (non-zero only):")
    out.append("")
    any_drop = False
    for r in rounds:
        snmp = {h: {k: v for k, v in d.items() if "Errors" in k} for h, d in
                r["udp_snmp_delta"].items()}
        snmp = {h: d for h, d in snmp.items() if d}
        if snmp or r["softnet_dropped_delta"]:
            any_drop = True
            out.append("- %s %d %s (round %d): udp %s, softnet backlog drops %d" % (
                r["mode"], r["rate"], r["path"], r["round"], json.dumps(snmp),
                r["softnet_dropped_delta"]))
    if not any_drop:
        out.append("- none (UDP InErrors/RcvbufErrors/SndbufErrors in both namespaces, "
                   "softnet backlog drops)")
    out.append("")
    out.append("sidecrypt counters at the end of each mode (SIGUSR1):")
    out.append("")
    for k, line in bench.counters.items():
        out.append("- %s: `%s`" % (k, line.split("counters:", 1)[1].strip()))
    return "\n".join(out)


def main():
    args = parse_args()
    if os.geteuid() != 0:
        raise SystemExit("e2e_udp.py needs root (network namespaces and netfilter)")
    bench = Bench(args)
    t0 = time.monotonic()
    try:
        bench.run()
    finally:
        bench.cleanup()
    print(report(bench, time.monotonic() - t0))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "args": vars(args), "results": bench.results,
                       "rss_kb": bench.rss, "counters": bench.counters}, f, indent=1)


if __name__ == "__main__":
    main()
