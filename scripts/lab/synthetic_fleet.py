#!/usr/bin/env python3
"""Synthetic 10,000-node fleet: real memberlist traffic from 10,000 source addresses to ONE
sidecrypt, then its census checked against the generator's ground truth and its costs measured.

A lab script (issue 17, item 5a), not a CI test: run it as root on an otherwise quiet machine.

    sudo python3 scripts/lab/synthetic_fleet.py --bin build/sidecrypt --out fleet.json
    sudo python3 scripts/lab/synthetic_fleet.py --members 300            # quick check, ~1 min

Topology (names carry the pid; both namespaces are deleted on exit, failure or SIGINT/SIGTERM):

    gen  10.250.1.2/24 --veth-- 10.250.1.1/24  sc
         local route 10.250.64.0/18 dev lo        route 10.250.64.0/18 via 10.250.1.2
         (AnyIP: every address of the /18 is       sidecrypt (serf profile, port 7946, its own
          local without adding 10,000 addresses)   intercept rules), admin 127.0.0.1:9920,
                                                   metrics 127.0.0.1:9921, a discard "agent"

The generator sends from member i's address with one UDP socket bound to 0.0.0.0:7946 and
IP_PKTINFO (IP_TRANSPARENT lets the kernel route from an AnyIP source); push/pull streams come
from TCP sockets bound to the member's address.

No serf agent runs behind sidecrypt. A real agent would learn the 10,000 synthetic members,
probe them, get no answer from most (the generator does not run 10,000 memberlists) and gossip
suspect/dead about them: the census would then describe the agent's view, not the generator's
ground truth. Instead a discard "agent" (two sockets in this process, inside `sc`) listens on
10.250.1.1:7946: sidecrypt classifies, counts and opens every packet exactly as it would for an
agent (the census is fed before delivery), delivery succeeds, and push/pull streams get a small
plaintext push/pull reply, which sidecrypt seals back to the dialler as it would a real agent's.
sidecrypt runs at rollout stage 2 (keys, encrypt_verify_outgoing on, incoming off), the stage
at which an operator asks `check enforce-incoming`: plaintext is accepted and counted.

Rates: what ONE node of a fleet of n = 10,000 memberlist (LAN defaults) nodes receives.
  - probes: every node probes one member per ProbeInterval (1 s), round robin, so a node gets
    n x 1/s x 1/(n-1) ~ 1 ping/s, and 1 ack/s for its own probe;
  - gossip: every node sends, every GossipInterval (200 ms), one packet to each of
    GossipNodes = 3 random members when it has broadcasts queued: at most n x 5 x 3 / (n-1)
    ~ 15 packets/s arrive (compound, CRC, usually compressed);
  - push/pull: PushPullInterval 30 s scaled by pushPullScale for n > 32:
    30 s x (ceil(log2(n) - log2(32)) + 1) = 30 s x 10 = 300 s at n = 10,000: a node dials one
    every 300 s and is dialled about as often (~0.0067 streams/s both ways);
  - indirect pings: only when a probe fails (rare in a healthy fleet), a few per minute here.
So the steady phase sends ~1 ping + 1 ack + 15 gossip packets per second (--steady seconds).
A member is heard by one node on average every n / 17 s ~ 10 min, and with certainty only through
the node's own round-robin probe: once per n x 1 s ~ 2.8 h. A census window must be longer than
that to see every member of a quiet 10,000-node fleet; the coverage phase stands for those probes
(every talking member answers once, as its ack to our agent's probe would), at --rate packets/s.

Ground truth (deterministic for --seed): each member is one of
  sealed-A (primary key), sealed-B (second key in the ring), plaintext, silent (announced alive,
  never sends), silent-suspect (announced alive then suspect, never sends), suspect (announced
  suspect, keeps talking), dead (declared dead by another member), left (dead, From = itself).
Expected of sidecrypt at the end: /members holds every member with its state; /peers holds every
talking member with its key or plaintext and node name; `check enforce-incoming` answers no and
names exactly the plaintext members (plaintext) and the silent live members (silent), nothing
else. Then a conversion phase: every live member (plaintext and silent ones included) sends
sealed with the primary; the check over a window that starts after it must answer yes.

Measured (3 peers, then the full fleet): CPU seconds per second from /proc/PID/stat in the
steady and coverage phases, VmRSS / VmHWM idle, with 3 and with n peers, /metrics size, series
and render time (median of 5), /peers full and paged (limit=500) latency, check latency (wall
time of `ip netns exec sc sidecrypt check enforce-incoming --json`, median of 20).
"""
import argparse
import base64
import hashlib
import http.client
import ipaddress
import json
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402
import memberlist_wire as w  # noqa: E402

SC_IP = "10.250.1.1"
GEN_IP = "10.250.1.2"
FLEET_NET = ipaddress.ip_network("10.250.64.0/18")
PORT = 7946
AGENT_NODE = "sc-agent"
ADMIN = "127.0.0.1:9920"
METRICS = "127.0.0.1:9921"
IP_TRANSPARENT = 19
IP_PKTINFO = 8
CLASSES = ("sealed-A", "sealed-B", "plaintext", "silent", "silent-suspect", "suspect", "dead",
           "left")


def log(*a):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), " ".join(str(x) for x in a)), flush=True)


# --- population and ground truth ---------------------------------------------------------------

def member_addresses(n):
    """n addresses of 10.250.64.0/18, skipping .0 and .255 last octets."""
    out = []
    for a in FLEET_NET.hosts():
        if a.packed[3] in (0, 255):
            continue
        out.append(str(a))
        if len(out) == n:
            return out
    raise SystemExit("--members: at most %d fit in %s" % (len(out), FLEET_NET))


