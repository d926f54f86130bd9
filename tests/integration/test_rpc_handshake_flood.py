"""Claim: sidecrypt's inbound RPC port survives a flood of connections that stall before or during
the TLS handshake (issue 6).

A sidecrypt server (verify_incoming, rpc_handshake_timeout = "2s") fronts a plaintext
Consul-shaped rpcpeer server in a network namespace. An attacker namespace with 50 secondary
addresses opens 2,000 connections to port 8300 (40 per address, under the per-IP limit of 100),
in four shapes, interleaved: sends nothing; sends 0x03 and stops; sends 0x03 and part of a
ClientHello; sends 0x03 and a whole ClientHello, then never answers the server's flight (stalled
mid-handshake). The flood runs twice (fresh source ports each wave). Asserted:
- memory stays bounded: VmHWM of the sidecrypt process stays under 200 MB, grows by at most
  12 KiB per stalled connection over the baseline, and the second wave does not raise it
  further (a 64 KiB read buffer per connection, freed at the cut, used to leave more of the
  heap resident with every wave: 32 MB, then 49 MB, ... 130 MB after six); peak RSS,
  descriptors and lifetimes are printed; open descriptors and active sessions return to the
  baseline;
- every stalled connection is cut at the deadline: the attacker sees each close no earlier than
  2 s - 0.25 s and no later than 2 s + 1.5 s after its connect completed;
- a legitimate Go client (rpcpeer client -tls -verify-server-hostname -mode rpc) is served on
  every run, run back to back during both waves, sidecrypt stays alive, and no stalled connection
  reached the agent (one backend EVENT per legitimate run);
- the per-IP limit: 150 idle connections from one address leave exactly 100 open and the other
  50 are closed at once, each logged as "rejecting RPC conn from <ip> because
  rpc_max_conns_per_client (100) exceeded"; the 100 are then cut at the deadline;
- a peer reconnecting from the same address and port right after a cut (the old 4-tuple is in
  TIME_WAIT on the server, because sidecrypt closed first) is cut at the deadline like any other.

Known failures on the tree this test was written against (issue 6 report): sidecrypt does not
ignore SIGPIPE, so a legitimate Go client that closes its connection can kill it (the flood test
then fails with "killed by SIGPIPE"); and the `socket transparent 1 ... accept` rule matches a new
SYN against a TIME_WAIT socket, which bypasses the tproxy rule and leaves that connection hanging
(the reconnect test fails with "still-open"). A legitimate run that failed with "fatal error:
concurrent map writes" was rpcpeer's own bug (two yamux stream goroutines wrote its result map
unguarded; the flood's CPU load made the overlap likely), fixed in tests/peers/rpcpeer.

The attacker runs as a child of this file (`--attack JSON`, `--reconnect JSON`) inside its
namespace: standard library only, every wait bounded.
"""
import json
import os
import resource
import selectors
import socket
import ssl
import sys
import time

DEADLINE_S = 2.0      # rpc_handshake_timeout in the config below
EARLY_SLACK_S = 0.25  # a close this much before the deadline counts as "too early"
LATE_SLACK_S = 1.5    # a close later than deadline + this counts as "too late"


# ---- the attacker (runs inside the attacker's namespace) -----------------------------------------

