#!/usr/bin/env python3
"""Fleet walk lab (issue 17, 5b): a fleet of real serf agents in network namespaces walks the
whole gossip rollout by reload and rotates its key with `serf keys`, while its member lists are
watched the whole time. A lab script beside the benchmarks, not a CI test: it prints numbers and
writes them as JSON (--out); it exits 1 if any member is ever seen not alive, a key step is not
answered by every node (N/N), a reload fails or does not converge in time.

The fleet: --hosts N (even, default 24) hosts on one bridge (10.250.<x>.0/24, harness.Lab).
Hosts h01..h(N/2) run a plaintext serf agent (p01, p02...) behind a sidecrypt (--bin); hosts
h(N/2+1)..hN run serf with native `-encrypt KEY` (n13, n14... for N = 24), the same key.

Which walk is valid. A native serf agent started with -encrypt verifies incoming gossip
(memberlist's GossipVerifyIncoming defaults to true and serf has no flag to turn it off), so it
drops every plaintext packet and stream. A sidecrypt node at stage 1 ("accept both", outgoing
plaintext) therefore must not share a cluster with native agents: they drop everything it sends
(its acks, its alive messages, its push/pulls). Member lists may not even show it: natives
suspect it, but its neighbours at stage 2 accept its plaintext, answer the natives' indirect
probes for it and relay its refutations sealed, so it can stay "alive" while natives log
"Decrypt packet failed" for each of its packets (--fault plaintext-after-merge shows this). So
the lab also fails on any such line in a native agent's log, and the walk is:

  1. start: the proxied half forms one cluster with every sidecrypt at stage 1 (key installed,
     encrypt_verify_outgoing = false, encrypt_verify_incoming = false; plaintext on the wire);
     the native half forms a second, encrypted cluster.
  2. stage 2, one proxied node at a time: encrypt_verify_outgoing = true in its proxy.toml,
     `sidecrypt reload`, wait until it has converged (below), next node.
  3. gate check, negative: right after the last stage-2 reload, `sidecrypt check
     enforce-incoming --within W` on the proxied nodes; at least one must still say "no" (they
     heard plaintext moments ago), or the gate proves nothing.
  4. merge: every proxied node now seals, so a native node runs `serf join` to a proxied one and
     the two clusters become one of N members, alive on every host.
  5. stage 3, one proxied node at a time: wait until `sidecrypt check enforce-incoming --within W`
     on that node says yes (exit 0), then encrypt_verify_incoming = true, reload, converge.
  6. rotation: `serf keys -install NEW` (from a native node), `-list` must show OLD and NEW on
     N/N; `-use NEW` (from a proxied agent: its query leaves through its sidecrypt); wait until
     `sidecrypt check remove-key OLD --within W` says yes on every proxied node;
     `-remove OLD` (from a native node); `-list` must show NEW alone on N/N; every sidecrypt's
     keyring file must then hold exactly [NEW].

Reloads alternate between `sidecrypt reload` (answers once the new state is in force) and
SIGHUP (done when `sidecrypt status` counts one more reload); --reload-with picks one. Converged
after a reload of node X means: `sidecrypt status` on X shows the new stage; at stage 2 X's
sidecrypt counts a new sealed packet or stream out ("sealed out") and the next proxied node's
census counts a new sealed one from X (this waits for X's agent to next talk to that node:
memberlist's probe order and gossip fan-out, seconds, not sidecrypt); at stage 3 X's census counts
new sealed traffic from its peers (it refuses plaintext now, sealed gossip still comes in); and
`serf members` on X lists every expected member alive.

The watcher: every --poll-interval seconds it runs `serf members` on --poll-hosts hosts in turn
(round robin over all hosts) and records every expected member that is missing or not `alive`
(and any listed member not alive). At the end every agent log is also searched for
"Marking X as failed" / "EventMemberFailed", and every native agent's log for packets or streams
it could not open. Any of these fails the run.

Numbers: hosts, time per phase and per stage, total walk time, each reload's own latency and its
time to convergence, gate waits, rotation step times, the sidecrypts' peak RSS (VmHWM) and CPU
seconds (utime + stime, and as a share of one core), the serf agents' CPU for comparison, member-list
polls and failures, suspicions in the agents' logs (memberlist "Suspect X has failed", refuted
ones included: information, not failure).

Run as root from the repository root, after building sidecrypt:

  sudo python3 scripts/lab/fleet_walk.py                       # 24 hosts, build/sidecrypt
  sudo python3 scripts/lab/fleet_walk.py --hosts 4             # smoke run, about 75 s
  sudo python3 scripts/lab/fleet_walk.py --hosts 24 --out fleet-walk.json --keep-logs

Every wait is bounded (--timeout scales them); namespaces, veths and processes are removed on
exit, on failure and on SIGINT/SIGTERM. --keep-logs (or a failed run) keeps the work directory
(configs, logs, and the throwaway lab keys in the keyring files) and prints its path.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402

RPC = "127.0.0.1:7373"
CLK_TCK = os.sysconf("SC_CLK_TCK")
DECRYPT_ERR = re.compile(r"decrypt|Unsupported encryption version", re.I)
KEY_LINE = re.compile(r"^(\S+)\s+\|?\s*\[(\d+)/(\d+)\]", re.M)


class WalkFailed(Exception):
    pass


def parse_args():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="How-to: build sidecrypt (bash scripts/build.sh build; ninja -C build sidecrypt), "
               "then as root: python3 scripts/lab/fleet_walk.py [--hosts 24] [--out r.json]. "
               "Smoke: --hosts 4. The module docstring (and docs/benchmarks.md, 'Fleet walk "
               "lab') explains the walk and what a pass proves.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=24,
                    help="fleet size, even, 4..200: half proxied, half native (default 24)")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "sidecrypt"),
                    help="the built sidecrypt binary (default build/sidecrypt)")
    ap.add_argument("--out", help="write the result as JSON to this file")
    ap.add_argument("--window", type=int,
                    help="seconds: --within of the enforce-incoming and remove-key gates "
                         "(memberlist probes every member once per round of N seconds, so a "
                         "window under ~2N s can call a quiet member silent) "
                         "(default max(30, 2.5 * hosts))")
    ap.add_argument("--reload-with", choices=("cli", "sighup", "both"), default="both",
                    help="how to reload: `sidecrypt reload`, SIGHUP, or alternating node by "
                         "node (default both)")
    ap.add_argument("--poll-interval", type=float, default=0.5,
                    help="seconds between member-list polls (default 0.5)")
    ap.add_argument("--poll-hosts", type=int, default=3,
                    help="hosts polled per tick, round robin over the fleet (default 3)")
    ap.add_argument("--pause", type=float, default=1.0,
                    help="seconds between one node's convergence and the next node's reload")
    ap.add_argument("--timeout", type=float, default=1.0,
                    help="multiplies every bound (joins 240 s, convergence 120 s, gates "
                         "window+180 s...) for slower machines (default 1.0)")
    ap.add_argument("--log-level", default="info",
                    help="sidecrypt log level (default info; debug logs every packet)")
    ap.add_argument("--fault", choices=("none", "plaintext-after-merge"), default="none",
                    help="plaintext-after-merge: after the merge, put one proxied node back to "
                         "stage 1; natives drop its plaintext, the watcher must see it not "
                         "alive and the run must FAIL (shows the watcher and the walk order "
                         "matter)")
    ap.add_argument("--keep-logs", action="store_true",
                    help="keep the work directory (also kept when the run fails)")
    a = ap.parse_args()
    if a.hosts < 4 or a.hosts > 200 or a.hosts % 2:
        ap.error("--hosts must be even, between 4 and 200")
    if a.window is None:
        a.window = int(max(30, 2.5 * a.hosts))
    return a


def proc_stats(pid):
    """(VmHWM kB, VmRSS kB, CPU seconds) of a live process, or None."""
    try:
        with open("/proc/%d/status" % pid) as f:
            st = dict(l.split(":", 1) for l in f if ":" in l)
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        return (int(st["VmHWM"].split()[0]), int(st["VmRSS"].split()[0]), cpu)
    except (OSError, KeyError, IndexError, ValueError):
        return None


class Watcher:
    """Polls `serf members` on a few hosts every tick, round robin, until stopped."""

    def __init__(self, lab, hosts, names, per_tick, interval):
        self.lab, self.hosts, self.names = lab, hosts, names
        self.per_tick, self.interval = per_tick, interval
        self.expected = {}  # host -> set of member names it must list alive
        self.phase = "start"
        self.polls, self.failures, self.errors = 0, [], []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def expect(self, mapping, phase=None):
        with self.lock:
            self.expected = {h: set(v) for h, v in mapping.items()}
            if phase:
                self.phase = phase

    def loop(self):
        i = 0
        while not self.stop.is_set():
            for _ in range(self.per_tick):
                if self.stop.is_set():
                    break
                host = self.hosts[i % len(self.hosts)]
                i += 1
                self.poll(host)
            self.stop.wait(self.interval)

    def poll(self, host):
        with self.lock:
            expected, phase = set(self.expected.get(host, ())), self.phase
        now = time.time()
        try:
            members = harness.serf_members(self.lab, host, RPC)
        except subprocess.TimeoutExpired:
            self.errors.append((now, phase, host, "serf members timed out"))
            return
        if not members:
            self.errors.append((now, phase, host, "serf members answered nothing"))
            return
        self.polls += 1
        for name in sorted(expected | set(members)):
            status = members.get(name, "missing")
            if status != "alive":
                self.failures.append({"time": now, "phase": phase, "host": host, "member": name,
                                      "status": status})


class FleetWalk:
    def __init__(self, args):
        self.a = args
        self.t = args.timeout
        self.w = harness.Workdir()
        self.lab = None
        self.n = args.hosts
        half = self.n // 2
        self.hosts = ["h%02d" % i for i in range(1, self.n + 1)]
        self.node = {}
        for i, h in enumerate(self.hosts, start=1):
            self.node[h] = ("p%02d" if i <= half else "n%02d") % i
        self.proxied = self.hosts[:half]
        self.native = self.hosts[half:]
        self.names = [self.node[h] for h in self.hosts]
        self.cfg, self.proxies, self.agents = {}, {}, {}
        self.reloads = {}  # host -> reloads this script asked for
        self.result = {"hosts": self.n, "proxied": half, "native": half, "phases": {},
                       "reloads": [], "gates": [], "rotation": {}, "ok": False}
        self.watcher = None
        self.started = time.monotonic()

    # ---- small helpers -------------------------------------------------------------------

    def addr(self, host):
        return "%s:7946" % self.lab.ip(host)

    def bound(self, seconds):
        return seconds * self.t

    def data_dir(self, host):
        return os.path.join(self.w.path, "data-" + self.node[host])

    def write_stage(self, host, stage):
        """proxy.toml of a proxied host at rollout stage 1, 2 or 3 (docs/rollout.md)."""
        extra = "encrypt_verify_outgoing = %s\nencrypt_verify_incoming = %s" % (
            "true" if stage >= 2 else "false", "true" if stage >= 3 else "false")
        path = harness.proxy_config(self.cfg[host], self.data_dir(host), self.key, "serf", extra)
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(text.replace('level = "debug"', 'level = "%s"' % self.a.log_level))

    def sc(self, host, *args, timeout=60):
        return self.lab.run(host, harness.binary(), *args, check=False, timeout=timeout)

    def status(self, host):
        r = self.sc(host, "status", "--json", "-c", self.cfg[host], timeout=30)
        if r.returncode != 0:
            return None
        try:
            return json.loads(r.stdout)
        except ValueError:
            return None

    def sealed_from(self, doc, ip=None):
        """Sealed packets + streams the census counted (from one peer, or from all)."""
        total = 0
        for p in (doc or {}).get("peers", []):
            if ip is None or p["address"] == ip:
                g = p["gossip"]
                total += g["packets_encrypted"] + g["streams_encrypted"]
        return total

    def sealed_out(self, doc):
        """Packets and streams this sidecrypt sealed for its agent (LAN pool)."""
        lan = (doc or {}).get("status", {}).get("gossip", {}).get("lan", {})
        return sum(lan.get(k, {}).get("agent_to_peer", {}).get("sealed", 0)
                   for k in ("packets", "streams"))

    def refused(self, doc):
        return sum(p["gossip"]["packets_refused"] for p in (doc or {}).get("peers", []))

    def all_alive(self, host, names):
        try:
            m = harness.serf_members(self.lab, host, RPC)
        except subprocess.TimeoutExpired:
            return False
        return all(m.get(n) == "alive" for n in names)

    def wait_alive(self, hosts, names, timeout, what):
        deadline = time.monotonic() + timeout
        pending = list(hosts)
        while pending:
            pending = [h for h in pending if not self.all_alive(h, names)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise WalkFailed("timed out after %.0fs: %s (not yet on %s)"
                                 % (timeout, what, ", ".join(pending)))
            time.sleep(1.0)

    def check(self, host, *what):
        r = self.sc(host, "check", *what, "--within", "%ds" % self.a.window, "--json", "-c",
                    self.cfg[host], timeout=30)
        try:
            doc = json.loads(r.stdout)
        except ValueError:
            doc = {"reasons": [r.stdout + r.stderr]}
        return r.returncode, doc

    def phase(self, name, t0):
        self.result["phases"][name] = round(time.monotonic() - t0, 2)
        print("[%7.1fs] %s done in %.1fs" % (time.monotonic() - self.started, name,
                                             time.monotonic() - t0), flush=True)

    def log(self, msg):
        print("[%7.1fs] %s" % (time.monotonic() - self.started, msg), flush=True)

    # ---- the run -------------------------------------------------------------------------

    def run(self):
        self.lab = harness.Lab(self.hosts)
        self.key = harness.run(["keygen"], check=True).stdout.strip()
        self.start_fleet()
        self.watcher = Watcher(self.lab, self.hosts, self.names, self.a.poll_hosts,
                               self.a.poll_interval)
        pn = [self.node[h] for h in self.proxied]
        nn = [self.node[h] for h in self.native]
        self.watcher.expect({**{h: pn for h in self.proxied}, **{h: nn for h in self.native}},
                            "stage 2")
        self.watcher.thread.start()
        walk0 = time.monotonic()
        self.walk_stage(2, pn)
        self.negative_gate()
        self.watcher.phase = "merge"
        self.merge()
        if self.a.fault == "plaintext-after-merge":
            self.fault_plaintext_after_merge()
        self.watcher.expect({h: self.names for h in self.hosts}, "stage 3")
        self.walk_stage(3, self.names)
        self.result["walk_seconds"] = round(time.monotonic() - walk0, 2)
        self.watcher.expect({h: self.names for h in self.hosts}, "rotation")
        self.rotate()
        self.watcher.expect({h: self.names for h in self.hosts}, "settle")
        time.sleep(5)
        self.finish()

    def start_fleet(self):
        t0 = time.monotonic()
        first_p, first_n = self.proxied[0], self.native[0]
        for h in self.proxied:
            self.cfg[h] = os.path.join(self.w.path, self.node[h] + ".toml")
            self.write_stage(h, 1)
            join = None if h == first_p else self.addr(first_p)
            self.proxies[h], self.agents[h] = harness.start_proxied_serf(
                self.lab, h, self.node[h], self.cfg[h], self.w.path, join=join)
        for h in self.native:
            extra = ["-encrypt", self.key]
            if h != first_n:
                extra += ["-join", self.addr(first_n)]
            self.agents[h] = harness.start_serf(
                self.lab, h, self.node[h], self.addr(h),
                os.path.join(self.w.path, "%s.log" % self.node[h]), extra)
        pn = [self.node[h] for h in self.proxied]
        nn = [self.node[h] for h in self.native]
        self.wait_alive(self.proxied, pn, self.bound(240), "the proxied cluster (stage 1)")
        self.wait_alive(self.native, nn, self.bound(240), "the native cluster")
        self.phase("start (stage 1 + native cluster)", t0)

    def walk_stage(self, stage, names):
        t0 = time.monotonic()
        for i, h in enumerate(self.proxied):
            if stage == 3:
                self.gate(h)
            self.reload(h, stage, self.proxied[(i + 1) % len(self.proxied)], names)
            time.sleep(self.a.pause)
        self.phase("stage %d walk" % stage, t0)
        self.result.setdefault("stage_seconds", {})[str(stage)] = round(time.monotonic() - t0, 2)

    def reload(self, host, stage, neighbour, names):
        ip = self.lab.ip(host)
        doc = self.status(host)
        before_self, before_out = self.sealed_from(doc), self.sealed_out(doc)
        before_nb = self.sealed_from(self.status(neighbour), ip)
        how = self.a.reload_with
        if how == "both":
            how = "cli" if self.proxied.index(host) % 2 == 0 else "sighup"
        reloads_before = (self.status(host) or {}).get("status", {}).get("reloads", {})
        self.write_stage(host, stage)
        t0 = time.monotonic()
        if how == "cli":
            # `sidecrypt reload` answers once the new state is built and swapped in.
            r = self.sc(host, "reload", "-c", self.cfg[host], timeout=self.bound(60))
            if r.returncode != 0:
                raise WalkFailed("reload of %s to stage %d failed: %s" % (host, stage,
                                                                        r.stdout + r.stderr))
        else:
            # SIGHUP answers nothing: done when the status counts one more reload.
            self.proxies[host].send_signal(signal.SIGHUP)
            deadline = t0 + self.bound(60)
            while True:
                rl = (self.status(host) or {}).get("status", {}).get("reloads", {})
                if rl.get("failed", 0) > reloads_before.get("failed", 0):
                    raise WalkFailed("SIGHUP reload of %s to stage %d failed: %s"
                                     % (host, stage, rl.get("last_error")))
                if rl.get("ok", 0) > reloads_before.get("ok", 0):
                    break
                if time.monotonic() > deadline:
                    raise WalkFailed("SIGHUP reload of %s not done after 60s" % host)
                time.sleep(0.05)
        reload_s = time.monotonic() - t0
        self.reloads[host] = self.reloads.get(host, 0) + 1
        want = {"encrypt_verify_outgoing": stage >= 2, "encrypt_verify_incoming": stage >= 3}
        deadline = t0 + self.bound(120)
        # Stage 2: X now seals, its neighbour must count sealed traffic from it. Stage 3: X now
        # refuses plaintext, sealed traffic must still reach it.
        pending = {"stage", "members alive"}
        pending |= {"sealed out", "neighbour sees sealed"} if stage == 2 else {"inbound sealed"}
        done = {}

        def cleared(what):
            pending.discard(what)
            done[what] = round(time.monotonic() - t0, 3)
        while pending:
            if pending & {"stage", "inbound sealed", "sealed out"}:
                doc = self.status(host)
                if doc and doc["status"]["stages"]["gossip"] == want:
                    cleared("stage")
                if doc and "inbound sealed" in pending and self.sealed_from(doc) > before_self:
                    cleared("inbound sealed")
                if doc and "sealed out" in pending and self.sealed_out(doc) > before_out:
                    cleared("sealed out")
            if "neighbour sees sealed" in pending:
                if self.sealed_from(self.status(neighbour), ip) > before_nb:
                    cleared("neighbour sees sealed")
            if "members alive" in pending and self.all_alive(host, names):
                cleared("members alive")
            if not pending:
                break
            if time.monotonic() > deadline:
                raise WalkFailed("%s did not converge at stage %d within %.0fs: %s"
                                 % (host, stage, self.bound(120), sorted(pending)))
            time.sleep(0.25)
        conv = time.monotonic() - t0
        self.result["reloads"].append({"host": host, "node": self.node[host], "stage": stage,
                                       "how": how, "reload_s": round(reload_s, 3),
                                       "converged_s": round(conv, 3), "conditions": done})
        self.log("%s -> stage %d (%s): reload %.2fs, converged %.2fs"
                 % (self.node[host], stage, how, reload_s, conv))

    def negative_gate(self):
        """Right after the stage-2 walk the proxied nodes heard plaintext moments ago: the gate
        must say no somewhere, or it proves nothing."""
        answers = {}
        for h in self.proxied:
            rc, doc = self.check(h, "enforce-incoming")
            answers[self.node[h]] = {"rc": rc, "reasons": len(doc.get("reasons", []))}
        no = [n for n, v in answers.items() if v["rc"] == 1]
        self.result["gate_after_stage2"] = {"said_no": no, "answers": answers}
        self.log("enforce-incoming right after stage 2: 'no' on %d/%d proxied nodes"
                 % (len(no), len(self.proxied)))
        if not no:
            raise WalkFailed("enforce-incoming said yes everywhere right after plaintext: %s"
                             % answers)

    def merge(self):
        t0 = time.monotonic()
        r = self.lab.run(self.native[0], "serf", "join", "-rpc-addr", RPC,
                         self.addr(self.proxied[0]), check=False, timeout=self.bound(60))
        if r.returncode != 0:
            raise WalkFailed("serf join of the two clusters failed: " + r.stdout + r.stderr)
        self.wait_alive(self.hosts, self.names, self.bound(240), "all %d members alive" % self.n)
        self.phase("merge (native cluster joins)", t0)

    def fault_plaintext_after_merge(self):
        """The invalid walk, on purpose: one proxied node goes back to stage 1 (outgoing
        plaintext) while native agents, which verify incoming, are members. The natives drop
        its gossip; the watcher must see it not alive, and the run fails."""
        h = self.proxied[0]
        self.watcher.expect({x: self.names for x in self.hosts}, "fault")
        t0 = time.monotonic()
        self.write_stage(h, 1)
        r = self.sc(h, "reload", "-c", self.cfg[h], timeout=self.bound(60))
        self.reloads[h] = self.reloads.get(h, 0) + 1
        self.log("fault: %s back to stage 1 (plaintext out) with natives in the cluster (reload "
                 "exit %d); waiting for the watcher" % (self.node[h], r.returncode))
        deadline = t0 + self.bound(60)
        while not self.watcher.failures and time.monotonic() < deadline:
            time.sleep(0.5)
        seen = self.watcher.failures[:5]
        self.result["fault"] = {"name": "plaintext-after-merge", "node": self.node[h],
                                "watcher_first_sighting_s": round(time.monotonic() - t0, 1)
                                if seen else None, "sightings": seen}
        self.finish()  # must raise: the natives' logs name what they dropped
        raise WalkFailed("fault plaintext-after-merge went unnoticed")

    def gate(self, host):
        t0 = time.monotonic()
        deadline = t0 + self.bound(self.a.window + 180)
        first = None
        while True:
            rc, doc = self.check(host, "enforce-incoming")
            if first is None:
                first = rc
            if rc == 0:
                break
            if time.monotonic() > deadline:
                raise WalkFailed("enforce-incoming on %s still says no after %.0fs: %s"
                                 % (host, time.monotonic() - t0, doc.get("reasons")))
            time.sleep(2.0)
        self.result["gates"].append({"host": host, "node": self.node[host],
                                     "first_answer": "yes" if first == 0 else "no",
                                     "waited_s": round(time.monotonic() - t0, 2)})

    def keys(self, host, *args):
        return self.lab.run(host, "serf", "keys", "-rpc-addr", RPC, *args, check=False,
                            timeout=self.bound(90))

    def key_step(self, label, host, args, expect_text, want):
        """One `serf keys` step, then `-list` from another host must show `want` on N/N."""
        t0 = time.monotonic()
        r = self.keys(host, *args)
        step_s = time.monotonic() - t0
        out = r.stdout + r.stderr
        if r.returncode != 0 or expect_text not in out:
            raise WalkFailed("serf keys %s on %s: exit %d\n%s" % (label, host, r.returncode, out))
        lister = self.proxied[-1] if host in self.native else self.native[-1]
        lr = self.keys(lister, "-list")
        listed = {m.group(1): (int(m.group(2)), int(m.group(3)))
                  for m in KEY_LINE.finditer(lr.stdout)}
        expect = {k: (self.n, self.n) for k in want}
        if lr.returncode != 0 or listed != expect:
            raise WalkFailed("serf keys -list after %s on %s: want every key on %d/%d, got %s\n%s"
                             % (label, lister, self.n, self.n,
                                {k[:6] + "...": v for k, v in listed.items()},
                                (lr.stdout + lr.stderr)[-2000:]))
        self.result["rotation"][label] = {"from": self.node[host], "seconds": round(step_s, 2),
                                          "list_from": self.node[lister],
                                          "answered": "%d/%d" % (self.n, self.n)}
        self.log("serf keys %s from %s: %.2fs; -list from %s: every key %d/%d"
                 % (label, self.node[host], step_s, self.node[lister], self.n, self.n))

    def rotate(self):
        t0 = time.monotonic()
        old, new = self.key, harness.run(["keygen"], check=True).stdout.strip()
        self.key_step("install", self.native[0], ["-install", new], "Successfully installed",
                      [old, new])
        self.key_step("use", self.proxied[0], ["-use", new], "Successfully changed primary",
                      [old, new])
        # remove-key gate: right after -use, someone sent with OLD moments ago; then yes.
        g0 = time.monotonic()
        first_no = 0
        for h in self.proxied:
            deadline = time.monotonic() + self.bound(self.a.window + 180)
            first = True
            while True:
                rc, doc = self.check(h, "remove-key", old)
                if first and rc != 0:
                    first_no += 1
                first = False
                if rc == 0:
                    break
                if time.monotonic() > deadline:
                    raise WalkFailed("remove-key OLD on %s still says no: %s"
                                     % (h, doc.get("reasons")))
                time.sleep(2.0)
        self.result["rotation"]["remove_gate"] = {"seconds": round(time.monotonic() - g0, 2),
                                                  "first_answer_no_on": first_no}
        self.log("remove-key gate: yes on every proxied node after %.1fs (first answer no on %d)"
                 % (time.monotonic() - g0, first_no))
        self.key_step("remove", self.native[-1], ["-remove", old], "Successfully removed",
                      [new])
        for h in self.proxied:
            path = os.path.join(self.data_dir(h), "serf", "local.keyring")
            with open(path) as f:
                ring = json.load(f)
            if ring != [new]:
                raise WalkFailed("%s's keyring file holds %d keys, not [NEW]" % (h, len(ring)))
        self.result["rotation"]["seconds"] = round(time.monotonic() - t0, 2)
        self.phase("rotation", t0)

    def finish(self):
        self.watcher.stop.set()
        self.watcher.thread.join(60)
        self.collect()
        problems = []
        w = self.result["watch"]
        if w["failures"]:
            problems.append("%d member-list sightings not alive (first: %s)"
                            % (len(w["failures"]), w["failures"][:3]))
        if w["polls"] < 10:
            problems.append("only %d member-list polls" % w["polls"])
        if self.result["native_decrypt_errors"]:
            problems.append("native agents could not open %d packets/streams (first: %s)"
                            % (self.result["native_decrypt_errors"],
                               self.result["native_decrypt_error_lines"][:2]))
        if self.result["failed_lines"]:
            problems.append("agents logged members as failed: %s" % self.result["failed_lines"][:3])
        for h in self.proxied:
            doc = self.status(h)
            if doc is None:
                problems.append("no status from %s" % h)
                continue
            rl = doc["status"]["reloads"]
            if rl["ok"] != self.reloads.get(h, 0) or rl["failed"] != 0:
                problems.append("%s reloads %s" % (h, rl))
            if self.refused(doc):
                problems.append("%s refused %d packets" % (h, self.refused(doc)))
            if harness.read_log(self.proxies[h]).count("started:") != 1:
                problems.append("%s's sidecrypt started more than once" % h)
        for h, p in list(self.proxies.items()) + list(self.agents.items()):
            if p.poll() is not None:
                problems.append("%s process exited (%s)" % (h, p.returncode))
        self.result["problems"] = problems
        if problems:
            raise WalkFailed("; ".join(problems))
        self.result["ok"] = True

    def collect(self):
        """Resource use and the watcher's numbers (also after a failure)."""
        run_s = time.monotonic() - self.started
        self.result["run_seconds"] = round(run_s, 1)
        sc = [proc_stats(p.pid) for p in self.proxies.values()]
        sc = [s for s in sc if s]
        ag = [proc_stats(p.pid) for p in self.agents.values()]
        ag = [s for s in ag if s]
        if sc:
            self.result["sidecrypt"] = {
                "count": len(sc), "max_hwm_kb": max(s[0] for s in sc),
                "max_rss_kb": max(s[1] for s in sc),
                "cpu_s_total": round(sum(s[2] for s in sc), 2),
                "cpu_s_max": round(max(s[2] for s in sc), 2),
                "cpu_percent_of_one_core_each": round(100 * sum(s[2] for s in sc) / len(sc)
                                                      / run_s, 3)}
        if ag:
            self.result["serf_agents"] = {
                "count": len(ag), "max_hwm_kb": max(s[0] for s in ag),
                "cpu_s_total": round(sum(s[2] for s in ag), 2),
                "cpu_percent_of_one_core_each": round(100 * sum(s[2] for s in ag) / len(ag)
                                                      / run_s, 3)}
        if self.watcher is not None:
            self.result["watch"] = {"polls": self.watcher.polls,
                                    "failures": self.watcher.failures[:50],
                                    "failure_count": len(self.watcher.failures),
                                    "errors": self.watcher.errors[:20],
                                    "error_count": len(self.watcher.errors)}
        failed, suspect = [], 0
        for h, p in self.agents.items():
            lines = harness.failure_lines(harness.read_log(p), self.names)
            suspect += sum(1 for l in lines if "Suspect" in l)
            failed += ["%s: %s" % (self.node[h], l.strip()) for l in lines if "Suspect" not in l]
        self.result["failed_lines"] = failed[:50]
        # A native agent logs every packet or stream it cannot open ("Decrypt packet failed",
        # "No installed keys could decrypt"...): after a valid walk there is none.
        undecrypted = []
        for h in self.native:
            undecrypted += ["%s: %s" % (self.node[h], l.strip())
                            for l in harness.read_log(self.agents[h]).splitlines()
                            if DECRYPT_ERR.search(l)]
        self.result["native_decrypt_errors"] = len(undecrypted)
        self.result["native_decrypt_error_lines"] = undecrypted[:20]
        self.result["agent_err_lines"] = sum(harness.read_log(p).count("[ERR]")
                                             for p in self.agents.values())
        self.result["suspicions_logged"] = suspect
        r = subprocess.run(["serf", "version"], capture_output=True, text=True, timeout=10)
        d = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "serf"],
                           capture_output=True, text=True, timeout=10)
        self.result["versions"] = {"serf": (r.stdout.splitlines() or ["?"])[0],
                                   "serf_deb": d.stdout.strip(),
                                   "sidecrypt": harness.run(["version"]).stdout.strip()}
        self.result["load_avg"] = os.getloadavg()

    def cleanup(self, failed):
        if self.a.keep_logs or failed:
            os.environ["SIDECRYPT_KEEP_LOGS"] = "1"
        if self.watcher is not None:
            self.watcher.stop.set()
            self.watcher.thread.join(30)
        harness.cleanup(self.lab, self.w)