def population(n, seed):
    """[{name, addr, cls, inc}] with fixed shares; each class has at least one member."""
    rng = random.Random(seed)
    shares = [("plaintext", 0.03), ("sealed-B", 0.10), ("silent", 0.01),
              ("silent-suspect", 0.005), ("suspect", 0.01), ("dead", 0.02), ("left", 0.01)]
    addrs = member_addresses(n)
    idx = list(range(n))
    rng.shuffle(idx)
    cls = ["sealed-A"] * n
    pos = 0
    for c, share in shares:
        k = max(1, int(round(n * share)))
        for i in idx[pos:pos + k]:
            cls[i] = c
        pos += k
    # the 3-peer phase uses the first three members: make them talkers
    for i in range(min(3, n)):
        if cls[i] not in ("sealed-A", "sealed-B", "plaintext"):
            j = next(j for j in range(3, n) if cls[j] == "sealed-A")
            cls[i], cls[j] = "sealed-A", cls[i]
    out = [{"name": "node-%05d" % (i + 1), "addr": addrs[i], "cls": cls[i],
            "inc": rng.randint(1, 50)} for i in range(n)]
    for m in out:
        m["state"] = {"dead": "dead", "left": "left", "suspect": "suspect",
                      "silent-suspect": "suspect"}.get(m["cls"], "alive")
    return out


def talks(m):
    return m["cls"] in ("sealed-A", "sealed-B", "plaintext", "suspect")


def state_of(m):
    return m["state"]


def expected(members):
    live = [m for m in members if state_of(m) in ("alive", "suspect")]
    return {"plaintext": {m["addr"] for m in members if m["cls"] == "plaintext"},
            "silent": {m["addr"] for m in live if not talks(m)}}


# --- the generator (runs its sockets in `gen`) -------------------------------------------------

class Generator:
    def __init__(self, gen_ns, keys, seed):
        self.keys = keys  # {"A": bytes, "B": bytes}
        self.rng = random.Random(seed + 1)
        self.sent = {"udp": 0, "udp_bytes": 0, "streams": 0, "stream_replies_sealed": 0,
                     "stream_replies_other": 0, "stream_errors": 0}
        self.kinds = {}
        with gen_ns:
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
            self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            self.udp.bind(("0.0.0.0", PORT))
        self.gen_ns = gen_ns
        self.seq = self.rng.randint(1, 1 << 20)

    def next_seq(self):
        self.seq += 1
        return self.seq

    def wrap(self, m, sender, crc=True, compress=None):
        """memberlist's send pipeline: compress if asked and shorter, CRC, seal by class."""
        if compress is None:
            compress = self.rng.random() < 0.5
        if compress:
            c = w.compress(m)
            if len(c) < len(m):
                m = c
                self.kinds["compressed"] = self.kinds.get("compressed", 0) + 1
        if crc:
            m = w.with_crc(m)
        if sender["cls"] == "plaintext":
            return m
        return w.seal(self.keys["B" if sender["cls"] == "sealed-B" else "A"], m)

    def send(self, sender, payload, kind):
        anc = [(socket.SOL_IP, IP_PKTINFO,
                struct.pack("=I4s4s", 0, socket.inet_aton(sender["addr"]), b"\0" * 4))]
        for attempt in range(50):
            try:
                self.udp.sendmsg([payload], anc, 0, (SC_IP, PORT))
                break
            except BlockingIOError:
                time.sleep(0.001)
        self.sent["udp"] += 1
        self.sent["udp_bytes"] += len(payload)
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        sender["sent"] = sender.get("sent", 0) + 1

    def ping_pkt(self, sender):
        return w.ping(self.next_seq(), AGENT_NODE, sender["addr"], PORT, sender["name"])

    def ack_pkt(self):
        # Serf puts [1] + a msgpack coordinate in the ack payload; any bytes do here.
        return w.ack(self.next_seq(), w.Raw(b"\x01" + w.pack({"Vec": b"\0" * 8})))

    def gossip(self, sender, parts):
        """Broadcasts packed as memberlist does: compound up to ~1400 bytes, CRC."""
        batch, size = [], 3
        for p in parts:
            if batch and (size + 2 + len(p) > 1400 or len(batch) == 127):
                self.send(sender, self.wrap(w.compound(batch), sender), "gossip-compound")
                batch, size = [], 3
            batch.append(p)
            size += 2 + len(p)
        if batch:
            m = w.compound(batch) if len(batch) > 1 else batch[0]
            self.send(sender, self.wrap(m, sender), "gossip-compound" if len(batch) > 1
                      else "gossip-single")

    def push_pull(self, sender, states, timeout=5.0):
        """A push/pull stream dialled from the member's address: compressed (as memberlist with
        compression on), sealed as one frame unless the member is plaintext; the reply read."""
        body = w.compress(w.push_pull(states, b"\x02" + w.pack({"LTime": 1})))
        data = body if sender["cls"] == "plaintext" else w.stream_frame(
            self.keys["B" if sender["cls"] == "sealed-B" else "A"], body)
        self.sent["streams"] += 1
        sender["sent"] = sender.get("sent", 0) + 1
        try:
            with self.gen_ns:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            with s:
                s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
                s.settimeout(timeout)
                s.bind((sender["addr"], 0))
                s.connect((SC_IP, PORT))
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                reply = b""
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
            if reply[:1] == bytes([w.ENCRYPT]):
                self.sent["stream_replies_sealed"] += 1
            else:
                self.sent["stream_replies_other"] += 1
        except OSError as e:
            self.sent["stream_errors"] += 1
            log("push/pull from", sender["addr"], "failed:", e)

    def close(self):
        self.udp.close()


