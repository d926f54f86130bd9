"""Claim: with `[runtime] loops = 2` one sidecrypt process runs RPC TLS handshakes on both of its
event loops (issue 18, item 1), and what loop 0 owns stays exact: counters, the census, the
active count, and a reload while sessions live on the worker loop.

In network namespaces: s runs a plaintext Consul-shaped RPC server (rpcpeer) behind sidecrypt
(intercepted port 8300, TLS with verify_incoming, loops = 2); g runs Go crypto/tls clients
(rpcpeer, full handshakes: no session cache).
- sequential: 8 connections one after another (each a TLS handshake and RPC calls) are placed
  alternately: each loop's handshake counter (`/status` loops[i].rpc_handshakes) moved by 4,
  their sum is the inbound_handshakes_full delta, tcp accepted/closed and the census's RPC TLS
  count for g's address moved by exactly 8, and nothing is left active.
- held across a reload: 4 clients at once each make calls, hold their connection idle for a
  while, then call again. While they are idle both loops hold sessions; sidecrypt reloads with
  another CA instead of the clients' (so a new handshake fails); each held
  connection still completes its second round of calls (it keeps the setup it started with),
  and a new client afterwards is refused (the new setup). Without the worker loop (loops = 1,
  or before this change) loops[1] does not exist and the first check fails.
"""
import json
import os
import time
import unittest

import harness
from test_rpcpeer_go_interop import parse_line
import test_rpcpeer_go_interop as peers

HOLD_S = 6


class RpcLoops(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        peers.open_lab(cls, ["s", "g"], "network namespaces and netfilter")
        try:
            c = lambda n: os.path.join(cls.certs, n)
            cls.cert = staticmethod(c)
            cls.ca = c("consul-agent-ca.pem")
            cls.server_tls = {"ca_file": cls.ca, "cert_file": c("dc1-server-consul-0.pem"),
                              "key_file": c("dc1-server-consul-0-key.pem"),
                              "verify_incoming": True, "verify_outgoing": True,
                              "verify_server_hostname": True}
            cls.cfg = os.path.join(cls.w.path, "server.toml")
            cls.write_config(cls.server_tls)
            cls.sc = cls.lab.spawn("s", [harness.binary(), "run", "-c", cls.cfg],
                                   os.path.join(cls.w.path, "sc-server.log"))
            harness.wait_for(lambda: "started:" in harness.read(cls.sc.log_path), 10,
                             what="sidecrypt started")
            cls.plain_server = cls.lab.spawn(
                "s", [cls.peer, "server", "-listen", cls.lab.ip("s") + ":8300", "-lifetime",
                      "600s"], os.path.join(cls.w.path, "plain-server.log"))
            harness.wait_for(lambda: "LISTENING" in harness.read(cls.plain_server.log_path), 15,
                             what="rpcpeer server")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        harness.cleanup(cls.lab, cls.w)

    @classmethod
    def write_config(cls, tls):
        text = harness.rpc_proxy_toml(data_dir=os.path.join(cls.w.path, "ds"), server=True,
                                      tls=tls, ports=[(8300, "rpc")], log_level="info",
                                      loops=2)
        with open(cls.cfg, "w") as f:
            f.write(text)

    def status(self):
        r = self.lab.run("s", harness.binary(), "status", "--json", "-c", self.cfg)
        return json.loads(r.stdout)

    def client_args(self, repeat=1, idle=None):
        c = self.cert
        args = [self.peer, "client", "-addr", self.lab.ip("s") + ":8300", "-tls",
                "-verify-server-hostname", "-ca", self.ca, "-cert", c("dc1-client-consul-0.pem"),
                "-key", c("dc1-client-consul-0-key.pem"), "-mode", "rpc", "-n", "2",
                "-repeat", str(repeat), "-timeout", "40s"]
        if idle is not None:
            args += ["-idle", "%ds" % idle]
        return args

    def snapshot(self):
        s = self.status()
        st = s["status"]
        peer = [p for p in s.get("peers", []) if p["address"] == self.lab.ip("g")]
        return {"loops": [l["rpc_handshakes"] for l in st["loops"]],
                "sessions": [l["sessions_active"] for l in st["loops"]],
                "full": st["rpc"]["inbound_handshakes_full"],
                "ok": st["rpc"]["handshakes_ok"],
                "accepted": st["tcp"]["accepted"], "active": st["tcp"]["active"],
                "closed": st["tcp"]["closed_ok"] + st["tcp"]["closed_error"],
                "census_tls": peer[0]["rpc"]["tls"] if peer else 0}

    def wait_idle(self):
        harness.wait_for(lambda: self.status()["status"]["tcp"]["active"] == 0, 10,
                         what="every session closed")

    def test_1_sequential_connections_alternate_loops_and_counts_are_exact(self):
        before = self.snapshot()
        self.assertEqual(len(before["loops"]), 2, before)
        r = self.lab.run("g", *self.client_args(repeat=8), check=False, timeout=90)
        word, f = parse_line((r.stdout.strip().splitlines() or [""])[-1])
        self.assertEqual(word, "RESULT ok", (f, r.stderr[-2000:]))
        self.wait_idle()
        after = self.snapshot()
        per_loop = [a - b for a, b in zip(after["loops"], before["loops"])]
        self.assertEqual(per_loop, [4, 4], (before, after))
        self.assertEqual(sum(per_loop), after["full"] - before["full"])
        self.assertEqual(after["ok"] - before["ok"], 8)
        self.assertEqual(after["accepted"] - before["accepted"], 8)
        self.assertEqual(after["closed"] - before["closed"], 8)
        self.assertEqual(after["census_tls"] - before["census_tls"], 8)
        self.assertEqual(after["active"], 0)
        self.assertEqual(after["sessions"], [0, 0])

    def test_2_sessions_on_the_worker_keep_their_setup_across_a_reload(self):
        self.wait_idle()
        before = self.snapshot()
        logs = [os.path.join(self.w.path, "held-%d.log" % i) for i in range(4)]
        clients = [self.lab.spawn("g", self.client_args(idle=HOLD_S), log) for log in logs]
        try:
            # All four connected and idle: both loops hold sessions.
            harness.wait_for(lambda: self.snapshot()["active"] == 4, 15,
                             what="four held connections")
            held = self.snapshot()
            self.assertEqual(held["sessions"], [2, 2], held)
            # Reload: another CA only (not the clients'). Held sessions keep their setup.
            other = os.path.join(self.certs, "negative", "other-ca.pem")
            self.write_config(dict(self.server_tls, ca_file=other))
            harness.sighup_reload(self.sc)
            for cl in clients:
                cl.wait(timeout=HOLD_S + 40)
        finally:
            for cl in clients:
                if cl.poll() is None:
                    cl.kill()
        for log in logs:
            word, f = parse_line((harness.read(log).strip().splitlines() or [""])[-1])
            self.assertEqual(word, "RESULT ok", (log, f))
        self.wait_idle()
        after = self.snapshot()
        self.assertEqual([a - b for a, b in zip(after["loops"], before["loops"])], [2, 2])
        self.assertEqual(after["closed"] - before["closed"], 4)
        # A new handshake uses the new setup: the client's chain no longer verifies.
        r = self.lab.run("g", *self.client_args(), check=False, timeout=60)
        word, f = parse_line((r.stdout.strip().splitlines() or [""])[-1])
        self.assertNotEqual(word, "RESULT ok", f)
        self.wait_idle()
        final = self.snapshot()
        self.assertEqual(final["ok"], after["ok"])
        self.write_config(self.server_tls)
        harness.sighup_reload(self.sc)


if __name__ == "__main__":
    harness.main()