def summary(r):
    out = ["hosts: %d (%d behind sidecrypt, %d native -encrypt)"
           % (r["hosts"], r["proxied"], r["native"])]
    for k, v in r["phases"].items():
        out.append("phase %-34s %8.1f s" % (k, v))
    if "walk_seconds" in r:
        out.append("total walk (stage 2 .. stage 3):   %8.1f s" % r["walk_seconds"])
    for stage in (2, 3):
        rows = [x for x in r["reloads"] if x["stage"] == stage]
        if rows:
            rl = sorted(x["reload_s"] for x in rows)
            cv = sorted(x["converged_s"] for x in rows)
            out.append("stage %d reloads: %d; reload median %.2f s max %.2f s; converged median "
                       "%.2f s max %.2f s" % (stage, len(rows), rl[len(rl) // 2], rl[-1],
                                              cv[len(cv) // 2], cv[-1]))
    for cond in ("sealed out", "neighbour sees sealed", "inbound sealed", "members alive"):
        v = sorted(x["conditions"][cond] for x in r["reloads"] if cond in x.get("conditions", {}))
        if v:
            out.append("  after reload, %-22s median %.2f s max %.2f s" % (cond + ":",
                                                                        v[len(v) // 2], v[-1]))
    if r["gates"]:
        gw = sorted(g["waited_s"] for g in r["gates"])
        out.append("enforce-incoming gates: %d, waited median %.1f s max %.1f s"
                   % (len(gw), gw[len(gw) // 2], gw[-1]))
    for k, v in r["rotation"].items():
        out.append("rotation %s: %s" % (k, v))
    for k in ("sidecrypt", "serf_agents", "watch"):
        if k in r:
            v = dict(r[k])
            v.pop("failures", None)
            v.pop("errors", None)
            out.append("%s: %s" % (k, v))
    out.append("suspicions logged by agents (refuted or not): %s; [ERR] lines in agent logs: %s;"
               " packets/streams native agents could not open: %s"
               % (r.get("suspicions_logged"), r.get("agent_err_lines"),
                  r.get("native_decrypt_errors")))
    out.append("run: %s s; load average at the end: %s" % (r.get("run_seconds"),
                                                           r.get("load_avg")))
    out.append("RESULT: %s" % ("PASS" if r["ok"] else "FAIL: " + r.get("error", "?")))
    return "\n".join(out)


def main():
    args = parse_args()
    os.environ["SIDECRYPT_BIN"] = os.path.abspath(args.bin)
    harness.binary()
    harness.require_root("network namespaces, netfilter and serf agents")
    harness.require_commands("serf", why="serf agents")

    def terminate(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    # Installed explicitly: a shell's background job starts with SIGINT ignored.
    signal.signal(signal.SIGINT, terminate)
    signal.signal(signal.SIGTERM, terminate)
    fw = FleetWalk(args)
    failed = True
    try:
        fw.run()
        failed = False
    except (WalkFailed, AssertionError, subprocess.SubprocessError, OSError) as e:
        fw.result["error"] = str(e)
        if "watch" not in fw.result:
            try:
                fw.collect()
            except Exception as e2:  # the report must still come out
                fw.result["collect_error"] = str(e2)
    except KeyboardInterrupt as e:
        fw.result["error"] = "interrupted (%s)" % (e or "SIGINT")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        fw.cleanup(failed)
    print(summary(fw.result), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(fw.result, f, indent=2)
    return 0 if fw.result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