def paced(items, rate, fn, budget_s):
    """fn(item) for each item at `rate` per second; stops at budget_s (bounded)."""
    start = time.monotonic()
    for i, it in enumerate(items):
        target = start + i / rate
        now = time.monotonic()
        if now - start > budget_s:
            log("WARNING: pacing budget of %.0fs used up after %d of %d" % (budget_s, i,
                                                                             len(items)))
            return i
        if target > now:
            time.sleep(target - now)
        fn(it)
    return len(items)


# --- the discard "agent" inside `sc` -----------------------------------------------------------

class Sink:
    def __init__(self, sc_ns):
        self.udp_packets = 0
        self.streams = 0
        self.stop = threading.Event()
        with sc_ns:
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            self.udp.bind((SC_IP, PORT))
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.tcp.bind((SC_IP, PORT))
            self.tcp.listen(128)
        self.udp.settimeout(0.2)
        self.tcp.settimeout(0.2)
        self.threads = [threading.Thread(target=self._udp, daemon=True),
                        threading.Thread(target=self._tcp, daemon=True)]
        for t in self.threads:
            t.start()

    def _udp(self):
        while not self.stop.is_set():
            try:
                self.udp.recv(65536)
                self.udp_packets += 1
            except socket.timeout:
                pass
            except OSError:
                return

    def _tcp(self):
        while not self.stop.is_set():
            try:
                c, _ = self.tcp.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._session, args=(c,), daemon=True).start()

    def _session(self, c):
        with c:
            c.settimeout(1.0)
            got = 0
            deadline = time.monotonic() + 10
            try:
                while time.monotonic() < deadline:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    got += len(chunk)
            except socket.timeout:
                pass
            except OSError:
                return
            if got:
                self.streams += 1
                try:
                    c.sendall(w.push_pull([(AGENT_NODE, SC_IP, 1, 0)]))
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(2)
        self.udp.close()
        self.tcp.close()


# --- sidecrypt, its admin API and /proc -------------------------------------------------------

def http_get(ns, addr, path, timeout=30.0):
    host, port = addr.rsplit(":", 1)
    with ns:
        c = http.client.HTTPConnection(host, int(port), timeout=timeout)
        t0 = time.perf_counter()
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        dt = time.perf_counter() - t0
        c.close()
    return r.status, body, dt


def proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_mem(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])  # kB
    return out


def udp_errors(ns_name):
    r = harness.sh("ip", "netns", "exec", ns_name, "cat", "/proc/net/snmp")
    lines = [l.split() for l in r.stdout.splitlines() if l.startswith("Udp:")]
    d = dict(zip(lines[0][1:], (int(x) for x in lines[1][1:])))
    return {k: d.get(k, 0) for k in ("InDatagrams", "InErrors", "RcvbufErrors")}


def median_time(fn, n):
    ts = []
    last = None
    for _ in range(n):
        t0 = time.perf_counter()
        last = fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), last


def metrics_stats(sc_ns):
    times, body = [], b""
    for _ in range(5):
        st, body, dt = http_get(sc_ns, METRICS, "/metrics")
        times.append(dt)
    series = [l for l in body.decode(errors="replace").splitlines() if l and l[0] != "#"]
    names = {l.split("{", 1)[0].split(" ", 1)[0] for l in series}
    return {"bytes": len(body), "series": len(series), "metric_names": len(names),
            "render_ms_median": round(statistics.median(times) * 1000, 2),
            "peer_series": sum(1 for l in series if l.startswith("sidecrypt_peer_"))}, body


def metric_values(body, name):
    out = {}
    for l in body.decode(errors="replace").splitlines():
        if l.startswith(name + "{") or l.startswith(name + " "):
            k, _, v = l.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def peers_stats(sc_ns):
    full = []
    for _ in range(3):
        st, body, dt = http_get(sc_ns, ADMIN, "/peers")
        full.append(dt)
    peers = json.loads(body)
    res = {"full_ms_median": round(statistics.median(full) * 1000, 2), "full_bytes": len(body),
           "count": len(peers) if isinstance(peers, list) else None}
    # paged (issue 17 API): first page, then the whole walk
    firsts = []
    for _ in range(3):
        st, b1, dt1 = http_get(sc_ns, ADMIN, "/peers?limit=500")
        firsts.append(dt1)
    dt1 = statistics.median(firsts)
    try:
        page = json.loads(b1)
    except ValueError:
        page = None
    if isinstance(page, dict) and "peers" in page:
        walk_t0 = time.perf_counter()
        pages, n, after = 0, 0, None
        for _ in range(10000):
            q = "/peers?limit=500" + ("&after=" + after if after else "")
            _, b, _ = http_get(sc_ns, ADMIN, q)
            p = json.loads(b)
            pages += 1
            n += len(p["peers"])
            after = p.get("next")
            if not after:
                break
        res.update(paged_first_ms=round(dt1 * 1000, 2), paged_total=page.get("total"),
                   paged_walk_ms=round((time.perf_counter() - walk_t0) * 1000, 2),
                   paged_pages=pages, paged_seen=n)
    else:
        res.update(paged_first_ms=None, paged_note="no paging in this build (status %d, %s)"
                   % (st, "a JSON array" if isinstance(page, list) else "not paged"))
    return res, peers


def run_check(sc_name, binary, within_s):
    r = subprocess.run(["ip", "netns", "exec", sc_name, binary, "check", "enforce-incoming",
                        "--json", "--within", "%ds" % within_s, "--admin", ADMIN],
                       capture_output=True, text=True, timeout=60)
    try:
        j = json.loads(r.stdout)
    except ValueError:
        j = None
    return r.returncode, j, r.stderr


def check_stats(sc_name, binary, within_s, n=20):
    ts = []
    rc = j = err = None
    for _ in range(n):
        t0 = time.perf_counter()
        rc, j, err = run_check(sc_name, binary, within_s)
        ts.append(time.perf_counter() - t0)
    return {"wall_ms_median": round(statistics.median(ts) * 1000, 2),
            "wall_ms_max": round(max(ts) * 1000, 2), "exit_code": rc}, j, err


