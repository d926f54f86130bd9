"""Claim: a CA rotation walked the way docs/rollout.md guides it (old CA -> old+new bundle
everywhere -> new leaf certificates written by rename and by symlink swap, picked up by file
watching without a reload command -> old CA removed) costs no RPC call: Go crypto/tls peers
(a TLS client dialling a sidecrypt'd server, a TLS server a sidecrypt'd client dials) and two
sidecrypts, with an RPC caller in each direction every 100 ms throughout, see 0 failed calls.
The census names the CA each peer's chain ended at, per direction, and `sidecrypt check remove-ca`
says no while a Go peer still presents an old-CA chain (naming it, on both sides) or sidecrypt's
own certificate still chains only to it, and yes once neither holds within the window."""
import json
import os
import shutil
import subprocess
import threading
import time
import unittest

import harness
from test_rpcpeer_go_interop import parse_line
import test_rpcpeer_go_interop as peers

WITHIN = "3s"  # the check window: long enough to span several calls, short enough to wait out
METRICS_PORT = 9921
PROM_PORT = 9090
RULES = os.path.join(peers.ROOT, "monitoring", "prometheus", "sidecrypt-rules.yml")


def make_ca(out):
    r = subprocess.run(["bash", os.path.join(peers.ROOT, "certs-example/make-certs.sh"), out,
                        "dc1", "consul"], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise SystemExit("make-certs.sh failed:\n" + r.stdout + r.stderr)
    return out


def read(path):
    with open(path) as f:
        return f.read()


def put(path, text):
    """Replaces a file by rename, as deployment tools do: a reader sees the old or the new file,
    never half of one."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)


def sha256_of(pem_path):
    r = subprocess.run(["openssl", "x509", "-in", pem_path, "-noout", "-fingerprint", "-sha256"],
                       capture_output=True, text=True, check=True)
    return r.stdout.strip().split("=", 1)[1].replace(":", "").lower()


class Caller(threading.Thread):
    """Runs one RPC call (a fresh connection and TLS handshake) every 100 ms until stopped."""

    def __init__(self, lab, host, args):
        super().__init__(daemon=True)
        self.lab, self.host, self.args = lab, host, args
        self.ok, self.failures = 0, []
        self.stop_event = threading.Event()

    def run(self):
        nxt = time.monotonic()
        while not self.stop_event.is_set():
            try:
                r = self.lab.run(self.host, *self.args, check=False, timeout=20)
                line = (r.stdout.strip().splitlines() or [""])[-1]
                if line.startswith("RESULT ok"):
                    self.ok += 1
                else:
                    self.failures.append((time.strftime("%H:%M:%S"), line or r.stderr[-300:]))
            except subprocess.TimeoutExpired as e:
                self.failures.append((time.strftime("%H:%M:%S"), "timed out: %s" % e))
            nxt = max(nxt + 0.1, time.monotonic())
            self.stop_event.wait(max(0.0, nxt - time.monotonic()))

    def stop(self):
        self.stop_event.set()
        self.join(60)


class CaRotation(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # c: an agent behind sidecrypt that dials out; s: a server agent behind sidecrypt
        # (verify_incoming); g: native Go crypto/tls peers (a TLS server, and TLS clients).
        harness.require_commands("prometheus", "promtool", why="the fleet gate through Prometheus")
        peers.open_lab(cls, ["c", "s", "g", "p"], "network namespaces and netfilter")
        cls.callers = []
        try:
            w = cls.w.path
            cls.old = make_ca(os.path.join(w, "old"))
            cls.new = make_ca(os.path.join(w, "new"))
            cls.old_ca = os.path.join(cls.old, "consul-agent-ca.pem")
            cls.new_ca = os.path.join(cls.new, "consul-agent-ca.pem")
            cls.old_fp, cls.new_fp = sha256_of(cls.old_ca), sha256_of(cls.new_ca)
            # The files every party reads: rewritten in place during the walk.
            cls.files = {}
            for host in ("c", "s", "g"):
                d = os.path.join(w, host)
                os.makedirs(d)
                cls.files[host] = {"ca": os.path.join(d, "ca.pem"),
                                   "cert": os.path.join(d, "cert.pem"),
                                   "key": os.path.join(d, "key.pem"),
                                   # Go peers: certificate and key in one file, replaced at once
                                   "server": os.path.join(d, "server.pem"),
                                   "client": os.path.join(d, "client.pem")}
            cls.set_cas(cls.old_ca)
            cls.set_sidecrypt_leaf("c", cls.old, "client")
            cls.set_sidecrypt_leaf("s", cls.old, "server")
            cls.set_go_leafs(cls.old)
            f = cls.files
            cls.cfg = {
                "c": os.path.join(w, "c.toml"), "s": os.path.join(w, "s.toml")}
            for host, server in (("c", False), ("s", True)):
                tls = {"ca_file": f[host]["ca"], "cert_file": f[host]["cert"],
                       "key_file": f[host]["key"], "verify_outgoing": True,
                       "verify_server_hostname": True, "verify_incoming": server}
                with open(cls.cfg[host], "w") as out:
                    out.write(harness.rpc_proxy_toml(data_dir=os.path.join(w, "data-" + host),
                                                     server=server, tls=tls,
                                                     ports=[(8300, "rpc")]))
                    # The census window is the checks' window (and the fleet gate's); the
                    # metrics listener on the host's address is what Prometheus scrapes.
                    out.write('[census]\nwindow = "%s"\n[metrics]\nlisten = "%s:%d"\n'
                              % (WITHIN, cls.lab.ip(host), METRICS_PORT))
            cls.sc = {h: cls.lab.spawn(h, [harness.binary(), "run", "-c", cls.cfg[h]],
                                       os.path.join(w, "sc-%s.log" % h)) for h in ("c", "s")}
            for p in cls.sc.values():
                harness.wait_for(lambda p=p: "started:" in harness.read(p.log_path), 10,
                                 what="sidecrypt started")
            # Behind sidecrypt on s: a plaintext Consul-shaped server.
            cls.plain = cls.lab.spawn("s", [cls.peer, "server", "-listen",
                                            cls.lab.ip("s") + ":8300", "-lifetime", "600s"],
                                      os.path.join(w, "plain-server.log"))
            # On g: a Go TLS server that verifies client certificates and reads its files for
            # every handshake.
            cls.go_server = cls.lab.spawn(
                "g", [cls.peer, "server", "-listen", cls.lab.ip("g") + ":8300", "-ca",
                      f["g"]["ca"], "-cert", f["g"]["server"], "-key", f["g"]["server"],
                      "-verify-incoming", "-verify-server-hostname", "-reread",
                      "-lifetime", "600s"], os.path.join(w, "go-server.log"))
            for p in (cls.plain, cls.go_server):
                harness.wait_for(lambda p=p: "LISTENING" in harness.read(p.log_path), 15,
                                 what="rpcpeer server")
            cls.start_prometheus()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for c in getattr(cls, "callers", []):
            c.stop()
        harness.cleanup(cls.lab, cls.w)

    @classmethod
    def start_prometheus(cls):
        """Debian's prometheus in host p, scraping both sidecrypts every second with this
        repository's recording rules (the fleet gate's source)."""
        cls.prom, cls.prom_url = harness.start_prometheus(
            cls.lab, "p", PROM_PORT, cls.w.path,
            ["%s:%d" % (cls.lab.ip(h), METRICS_PORT) for h in ("c", "s")], RULES)

    def gate(self, ca):
        """The fleet form: (exit code, JSON answer) of `check remove-ca CA --prometheus`."""
        r = self.lab.run("p", harness.binary(), "check", "remove-ca", ca, "--prometheus",
                         self.prom_url, "--json", check=False, timeout=30)
        try:
            return r.returncode, json.loads(r.stdout)
        except ValueError:
            return r.returncode, {"raw": r.stdout + r.stderr}

    def wait_gate(self, ca, want, what, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            rc, doc = self.gate(ca)
            if want(rc, doc):
                return rc, doc
            if time.monotonic() > deadline:
                self.fail("%s: last answer %d %r" % (what, rc, doc))
            time.sleep(1)

    # --- the files -------------------------------------------------------------------------
    @classmethod
    def set_cas(cls, *cas):
        bundle = "".join(read(ca) for ca in cas)
        for host in ("c", "s", "g"):
            put(cls.files[host]["ca"], bundle)

    @classmethod
    def set_sidecrypt_leaf(cls, host, ca_dir, kind):
        cert = read(os.path.join(ca_dir, "dc1-%s-consul-0.pem" % kind))
        key = read(os.path.join(ca_dir, "dc1-%s-consul-0-key.pem" % kind))
        if host == "s":  # s: each file replaced by rename
            put(cls.files[host]["cert"], cert)
            put(cls.files[host]["key"], key)
            return
        # c: a symlink swap, as Kubernetes writes secret volumes: cert.pem -> ..data/cert.pem,
        # ..data -> a new directory holding both files, swapped in by one rename.
        d = os.path.dirname(cls.files[host]["cert"])
        version = os.path.join(d, "v-" + os.path.basename(ca_dir))
        os.makedirs(version)
        for name, text in (("cert.pem", cert), ("key.pem", key)):
            with open(os.path.join(version, name), "w") as f:
                f.write(text)
            link = os.path.join(d, name)
            if not os.path.islink(link):
                os.symlink(os.path.join("..data", name), link)
        os.symlink(os.path.basename(version), os.path.join(d, "..data_tmp"))
        os.rename(os.path.join(d, "..data_tmp"), os.path.join(d, "..data"))

    @classmethod
    def set_go_leafs(cls, ca_dir):
        for kind in ("server", "client"):
            put(cls.files["g"][kind],
                read(os.path.join(ca_dir, "dc1-%s-consul-0.pem" % kind)) +
                read(os.path.join(ca_dir, "dc1-%s-consul-0-key.pem" % kind)))

    # --- sidecrypt ---------------------------------------------------------------------------
    def sidecrypt(self, host, *args):
        return self.lab.run(host, harness.binary(), *args, "-c", self.cfg[host], check=False,
                            timeout=30)

    def reload(self, *hosts):
        for h in hosts:
            r = self.sidecrypt(h, "reload")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def check_remove_ca(self, host, ca):
        r = self.sidecrypt(host, "check", "remove-ca", ca, "--within", WITHIN, "--json")
        self.assertIn(r.returncode, (0, 1), r.stdout + r.stderr)
        answer = json.loads(r.stdout)
        self.assertEqual(answer["ok"], r.returncode == 0, answer)
        return answer

    def peer_cas(self, host, ip):
        r = self.sidecrypt(host, "status", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        for p in json.loads(r.stdout)["peers"]:
            if p["address"] == ip:
                return {(c["direction"], c["fingerprint"]) for c in p["rpc"]["tls_cas"]}
        return set()

    def settle(self, seconds):
        """Lets the callers run for a while (and fails early if one of them failed)."""
        time.sleep(seconds)
        for c in self.callers:
            self.assertEqual(c.failures, [], "a call failed during the rotation")

    # --- the walk ----------------------------------------------------------------------------
    def test_rotation_walk_without_a_failed_call(self):
        f, g_ip = self.files, self.lab.ip("g")
        # The callers: a Go TLS client on g -> sidecrypt on s (inbound, verify_incoming) ->
        # plaintext server; a plaintext client on c -> sidecrypt on c (outbound TLS) -> the Go
        # TLS server on g. Each call is a new connection, so a new handshake.
        go_client = Caller(self.lab, "g", [self.peer, "client", "-addr",
                                          self.lab.ip("s") + ":8300", "-tls",
                                          "-verify-server-hostname", "-ca", f["g"]["ca"],
                                          "-cert", f["g"]["client"], "-key", f["g"]["client"],
                                          "-mode", "rpc-single", "-n", "1", "-timeout", "10s"])
        agent_client = Caller(self.lab, "c", [self.peer, "client", "-addr", g_ip + ":8300",
                                              "-mode", "rpc-single", "-n", "1", "-timeout",
                                              "10s"])
        self.callers += [go_client, agent_client]
        for c in self.callers:
            c.start()
        harness.wait_for(lambda: go_client.ok >= 5 and agent_client.ok >= 5, 30,
                         what="the callers running")

        # Step 0: one CA. The census names it for g in both directions.
        self.assertIn(("inbound", self.old_fp), self.peer_cas("s", g_ip))
        self.assertIn(("outbound", self.old_fp), self.peer_cas("c", g_ip))
        a = self.check_remove_ca("s", self.old_ca)
        self.assertFalse(a["ok"])
        classes = {r["class"] for r in a["reasons"]}
        self.assertIn("local_certificate", classes, a)
        self.assertIn("ca_in_use", classes, a)

        # Step 1: trust both CAs everywhere.
        self.set_cas(self.old_ca, self.new_ca)
        self.reload("c", "s")
        self.settle(1.5)

        # Step 2: new leaf certificates, sidecrypt's first, written in place (on s by rename, on c
        # by a symlink swap) with no reload command: sidecrypt watches its files (tls.watch). Its own certificate no longer
        # chaining to the old CA shows it took them.
        self.set_sidecrypt_leaf("c", self.new, "client")
        self.set_sidecrypt_leaf("s", self.new, "server")
        for host in ("c", "s"):
            harness.wait_for(lambda host=host: "local_certificate" not in {
                r["class"] for r in self.check_remove_ca(host, self.old_ca)["reasons"]}, 15,
                interval=0.5, what="sidecrypt on %s picking up its new leaf by itself" % host)
        self.settle(1.5)
        # g still presents old-CA chains both ways: no, naming g, on both sides.
        for host, direction in (("s", "inbound"), ("c", "outbound")):
            a = self.check_remove_ca(host, self.old_ca)
            self.assertFalse(a["ok"], a)
            in_use = [r for r in a["reasons"] if r["class"] == "ca_in_use"]
            self.assertEqual([r["peer"] for r in in_use], [g_ip], a)
            self.assertEqual({r["class"] for r in a["reasons"]}, {"ca_in_use"}, a)
            self.assertIn((direction, self.old_fp), self.peer_cas(host, g_ip))
            # The text form names the peer too.
            r = self.sidecrypt(host, "check", "remove-ca", self.old_fp, "--within", WITHIN)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn(g_ip, r.stdout)
        # The new CA is in use now (sidecrypt's own leafs chain to it).
        self.assertFalse(self.check_remove_ca("s", self.new_ca)["ok"])
        # The fleet form says no too, naming both nodes (each hears g present old chains).
        want = {"%s:%d" % (self.lab.ip(h), METRICS_PORT) for h in ("c", "s")}
        self.wait_gate(self.old_fp, lambda rc, doc: rc == 1 and {
            h["instance"] for h in doc.get("holdouts", [])
            if any("chain ending at this CA" in w for w in h["why"])} == want,
            "the fleet gate says no, naming both nodes")

        # The Go peers move to new leafs; once the window holds no old-CA chain: yes.
        self.set_go_leafs(self.new)
        # sidecrypt's client resumes its session with the Go server, which proves no chain: the
        # census keeps the old one (docs/rollout.md, step 3). A reload drops the sessions.
        self.reload("c", "s")
        self.settle(1.0)
        self.assertIn(("inbound", self.new_fp), self.peer_cas("s", g_ip))
        self.assertIn(("outbound", self.new_fp), self.peer_cas("c", g_ip))
        for host in ("s", "c"):
            harness.wait_for(lambda host=host: self.check_remove_ca(host, self.old_ca)["ok"], 15,
                             interval=0.5, what="check remove-ca says yes on " + host)
        self.wait_gate(self.old_ca, lambda rc, doc: rc == 0, "the fleet gate says yes")
        rc, doc = self.gate(self.new_fp)  # the new CA: both nodes present chains to it
        self.assertEqual(rc, 1, doc)

        # Step 3: drop the old CA everywhere.
        self.set_cas(self.new_ca)
        self.reload("c", "s")
        self.settle(1.5)
        for c in self.callers:
            c.stop()
        for c in self.callers:
            self.assertEqual(c.failures, [])
        # Each caller made its calls throughout (100 ms apart; a busy machine makes fewer).
        self.assertGreater(go_client.ok, 30)
        self.assertGreater(agent_client.ok, 30)
        # The metrics carry the CA per direction, bounded (one series per configured CA).
        r = self.lab.run("s", "python3", "-c", "import urllib.request, sys; sys.stdout.write("
                         "urllib.request.urlopen('http://127.0.0.1:9920/metrics', timeout=10)"
                         ".read().decode())", check=False)
        lines = [l for l in r.stdout.splitlines()
                 if l.startswith("sidecrypt_tls_peer_ca_last_seen_seconds{")]
        self.assertTrue(any('direction="inbound"' in l and self.new_fp in l for l in lines),
                        lines)
        self.assertFalse(any(self.old_fp in l for l in lines), lines)  # no longer configured
        print("calls: go client %d ok, agent client %d ok, 0 failed" %
              (go_client.ok, agent_client.ok))


if __name__ == "__main__":
    harness.main()