def _client_hello():
    """A real TLS ClientHello (Python's OpenSSL, fresh key share) as it would go on the wire."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="server.dc1.consul")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def _payload(kind, hello):
    if kind == "silent":
        return b""
    if kind == "tls-byte":
        return b"\x03"
    if kind == "partial-hello":
        return b"\x03" + hello[:min(60, len(hello) - 1)]
    if kind == "whole-hello":
        return b"\x03" + hello
    raise ValueError(kind)


def _raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))  # root may raise the hard limit
    else:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def _on_readable(c):
    """Reads what arrived; returns True once the connection is closed (EOF or reset)."""
    try:
        chunk = c["sock"].recv(65536)
    except ConnectionResetError:
        chunk, c["how"] = b"", "rst"
    except BlockingIOError:
        return False
    if chunk:
        c["rx"] += len(chunk)  # the server's flight after a whole ClientHello
        return False
    c["t_close"] = time.monotonic()
    c["how"] = c["how"] or "eof"
    return True


def _attack(spec):
    """Opens the planned connections, sends each its bytes, then watches every one until it is
    closed or spec["observe"] seconds passed. Returns one record per connection."""
    target = (spec["target"], spec["port"])
    # Kinds interleaved, so every kind spreads over the whole opening phase.
    queues = [[k] * n for k, n in spec["plan"]]
    plan = [q[i] for i in range(max(len(q) for q in queues)) for q in queues if i < len(q)]
    sources = spec["sources"]
    _raise_nofile(len(plan) + 256)
    # Every payload is made before the first connect (a fresh key share per whole ClientHello),
    # so the time a connection completed is recorded without delay.
    hello = _client_hello()
    payloads = [_payload(k, _client_hello() if k == "whole-hello" else hello) for k in plan]
    sel = selectors.DefaultSelector()
    conns = []  # dicts: kind, src, sock, t_conn, t_close, how, rx
    batch = spec.get("batch", 200)
    t0 = time.monotonic()
    open_until = t0 + spec.get("open_budget", 20)  # all connects, whatever happens
    for start in range(0, len(plan), batch):
        if time.monotonic() > open_until:
            conns += [{"kind": k, "src": None, "sock": None, "t_conn": None, "t_close": None,
                       "how": "not-attempted", "rx": 0} for k in plan[start:]]
            break
        pending = {}
        for i in range(start, min(start + batch, len(plan))):
            kind = plan[i]
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            # A fixed source port per wave when asked: a 4-tuple from an earlier wave may still
            # be in TIME_WAIT on the server (see test_reconnect_from_same_port_after_cut).
            port = spec["port_base"] + i // len(sources) if spec.get("port_base") else 0
            s.bind((sources[i % len(sources)], port))
            err = s.connect_ex(target)
            c = {"kind": kind, "src": sources[i % len(sources)], "sock": s, "t_conn": None,
                 "t_close": None, "how": None, "rx": 0, "data": payloads[i]}
            conns.append(c)
            if err not in (0, 115):  # EINPROGRESS
                c["how"] = "connect-error-%d" % err
                s.close()
                continue
            pending[s.fileno()] = c
            sel.register(s, selectors.EVENT_WRITE, c)
        until = min(time.monotonic() + 10, open_until)
        while pending and time.monotonic() < until:
            for key, _ in sel.select(timeout=0.5):
                c = key.data
                if c["t_conn"] is not None:  # an earlier batch's connection: read or closed
                    if _on_readable(c):
                        sel.unregister(c["sock"])
                        c["sock"].close()
                    continue
                sel.unregister(c["sock"])
                del pending[c["sock"].fileno()]
                err = c["sock"].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    c["how"] = "connect-error-%d" % err
                    c["sock"].close()
                    continue
                c["t_conn"] = time.monotonic()
                if c["data"]:
                    c["sock"].send(c["data"])  # a few hundred bytes into an empty send buffer
                sel.register(c["sock"], selectors.EVENT_READ, c)
        for c in pending.values():
            sel.unregister(c["sock"])
            c["how"] = "connect-timeout"
            c["sock"].close()
    t_open = time.monotonic()
    open_left = sum(1 for c in conns if c["t_conn"] is not None and c["t_close"] is None)
    until = time.monotonic() + spec["observe"]
    while open_left > 0 and time.monotonic() < until:
        for key, _ in sel.select(timeout=0.2):
            c = key.data
            if _on_readable(c):
                sel.unregister(c["sock"])
                c["sock"].close()
                open_left -= 1
    for c in conns:
        if c["t_conn"] is not None and c["t_close"] is None:
            sel.unregister(c["sock"])
            c["sock"].close()
    return {"t_open_s": t_open - t0, "conns": [
        {"kind": c["kind"], "src": c["src"], "how": c["how"], "rx": c["rx"],
         "t_conn": None if c["t_conn"] is None else c["t_conn"] - t0,
         "lifetime": None if c["t_close"] is None else c["t_close"] - c["t_conn"]}
        for c in conns]}


def _reconnect(spec):
    """Twice from the same source address and port: connect, send nothing, wait (bounded) for
    sidecrypt to cut the connection at its deadline. Returns [(outcome, seconds)] per try."""
    out = []
    for _ in range(2):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout(5)
        t0 = time.monotonic()
        try:
            s.bind((spec["source"], spec["source_port"]))
            s.connect((spec["target"], spec["port"]))
            s.settimeout(spec["observe"])
            out.append(("closed" if s.recv(100) == b"" else "data", time.monotonic() - t0))
        except (socket.timeout, TimeoutError):
            out.append(("still-open", time.monotonic() - t0))
        except OSError as e:
            out.append(("error: %s" % e, time.monotonic() - t0))
        finally:
            s.close()
        time.sleep(0.2)  # our side is CLOSED by now (sidecrypt closed first: TIME_WAIT is there)
    return out


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--attack":
    json.dump(_attack(json.loads(sys.argv[2])), sys.stdout)
    sys.exit(0)
if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--reconnect":
    json.dump(_reconnect(json.loads(sys.argv[2])), sys.stdout)
    sys.exit(0)


# ---- the test (runs in the root namespace) -------------------------------------------------------

import signal  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import unittest  # noqa: E402

import harness  # noqa: E402
from test_rpcpeer_go_interop import parse_line  # noqa: E402
import test_rpcpeer_go_interop as peers  # noqa: E402

FLOOD_PLAN = [["silent", 500], ["tls-byte", 500], ["partial-hello", 500], ["whole-hello", 500]]
RSS_BOUND_KB = 200 * 1024
# Per stalled connection over the baseline (the session, its sockets' bookkeeping and, for the
# TLS shapes, BoringSSL's handshake state; measured ~7.5 KiB for the mix, ~11.5 KiB whole-hello).
PER_CONN_BOUND_KB = 12
# How much wave 2 may raise VmHWM over wave 1 (memory freed at the cut is reused, not added to).
RATCHET_SLACK_KB = 4 * 1024
N_SOURCES = 50


def proc_status(pid):
    """{'VmRSS': kB, 'VmHWM': kB, ...} of a live process."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k.startswith("Vm"):
                out[k] = int(v.split()[0])
    return out


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class Sampler(threading.Thread):
    """Samples VmRSS, VmHWM and the open descriptors of one process every 20 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.stop_ev = pid, threading.Event()
        self.peak_rss = self.peak_hwm = self.peak_fds = 0

    def run(self):
        while not self.stop_ev.is_set():
            try:
                st = proc_status(self.pid)
                self.peak_rss = max(self.peak_rss, st.get("VmRSS", 0))
                self.peak_hwm = max(self.peak_hwm, st.get("VmHWM", 0))
                self.peak_fds = max(self.peak_fds, fd_count(self.pid))
            except (FileNotFoundError, ProcessLookupError):
                return
            self.stop_ev.wait(0.02)

    def stop(self):
        self.stop_ev.set()
        self.join(5)


class RpcHandshakeFlood(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # s: server agent behind sidecrypt; a: attacker; g: a legitimate Go client.
        peers.open_lab(cls, ["s", "a", "g"], "network namespaces and netfilter")
        try:
            c = lambda n: os.path.join(cls.certs, n)
            cls.ca = c("consul-agent-ca.pem")
            cls.client_cert = [c("dc1-client-consul-0.pem"), c("dc1-client-consul-0-key.pem")]
            cfg = cls.w.file("server.toml", harness.rpc_proxy_toml(
                data_dir=os.path.join(cls.w.path, "ds"), server=True, ports=[(8300, "rpc")],
                log_level="info",
                tls={"ca_file": cls.ca, "cert_file": c("dc1-server-consul-0.pem"),
                     "key_file": c("dc1-server-consul-0-key.pem"), "verify_incoming": True,
                     "verify_outgoing": True, "verify_server_hostname": True,
                     "rpc_handshake_timeout": "%ds" % DEADLINE_S,
                     "rpc_max_conns_per_client": 100}))
            cls.cfg, cls.starts = cfg, 0
            cls.start_sidecrypt()
            cls.backend = cls.lab.spawn(
                "s", [cls.peer, "server", "-listen", cls.lab.ip("s") + ":8300", "-lifetime",
                      "600s"], os.path.join(cls.w.path, "backend.log"))
            harness.wait_for(lambda: "LISTENING" in harness.read(cls.backend.log_path), 15,
                             what="rpcpeer server")
            # The attacker's addresses: 10.250.<subnet>.100-149 for the flood, .160 for the
            # per-IP limit check, .161 for the reconnect check.
            veth = cls.lab.hosts["a"]["veth"]
            cls.sources = ["10.250.%d.%d" % (cls.lab.subnet, 100 + i) for i in range(N_SOURCES)]
            cls.limit_ip = "10.250.%d.160" % cls.lab.subnet
            cls.reconnect_ip = "10.250.%d.161" % cls.lab.subnet
            for ip in cls.sources + [cls.limit_ip, cls.reconnect_ip]:
                cls.lab.run("a", "ip", "addr", "add", ip + "/24", "dev", veth)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def start_sidecrypt(cls):
        cls.starts += 1
        cls.sc = cls.lab.spawn("s", [harness.binary(), "run", "-c", cls.cfg],
                               os.path.join(cls.w.path, "sc-server-%d.log" % cls.starts))
        harness.wait_for(lambda: "started:" in harness.read(cls.sc.log_path), 10,
                         what="sidecrypt started")
        exe = os.readlink("/proc/%d/exe" % cls.sc.pid)
        if os.path.basename(exe) != os.path.basename(harness.binary()):
            raise AssertionError("pid %d is %s, not sidecrypt" % (cls.sc.pid, exe))

    def setUp(self):
        # Each claim gets a live sidecrypt: one that died in an earlier test (that test failed
        # and said why) is started again, so the claims fail or pass independently.
        if self.sc.poll() is not None:
            type(self).start_sidecrypt()

    @classmethod
    def tearDownClass(cls):
        harness.cleanup(cls.lab, cls.w)

    # -- helpers --------------------------------------------------------------------------------

    def attack(self, plan, sources, observe, port_base=0, timeout=120, mode="--attack"):
        spec = {"target": self.lab.ip("s"), "port": 8300, "plan": plan, "sources": sources,
                "observe": observe, "port_base": port_base}
        return self.attacker(mode, spec, timeout)

    def attacker(self, mode, spec, timeout):
        r = self.lab.run("a", sys.executable, os.path.abspath(__file__), mode,
                         json.dumps(spec), check=False, timeout=timeout)
        self.assertEqual(r.returncode, 0, "attacker failed: %s" % r.stderr[-3000:])
        return json.loads(r.stdout)

    def legit_client(self):
        t0 = time.monotonic()
        r = self.lab.run("g", self.peer, "client", "-addr", self.lab.ip("s") + ":8300", "-tls",
                         "-verify-server-hostname", "-ca", self.ca, "-cert", self.client_cert[0],
                         "-key", self.client_cert[1], "-mode", "rpc", "-n", "5", "-timeout",
                         "20s", check=False, timeout=40)
        line = (r.stdout.strip().splitlines() or [""])[-1]
        word, fields = parse_line(line)
        return word == "RESULT ok" and r.returncode == 0, time.monotonic() - t0, line + r.stderr

    def assertAlive(self):
        """sidecrypt must still run; a death by signal is named (e.g. SIGPIPE)."""
        rc = self.sc.poll()
        if rc is None:
            return
        why = "exit status %d" % rc
        if rc < 0:
            why = "killed by %s" % signal.Signals(-rc).name
        if rc == -signal.SIGPIPE:
            why += (" (a write to a socket its peer had closed raised SIGPIPE, which sidecrypt "
                    "does not ignore)")
        self.fail("sidecrypt died: %s; last log lines:\n%s"
                  % (why, "\n".join(harness.read(self.sc.log_path).splitlines()[-10:])))

    def counters(self):
        self.assertAlive()
        return harness.dump_counters(self.sc)

    def backend_events(self):
        return [parse_line(l)[1] for l in harness.read(self.backend.log_path).splitlines()
                if l.startswith("EVENT")]

    def settled(self, baseline_fds, baseline_active):
        """Waits (bounded) until sidecrypt holds no more descriptors or sessions than before."""
        def back():
            return fd_count(self.sc.pid) <= baseline_fds
        harness.wait_for(back, 15, interval=0.2,
                         what="sidecrypt's descriptors back to %d" % baseline_fds)
        active = harness.counter(self.counters(), "tcp", "active")
        self.assertLessEqual(active, baseline_active, "sessions left open after the flood")
        time.sleep(0.5)
        return proc_status(self.sc.pid)["VmRSS"]

    # -- the claims -----------------------------------------------------------------------------

    def test_flood_bounded_cut_at_deadline_and_legit_client_served(self):
        # Warm-up: the path works before the flood. Twice, so that with `[runtime] loops = 2`
        # (SIDECRYPT_TEST_LOOPS) each loop has run a connection before the baseline: libuv opens
        # one reserve descriptor per loop (/dev/null, for EMFILE) at its first TCP handle.
        for _ in range(2):
            ok, _, detail = self.legit_client()
            self.assertTrue(ok, detail)
        time.sleep(0.3)
        self.assertAlive()
        events_before = len(self.backend_events())
        base_fds = fd_count(self.sc.pid)
        base_active = harness.counter(self.counters(), "tcp", "active")
        base_rss = proc_status(self.sc.pid)["VmRSS"]
        report = {"baseline_rss_kb": base_rss, "baseline_fds": base_fds, "waves": []}
        legit_runs = []
        for wave in range(2):
            sampler = Sampler(self.sc.pid)
            sampler.start()
            done = threading.Event()
            result = {}

            def run_attack():
                try:
                    result["r"] = self.attack(FLOOD_PLAN, self.sources,
                                              observe=DEADLINE_S + LATE_SLACK_S + 5,
                                              port_base=20000 + 1000 * wave)
                except BaseException as e:  # reported by the main thread
                    result["e"] = e
                finally:
                    done.set()

            attacker = threading.Thread(target=run_attack, daemon=True)
            attacker.start()
            # Legitimate clients back to back while the attacker runs (bounded count).
            for _ in range(60):
                if done.is_set():
                    break
                ok, took, detail = self.legit_client()
                legit_runs.append((wave, ok, took, detail))
            attacker.join(150)
            sampler.stop()
            self.assertAlive()
            self.assertNotIn("e", result, "attacker: %r" % result.get("e"))
            self.assertIn("r", result, "attacker did not finish")
            conns = result["r"]["conns"]
            # Every connection was made and then cut by sidecrypt inside the window.
            self.assertEqual(len(conns), 2000)
            bad_connect = [c for c in conns if c["t_conn"] is None]
            self.assertEqual(len(bad_connect), 0, "%d connections never connected, e.g. %s"
                             % (len(bad_connect), bad_connect[:3]))
            lifetimes = [c["lifetime"] for c in conns if c["lifetime"] is not None]
            still_open = [c for c in conns if c["lifetime"] is None]
            early = [c for c in conns
                     if c["lifetime"] is not None and c["lifetime"] < DEADLINE_S - EARLY_SLACK_S]
            late = [c for c in conns
                    if c["lifetime"] is not None and c["lifetime"] > DEADLINE_S + LATE_SLACK_S]
            per_kind = {}
            for c in conns:
                k = per_kind.setdefault(c["kind"], {"n": 0, "closed": 0, "max_s": 0.0, "rx": 0})
                k["n"] += 1
                if c["lifetime"] is not None:
                    k["closed"] += 1
                    k["max_s"] = round(max(k["max_s"], c["lifetime"]), 3)
                k["rx"] = max(k["rx"], c["rx"])
            rss_after = self.settled(base_fds, base_active)
            report["waves"].append({
                "open_all_s": round(result["r"]["t_open_s"], 3),
                "peak_rss_kb": sampler.peak_rss, "peak_hwm_kb": sampler.peak_hwm,
                "peak_fds": sampler.peak_fds, "settled_rss_kb": rss_after,
                "closed": len(lifetimes),
                "lifetime_min_s": round(min(lifetimes), 3) if lifetimes else None,
                "lifetime_max_s": round(max(lifetimes), 3) if lifetimes else None,
                "per_kind": per_kind,
                "legit_runs": sum(1 for r in legit_runs if r[0] == wave)})
            print("FLOOD wave %d: %s" % (wave + 1, json.dumps(report["waves"][-1])),
                  file=sys.stderr)
            self.assertEqual(len(still_open), 0, "still open %.1fs after connect: %d "
                             "connections, e.g. %s" % (DEADLINE_S + LATE_SLACK_S + 5,
                                                      len(still_open), still_open[:3]))
            self.assertEqual(len(early), 0, "closed before the deadline: %s" % early[:5])
            self.assertEqual(len(late), 0, "closed after deadline + %.1fs: %s"
                             % (LATE_SLACK_S, late[:5]))
            # The whole-hello kind really got a server flight (the handshake was under way).
            self.assertGreater(per_kind["whole-hello"]["rx"], 0)
            self.assertEqual(per_kind["silent"]["rx"], 0)
            self.assertLess(sampler.peak_hwm, RSS_BOUND_KB,
                            "peak RSS %d kB over the %d kB bound" % (sampler.peak_hwm,
                                                                      RSS_BOUND_KB))
            per_conn_kb = (sampler.peak_hwm - base_rss) / len(conns)
            self.assertLessEqual(per_conn_kb, PER_CONN_BOUND_KB,
                                 "peak RSS %d kB is %.1f KiB per stalled connection over the "
                                 "%d kB baseline" % (sampler.peak_hwm, per_conn_kb, base_rss))
            if wave > 0:
                first = report["waves"][0]["peak_hwm_kb"]
                self.assertLessEqual(sampler.peak_hwm, first + RATCHET_SLACK_KB,
                                     "wave %d raised peak RSS from %d kB to %d kB: memory of "
                                     "the first wave's connections was not reused"
                                     % (wave + 1, first, sampler.peak_hwm))
        print("FLOOD report: %s" % json.dumps(report), file=sys.stderr)
        failed = [r for r in legit_runs if not r[1]]
        self.assertEqual(failed, [], "legitimate client failed during the flood")
        for wave in range(2):
            self.assertGreaterEqual(sum(1 for r in legit_runs if r[0] == wave), 2,
                                    "too few legitimate runs overlapped wave %d" % (wave + 1))
        print("FLOOD legit runs: %d, slowest %.3fs" % (len(legit_runs),
                                                        max(r[2] for r in legit_runs)),
              file=sys.stderr)
        # No stalled connection reached the agent: one EVENT per legitimate run, all served.
        events = self.backend_events()[events_before:]
        self.assertEqual(len(events), len(legit_runs), events[-5:])
        self.assertTrue(all(e.get("result") == "served" for e in events), events[-5:])

    def test_per_ip_limit(self):
        self.assertAlive()
        log_before = harness.read(self.sc.log_path)
        r = self.attack([["silent", 150]], [self.limit_ip], observe=DEADLINE_S + LATE_SLACK_S + 3)
        conns = r["conns"]
        self.assertEqual(len(conns), 150)
        self.assertTrue(all(c["t_conn"] is not None for c in conns), "some never connected")
        self.assertLess(r["t_open_s"], 1.0, "opening 150 connections took too long for the test")
        refused = [c for c in conns if c["lifetime"] is not None and c["lifetime"] < 0.5]
        held = [c for c in conns if c["lifetime"] is None or c["lifetime"] >= 0.5]
        print("PER-IP: held %d, refused at once %d (max %.3fs)" % (
            len(held), len(refused), max([c["lifetime"] for c in refused] or [0])),
            file=sys.stderr)
        self.assertLessEqual(len(held), 100)
        self.assertEqual(len(held), 100)  # nothing else uses this address: all 100 slots free
        self.assertEqual(len(refused), 50)
        # The held ones are not accepted beyond the handshake forever: cut at the deadline.
        for c in held:
            self.assertIsNotNone(c["lifetime"], "a held connection outlived the deadline")
            self.assertGreaterEqual(c["lifetime"], DEADLINE_S - EARLY_SLACK_S)
            self.assertLessEqual(c["lifetime"], DEADLINE_S + LATE_SLACK_S)
        log = harness.read(self.sc.log_path)[len(log_before):]
        needle = "rejecting RPC conn from %s because rpc_max_conns_per_client (100) exceeded" \
            % self.limit_ip
        self.assertEqual(log.count(needle), 50, log[-2000:])
        limited = sum(d.get("rpc_conn_limited", 0) for d in self.counters().values())
        self.assertGreaterEqual(limited, 50)

    def test_reconnect_from_same_port_after_cut(self):
        """A peer that reconnects from the same address and port soon after sidecrypt cut its
        connection at the deadline (sidecrypt closed first, so the server side holds the old
        4-tuple in TIME_WAIT for 60 s) must get a connection that is served or cut again like
        any other. Without sidecrypt the kernel reuses the TIME_WAIT 4-tuple for the new SYN."""
        self.assertAlive()
        spec = {"target": self.lab.ip("s"), "port": 8300, "source": self.reconnect_ip,
                "source_port": 41000, "observe": DEADLINE_S + LATE_SLACK_S + 2}
        tries = self.attacker("--reconnect", spec, timeout=60)
        print("RECONNECT: %s" % tries, file=sys.stderr)
        self.assertEqual(tries[0][0], "closed", tries)
        self.assertEqual(tries[1][0], "closed",
                         "the reconnect from the same 4-tuple was not cut at the deadline: %s"
                         % (tries,))
        self.assertLessEqual(tries[1][1], DEADLINE_S + LATE_SLACK_S, tries)


if __name__ == "__main__":
    harness.main()