def classify_reasons(j):
    """{class: set(peer address)} from the check's JSON; old builds have no `class`: the
    `why` text tells."""
    out = {}
    for r in (j or {}).get("reasons", []):
        c = r.get("class")
        if not c:
            why = r.get("why", "")
            c = ("plaintext" if why.startswith("sent plaintext") else
                 "silent" if "silent" in why else
                 "no_traffic" if "no peer traffic" in why else "other")
        if c == "refused":
            c = "plaintext"
        out.setdefault(c, set()).add(r.get("peer", ""))
    return out


def compare(name, want, got):
    tp = want & got
    res = {"expected": len(want), "named": len(got), "correct": len(tp),
           "recall": round(len(tp) / len(want), 6) if want else 1.0,
           "precision": round(len(tp) / len(got), 6) if got else 1.0,
           "missed": sorted(want - got)[:20], "false": sorted(got - want)[:20]}
    res["ok"] = not (want - got) and not (got - want)
    return res


def verify(members, sc_ns, check_json, check_rc, peers, within_note, peer_class=True):
    exp = expected(members)
    got = classify_reasons(check_json)
    v = {"check_exit_code": check_rc, "check_ok_field": (check_json or {}).get("ok"),
         "reason_classes": {k: len(s) for k, s in got.items()},
         "plaintext": compare("plaintext", exp["plaintext"], got.get("plaintext", set())),
         "silent": compare("silent", exp["silent"], got.get("silent", set())),
         "window": within_note}
    unexpected = {k: sorted(s)[:10] for k, s in got.items() if k not in ("plaintext", "silent")}
    # each reason should name the member's node too (an operator acts on names)
    name_of = {m["addr"]: m["name"] for m in members}
    unnamed = ["%s want %s got %r" % (r.get("peer"), name_of.get(r.get("peer")), r.get("node"))
               for r in (check_json or {}).get("reasons", [])
               if r.get("peer") in name_of and r.get("node") != name_of[r.get("peer")]]
    v["reasons_node_wrong"] = len(unnamed)
    v["reasons_node_wrong_sample"] = unnamed[:10]
    v["unexpected_reasons"] = unexpected
    want_no = bool(exp["plaintext"] or exp["silent"])
    v["check_answer_ok"] = (check_rc == 1) if want_no else (check_rc == 0)
    # /members
    st, body, _ = http_get(sc_ns, ADMIN, "/members")
    mj = json.loads(body)
    mlist = mj.get("members", mj) if isinstance(mj, dict) else mj
    by_name = {m["name"]: m for m in mlist}
    wrong_state, missing, wrong_addr = [], [], []
    for m in members:
        g = by_name.get(m["name"])
        if g is None:
            missing.append(m["name"])
        elif g.get("state") != state_of(m):
            wrong_state.append("%s want %s got %s" % (m["name"], state_of(m), g.get("state")))
        elif g.get("address") != m["addr"]:
            wrong_addr.append("%s want %s got %s" % (m["name"], m["addr"], g.get("address")))
    extra = sorted(set(by_name) - {m["name"] for m in members} - {AGENT_NODE})
    v["members"] = {"expected": len(members), "listed": len(by_name), "missing": len(missing),
                    "missing_sample": missing[:10], "wrong_state": len(wrong_state),
                    "wrong_state_sample": wrong_state[:10], "wrong_address": len(wrong_addr),
                    "wrong_address_sample": wrong_addr[:10], "extra": extra[:10]}
    v["members"]["ok"] = not (missing or wrong_state or wrong_addr or extra)
    # /peers: every talking member, its node name, plaintext or its key
    by_addr = {p["address"]: p for p in peers} if isinstance(peers, list) else {}
    talkers = [m for m in members if m.get("sent")]
    pmiss, pnode, pclass = [], [], []
    for m in talkers:
        p = by_addr.get(m["addr"])
        if p is None:
            pmiss.append(m["addr"])
            continue
        if p.get("node") != m["name"]:
            pnode.append("%s want %s got %r" % (m["addr"], m["name"], p.get("node")))
        g = p.get("gossip", {})
        pt = g.get("packets_plaintext", 0) + g.get("streams_plaintext", 0) + \
            g.get("packets_refused", 0)
        if peer_class and (m["cls"] == "plaintext") != (pt > 0):
            pclass.append("%s (%s) plaintext=%d" % (m["addr"], m["cls"], pt))
    v["peers"] = {"expected": len(talkers), "listed": len(by_addr), "missing": len(pmiss),
                  "missing_sample": pmiss[:10], "wrong_node": len(pnode),
                  "wrong_node_sample": pnode[:10], "wrong_class": len(pclass),
                  "wrong_class_sample": pclass[:10],
                  "extra": sorted(set(by_addr) - {m["addr"] for m in talkers})[:10]}
    v["peers"]["ok"] = not (pmiss or pnode or pclass or v["peers"]["extra"])
    v["ok"] = (v["plaintext"]["ok"] and v["silent"]["ok"] and not unexpected
               and v["check_answer_ok"] and v["members"]["ok"] and v["peers"]["ok"])
    return v


def fingerprint(key):
    return hashlib.sha256(key).hexdigest()[:8]


# --- the run -----------------------------------------------------------------------------------

def measure_point(label, sc_ns, sc_name, binary, pid, within_s, members, checks):
    log("measuring:", label)
    mem = {"before": proc_mem(pid)}
    cstats, cj, cerr = check_stats(sc_name, binary, within_s, checks)
    mem["after_checks"] = proc_mem(pid)
    mstats, mbody = metrics_stats(sc_ns)
    mem["after_metrics"] = proc_mem(pid)
    pstats, peers = peers_stats(sc_ns)
    mem["after_peers"] = proc_mem(pid)
    point = {"metrics": mstats, "peers": pstats, "check": cstats, "mem_kb": proc_mem(pid),
             "mem_by_call_kb": mem}
    st, b, dt = http_get(sc_ns, ADMIN, "/check/enforce-incoming?within=%d" % within_s)
    point["check_endpoint"] = {"status": st, "ms": round(dt * 1000, 2)}
    point["verify"] = verify(members, sc_ns, cj, cstats["exit_code"], peers,
                             "--within %ds" % within_s)
    if cj is None:
        point["verify"]["check_stderr"] = cerr[-500:]
    gauges = {}
    for name in ("sidecrypt_census_plaintext_peers", "sidecrypt_census_silent_members",
                 "sidecrypt_census_peers", "sidecrypt_census_key_peers",
                 "sidecrypt_gossip_members", "sidecrypt_census_dropped_total",
                 "sidecrypt_census_evictions_total", "sidecrypt_check_ok"):
        gauges.update(metric_values(mbody, name))
    point["gauges"] = gauges
    point["verify"]["gauges"] = verify_gauges(gauges, members)
    if point["verify"]["gauges"]["mismatch"]:
        point["verify"]["ok"] = False
    return point


def verify_gauges(g, members):
    """The census gauges of issue 17 (when the build has them) against the ground truth."""
    import re
    sent = [m for m in members if m.get("sent")]
    want = {"sidecrypt_census_plaintext_peers":
            sum(1 for m in sent if m["cls"] == "plaintext"),
            "sidecrypt_census_silent_members": len(expected(members)["silent"])}
    for st in ("alive", "suspect", "dead", "left"):
        want['sidecrypt_gossip_members{state="%s"}' % st] = sum(1 for m in members
                                                               if m["state"] == st)
    key_peers = {"A": sum(1 for m in sent if m["cls"] in ("sealed-A", "suspect")),
                 "B": sum(1 for m in sent if m["cls"] == "sealed-B")}
    out = {"checked": {}, "mismatch": {}}
    for k, v in want.items():
        if k in g:
            got = int(g[k])
            out["checked"][k] = [v, got]
            # the agent itself (sc-agent, known from its push/pull replies) may count as alive
            if got != v and not (k.endswith('"alive"}') and got == v + 1):
                out["mismatch"][k] = {"want": v, "got": got}
    for k, v in g.items():
        mm = re.match(r'sidecrypt_census_key_peers\{.*fingerprint="([0-9a-f]+)"', k)
        if mm:
            which = [n for n, fp in FPS.items() if fp == mm.group(1)]
            if which:
                out["checked"][k] = [key_peers[which[0]], int(v)]
                if int(v) != key_peers[which[0]]:
                    out["mismatch"][k] = {"want": key_peers[which[0]], "got": int(v)}
    return out


FPS = {}


def main():
    ap = argparse.ArgumentParser(description="synthetic memberlist fleet against one sidecrypt",
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "sidecrypt"))
    ap.add_argument("--members", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--steady", type=float, default=30.0,
                    help="seconds of traffic at one node's memberlist rates (default 30)")
    ap.add_argument("--rate", type=float, default=2000.0,
                    help="packets/s of the announce and coverage phases (default 2000)")
    ap.add_argument("--pushpulls", type=int, default=40,
                    help="push/pull streams dialled in the coverage phase (default 40)")
    ap.add_argument("--full-pushpulls", type=int, default=1,
                    help="of those, carrying every member's state (default 1)")
    ap.add_argument("--checks", type=int, default=20, help="check runs per point (median)")
    ap.add_argument("--no-stale-alive", dest="stale_alive", action="store_false",
                    help="skip the late alive retransmits for dead/left members before the "
                    "measurement (they must not revive them)")
    ap.add_argument("--stage", type=int, choices=(2, 3), default=2,
                    help="rollout stage of sidecrypt: 2 accepts plaintext (counted), 3 refuses "
                    "it (encrypt_verify_incoming on); the check must name the senders either way")
    ap.add_argument("--out", help="write the JSON result here")
    ap.add_argument("--label", default="", help="a name for this build in the result")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    harness.require_root("network namespaces and sidecrypt's intercept rules")
    binary = os.path.abspath(a.bin)
    os.environ["SIDECRYPT_BIN"] = binary

    # SIGTERM/SIGINT -> exception, so the finally below cleans up
    def _stop(sig, _frame):
        raise KeyboardInterrupt("signal %d" % sig)
    signal.signal(signal.SIGTERM, _stop)

    members = population(a.members, a.seed)
    keys = {"A": os.urandom(32), "B": os.urandom(32)}
    FPS.update(A=fingerprint(keys["A"]), B=fingerprint(keys["B"]))
    work = harness.Workdir()
    tag = "scl%d" % (os.getpid() % 100000)
    sc_name, gen_name = tag + "sc", tag + "gen"
    sc_ns = gen_ns = proc = sink = gen = None
    result = {"label": a.label, "binary": binary, "members": a.members, "seed": a.seed,
              "stage": a.stage,
              "machine": {"nproc": os.cpu_count(), "kernel": os.uname().release,
                          "loadavg_start": os.getloadavg()},
              "classes": {c: sum(1 for m in members if m["cls"] == c) for c in CLASSES},
              "fingerprints": {"A": fingerprint(keys["A"]), "B": fingerprint(keys["B"])}}
    ver = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    result["version"] = (ver.stdout or ver.stderr).strip()
    rc = 1
    try:
        sc_ns = harness.Netns(sc_name, lo_up=True)
        gen_ns = harness.Netns(gen_name, lo_up=True)
        va, vb = tag + "a", tag + "b"
        harness.sh("ip", "link", "add", va, "netns", sc_name, "type", "veth", "peer", "name", vb,
                   "netns", gen_name)
        harness.sh("ip", "-n", sc_name, "addr", "add", SC_IP + "/24", "dev", va)
        harness.sh("ip", "-n", gen_name, "addr", "add", GEN_IP + "/24", "dev", vb)
        harness.sh("ip", "-n", sc_name, "link", "set", va, "up")
        harness.sh("ip", "-n", gen_name, "link", "set", vb, "up")
        harness.sh("ip", "-n", gen_name, "route", "add", "local", str(FLEET_NET), "dev", "lo")
        harness.sh("ip", "-n", sc_name, "route", "add", str(FLEET_NET), "via", GEN_IP)
        for ns in (sc_name, gen_name):  # many peers: room for the neighbour entry and bursts
            harness.sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.core.rmem_max=16777216",
                       "net.core.wmem_max=16777216", check=False)

        data = os.path.join(work.path, "data")
        os.makedirs(os.path.join(data, "serf"), mode=0o700)
        ring = os.path.join(data, "serf", "local.keyring")
        with open(ring, "w") as f:
            json.dump([base64.b64encode(keys["A"]).decode(), base64.b64encode(keys["B"]).decode()],
                      f)
        os.chmod(ring, 0o600)
        cfg = os.path.join(work.path, "proxy.toml")
        with open(cfg, "w") as f:
            f.write("\n".join([
                "[agent]", 'profile = "serf"', 'data_dir = "%s"' % data,
                'node_name = "%s"' % AGENT_NODE,
                "[gossip]", "encrypt_verify_incoming = %s" % ("true" if a.stage == 3 else "false"),
                "encrypt_verify_outgoing = true",
                "[intercept]", "install_rules = true", 'drain_time = "0s"',
                "[log]", 'level = "info"', ""]))
        logf = open(os.path.join(work.path, "sidecrypt.log"), "w")
        proc = subprocess.Popen(["ip", "netns", "exec", sc_name, binary, "run", "--config", cfg],
                                stdout=logf, stderr=subprocess.STDOUT)
        harness.wait_for(lambda: "started:" in harness.read(logf.name) or proc.poll() is not None,
                         20, what="sidecrypt started")
        if proc.poll() is not None:
            raise RuntimeError("sidecrypt exited: " + harness.read(logf.name)[-2000:])
        pid = proc.pid
        with open("/proc/%d/comm" % pid) as f:
            assert f.read().strip().startswith("sidecrypt"), "pid is not sidecrypt's"
        sink = Sink(sc_ns)
        gen = Generator(gen_ns, keys, a.seed)
        t_start = time.time()
        time.sleep(1.0)
        result["mem_idle_kb"] = proc_mem(pid)
        udp0 = udp_errors(sc_name)

        # --- phase 1: three peers --------------------------------------------------------------
        three = members[:3]
        for m in three:
            gen.gossip(m, [w.alive(x["name"], x["addr"], x["inc"]) for x in three])
            gen.send(m, gen.wrap(gen.ping_pkt(m), m, crc=False, compress=False), "ping")
            gen.send(m, gen.wrap(gen.ack_pkt(), m, crc=False, compress=False), "ack")
        gen.push_pull(three[0], [(x["name"], x["addr"], x["inc"], 0) for x in three])
        time.sleep(1.0)
        # the window covers all traffic but not the time before start (else: census_young)
        within = max(1, int(time.time() - t_start))
        result["three"] = measure_point("3 peers", sc_ns, sc_name, binary, pid, within, three,
                                        a.checks)

        # --- phase 2: announce every member (gossip from talking members) ----------------------
        talkers = [m for m in members if talks(m)]
        rng = random.Random(a.seed + 2)
        log("announce: alive for %d members, then suspect/dead" % len(members))
        t0 = time.monotonic()
        msgs = [w.alive(m["name"], m["addr"], m["inc"]) for m in members]
        msgs += [w.suspect(m["name"], m["inc"], rng.choice(talkers)["name"]) for m in members
                 if state_of(m) == "suspect"]
        msgs += [w.dead(m["name"], m["inc"], m["name"] if m["cls"] == "left"
                        else rng.choice(talkers)["name"]) for m in members
                 if m["cls"] in ("dead", "left")]
        # ~15 messages per compound as a 1400-byte gossip packet holds; alive before suspect/dead
        chunks = [msgs[i:i + 15] for i in range(0, len(msgs), 15)]
        # At stage 3 sidecrypt refuses plaintext, so what a plaintext member gossips reaches
        # neither the agent nor the census: announcements then come from sealed members (in a
        # real fleet every state change is relayed by many members, most of them sealed).
        announcers = talkers if a.stage == 2 else [m for m in talkers if m["cls"] != "plaintext"]
        paced(chunks, a.rate, lambda c: gen.gossip(rng.choice(announcers), c), 600)
        result["announce_s"] = round(time.monotonic() - t0, 2)
        time.sleep(0.5)
        mem = result["mem_steps_kb"] = {"idle": result["mem_idle_kb"]}
        mem["members_announced"] = proc_mem(pid)

        # --- phase 3: steady memberlist rates ---------------------------------------------------
        log("steady: %.0fs at ~1 ping + 1 ack + 15 gossip packets/s" % a.steady)
        cpu0, t0 = proc_cpu(pid), time.monotonic()
        end = t0 + a.steady
        tick = 0
        refresh = [w.alive(m["name"], m["addr"], m["inc"]) for m in members]
        while time.monotonic() < end:
            tick += 1
            s = rng.choice(talkers)
            gen.send(s, gen.wrap(gen.ping_pkt(s), s, crc=False, compress=False), "ping")
            s = rng.choice(talkers)
            gen.send(s, gen.wrap(gen.ack_pkt(), s, crc=False, compress=False), "ack")
            for _ in range(15):
                s = rng.choice(talkers)
                gen.gossip(s, rng.sample(refresh, min(8, len(refresh))))
            if tick % 20 == 0:
                s, t = rng.choice(talkers), rng.choice(talkers)
                gen.send(s, gen.wrap(w.indirect_ping(gen.next_seq(), t["addr"], t["name"],
                                                     s["addr"], s["name"]), s, crc=False,
                                     compress=False), "indirect-ping")
            if tick % 10 == 0:
                s = rng.choice(talkers)
                gen.send(s, gen.wrap(w.compound([gen.ping_pkt(s), w.nack(gen.next_seq())]), s),
                         "compound-ping-nack")
            nxt = t0 + tick
            if nxt > time.monotonic():
                time.sleep(nxt - time.monotonic())
        dt = time.monotonic() - t0
        result["steady"] = {"seconds": round(dt, 2), "cpu_s": round(proc_cpu(pid) - cpu0, 3),
                            "cpu_s_per_s": round((proc_cpu(pid) - cpu0) / dt, 5)}

        # --- phase 4: coverage (every talking member heard, as acks to our probes) -------------
        log("coverage: every talking member (%d) once at %.0f packets/s, %d push/pulls"
            % (len(talkers), a.rate, a.pushpulls))
        order = list(talkers)
        rng.shuffle(order)
        sent0 = gen.sent["udp"]
        cpu0, t0 = proc_cpu(pid), time.monotonic()

        def cover(m):
            r = rng.random()
            if r < 0.7:
                gen.send(m, gen.wrap(gen.ack_pkt(), m, crc=False, compress=False), "ack")
            elif r < 0.9:
                gen.send(m, gen.wrap(gen.ping_pkt(m), m, crc=False, compress=False), "ping")
            else:
                gen.send(m, gen.wrap(w.compound([gen.ping_pkt(m),
                                                 w.alive(m["name"], m["addr"], m["inc"])]), m),
                         "gossip-compound")
        paced(order, a.rate, cover, 900)
        dt = time.monotonic() - t0
        cov_pkts = gen.sent["udp"] - sent0
        time.sleep(0.5)
        mem["all_peers_heard"] = proc_mem(pid)
        result["coverage"] = {"seconds": round(dt, 2), "packets": cov_pkts,
                              "cpu_s": round(proc_cpu(pid) - cpu0, 3),
                              "cpu_s_per_s": round((proc_cpu(pid) - cpu0) / dt, 4),
                              "cpu_us_per_packet": round((proc_cpu(pid) - cpu0) / cov_pkts * 1e6,
                                                         2)}
        # push/pulls: plaintext members among the diallers, one with every member's state
        n_plain = min(a.pushpulls, max(1, a.pushpulls // 10))
        pp_from = [m for m in order if m["cls"] == "plaintext"][:n_plain]
        pp_from += [m for m in order if m["cls"] != "plaintext"][:max(0, a.pushpulls - n_plain)]
        all_states = [(m["name"], m["addr"], m["inc"],
                       {"alive": 0, "suspect": 1, "dead": 2, "left": 3}[state_of(m)])
                      for m in members]
        t0 = time.monotonic()
        cpu0 = proc_cpu(pid)
        for i, m in enumerate(pp_from):
            full = i < a.full_pushpulls
            states = all_states if full else rng.sample(all_states, min(40, len(all_states)))
            gen.push_pull(m, states)
        result["pushpull"] = {"streams": len(pp_from), "full_state_members": len(all_states),
                              "seconds": round(time.monotonic() - t0, 2),
                              "cpu_s": round(proc_cpu(pid) - cpu0, 3)}
        # Late retransmits: gossip keeps rebroadcasting an alive message a few times after it
        # was queued, so a stale alive (same incarnation) of a member that has since died or
        # left still arrives. memberlist ignores it (aliveNode: incarnation not newer); the
        # census must too.
        sealed = [m for m in talkers if m["cls"] != "plaintext"]
        gone = [w.alive(m["name"], m["addr"], m["inc"]) for m in members
                if m["state"] in ("dead", "left")]
        if a.stale_alive:
            for i in range(0, len(gone), 15):
                gen.gossip(rng.choice(sealed), gone[i:i + 15])
        result["stale_alive_sent"] = len(gone) if a.stale_alive else 0
        time.sleep(1.0)
        mem["after_pushpulls"] = proc_mem(pid)
        result["sent"] = dict(gen.sent)
        result["sent_kinds"] = dict(gen.kinds)
        result["sink"] = {"udp_packets": sink.udp_packets, "streams": sink.streams}
        udp1 = udp_errors(sc_name)
        result["sc_udp_errors"] = {k: udp1[k] - udp0[k] for k in udp0}
        # the window covers all traffic but not the time before start (else: census_young)
        within = max(1, int(time.time() - t_start))
        result["fleet"] = measure_point("%d members" % a.members, sc_ns, sc_name, binary, pid,
                                        within, members, a.checks)
        result["mem_fleet_kb"] = mem["after_api_calls"] = proc_mem(pid)

        # --- phase 5: conversion: every live member sends sealed; the check must say yes -------
        log("conversion: every live member sends sealed with the primary key")
        time.sleep(2.0)
        t_conv = time.time()
        live = [m for m in members if state_of(m) in ("alive", "suspect")]
        converted = [dict(m, cls="sealed-A" if m["cls"] in ("plaintext", "silent",
                                                          "silent-suspect") else m["cls"])
                     for m in members]
        conv_live = [m for m in converted if state_of(m) in ("alive", "suspect")]
        paced(conv_live, a.rate,
              lambda m: gen.send(m, gen.wrap(gen.ack_pkt(), m, crc=False, compress=False), "ack"),
              900)
        time.sleep(1.0)
        within = max(1, int(time.time() - t_conv) + 1)
        rc2, j2, err2 = run_check(sc_name, binary, within)
        st, pb, _ = http_get(sc_ns, ADMIN, "/peers")
        result["conversion"] = {"live_members": len(live), "within_s": within,
                                "verify": verify(converted, sc_ns, j2, rc2, json.loads(pb),
                                                 "--within %ds" % within, peer_class=False)}
        if j2 is None:
            result["conversion"]["check_stderr"] = err2[-500:]
        result["mem_end_kb"] = proc_mem(pid)
        result["proxy_alive_at_end"] = proc.poll() is None
        result["loadavg_end"] = os.getloadavg()
        ok = (result["fleet"]["verify"]["ok"] and result["three"]["verify"]["ok"]
              and result["conversion"]["verify"]["ok"] and result["proxy_alive_at_end"])
        result["ok"] = ok
        rc = 0 if ok else 3
    except KeyboardInterrupt as e:
        log("interrupted:", e)
        rc = 130
    finally:
        if gen:
            gen.close()
        if sink:
            sink.close()
        if proc and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for ns in (gen_ns, sc_ns):
            if ns:
                ns.delete()
        if a.keep or rc == 1:  # an unexpected error: keep the logs and configs
            print("work directory kept:", work.path)
        else:
            work.cleanup()
    if "fleet" in result:
        if a.out:
            with open(a.out, "w") as f:
                json.dump(result, f, indent=1, default=sorted)
        print(table(result))
    return rc


def table(r):
    def row(label, f3, fn):
        return "%-44s %18s %18s" % (label, f3, fn)
    t, f = r["three"], r["fleet"]
    kb = lambda x: "%.1f MB" % (x / 1024)  # noqa: E731
    lines = ["", "synthetic fleet: %s  (%s)" % (r.get("label") or r["binary"], r["version"]),
             row("", "3 peers", "%d members" % r["members"]),
             row("RSS (idle %s)" % kb(r["mem_idle_kb"]["VmRSS"]), kb(t["mem_kb"]["VmRSS"]),
                 kb(f["mem_kb"]["VmRSS"])),
             row("VmHWM", kb(t["mem_kb"]["VmHWM"]), kb(f["mem_kb"]["VmHWM"])),
             "VmRSS by step: " + ", ".join("%s %s" % (k, kb(v["VmRSS"]))
                                           for k, v in r["mem_steps_kb"].items()),
             row("/metrics series", t["metrics"]["series"], f["metrics"]["series"]),
             row("/metrics bytes", t["metrics"]["bytes"], f["metrics"]["bytes"]),
             row("/metrics render ms (median of 5)", t["metrics"]["render_ms_median"],
                 f["metrics"]["render_ms_median"]),
             row("/peers full ms (median of 3)", t["peers"]["full_ms_median"],
                 f["peers"]["full_ms_median"]),
             row("/peers?limit=500 first page ms (median of 3)", t["peers"].get("paged_first_ms"),
                 f["peers"].get("paged_first_ms")),
             row("check enforce-incoming ms (median of %d)" % 20,
                 t["check"]["wall_ms_median"], f["check"]["wall_ms_median"]),
             row("check exit code", t["check"]["exit_code"], f["check"]["exit_code"]),
             row("plaintext recall / precision",
                 "%s / %s" % (t["verify"]["plaintext"]["recall"],
                              t["verify"]["plaintext"]["precision"]),
                 "%s / %s" % (f["verify"]["plaintext"]["recall"],
                              f["verify"]["plaintext"]["precision"])),
             row("silent recall / precision",
                 "%s / %s" % (t["verify"]["silent"]["recall"], t["verify"]["silent"]["precision"]),
                 "%s / %s" % (f["verify"]["silent"]["recall"], f["verify"]["silent"]["precision"])),
             row("members listed / missing / wrong state",
                 "%d/%d/%d" % (t["verify"]["members"]["listed"], t["verify"]["members"]["missing"],
                               t["verify"]["members"]["wrong_state"]),
                 "%d/%d/%d" % (f["verify"]["members"]["listed"], f["verify"]["members"]["missing"],
                               f["verify"]["members"]["wrong_state"])),
             row("peers listed / missing", "%d/%d" % (t["verify"]["peers"]["listed"],
                                                      t["verify"]["peers"]["missing"]),
                 "%d/%d" % (f["verify"]["peers"]["listed"], f["verify"]["peers"]["missing"])),
             "steady (%ss, %d-node rates): %s CPU s/s; coverage: %d packets in %ss, %s CPU s/s, "
             "%s us/packet" % (r["steady"]["seconds"], r["members"], r["steady"]["cpu_s_per_s"],
                               r["coverage"]["packets"], r["coverage"]["seconds"],
                               r["coverage"]["cpu_s_per_s"], r["coverage"]["cpu_us_per_packet"]),
             "push/pull: %d streams (one with %d states) in %ss, %s CPU s; sc UDP errors %s"
             % (r["pushpull"]["streams"], r["pushpull"]["full_state_members"],
                r["pushpull"]["seconds"], r["pushpull"]["cpu_s"], r["sc_udp_errors"])]
    if "conversion" in r:
        cv = r["conversion"]["verify"]
        lines.append("after conversion (--within %ds): check exit %s (want 0), reasons %s"
                     % (r["conversion"]["within_s"], cv["check_exit_code"], cv["reason_classes"]))
    lines.append("RESULT: %s" % ("census exact, check right both ways" if r.get("ok") else
                                 "MISMATCH (see the JSON: verify.*)"))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
