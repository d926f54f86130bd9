"""Claim: an outbound RPC connection whose remote stalls the TLS handshake is cut at the handshake
deadline instead of hanging forever, and a remote that completes it is not (issue 6).

A client agent's sidecrypt (verify_outgoing, verify_server_hostname, rpc_handshake_timeout = "2s")
upgrades the agent's plaintext 0x04 to 0x03 + TLS toward port 8300 of host r. On r's first
address a stalling remote accepts and never finishes the handshake, in two shapes per run:
"silent" (reads the 0x03 and the ClientHello, never writes) and "partial" (answers with the first
bytes of a TLS record, then stalls). Asserted:
- the agent's connection is closed 2 s after sidecrypt connected to the remote (no earlier than
  2 s - 0.25 s, no later than 2 s + 1.5 s after the agent sent its type byte), and the remote's
  connection is closed too;
- the remote really saw 0x03 and then a TLS handshake record (the deadline ran during the TLS
  handshake, not before it);
- sidecrypt logs why ("the remote did not finish the handshake within 2000 ms of the connect");
- on r's second address a Go TLS server (rpcpeer, verify_incoming) completes the handshake: the
  same client runs its calls, leaves each stream idle 3 s (past the deadline) and calls again on
  the same stream and connection, over yamux (0x04) and plain net/rpc (0x00).

The stalling remote and the agent run as children of this file (`--remote JSON`, `--agent JSON`)
inside their namespaces: standard library only, every wait bounded.
"""
import json
import os
import selectors
import socket
import sys
import time

DEADLINE_S = 2.0
EARLY_SLACK_S = 0.25
LATE_SLACK_S = 1.5
SHAPES = ["silent", "partial", "silent", "partial"]


# ---- the stalling remote (runs in host r's namespace) --------------------------------------------

def _remote(spec):
    """Accepts len(spec["shapes"]) connections on spec["listen"]:8300; connection i stalls as
    spec["shapes"][i]. Prints LISTENING, then one RESULT line with what each connection saw."""
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((spec["listen"], 8300))
    ls.listen(64)
    ls.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ, None)
    print("LISTENING", flush=True)
    conns = []
    until = time.monotonic() + spec["observe"]
    open_left = len(spec["shapes"])
    while open_left > 0 and time.monotonic() < until:
        for key, _ in sel.select(timeout=0.2):
            if key.data is None:
                try:
                    s, _ = ls.accept()
                except BlockingIOError:
                    continue
                s.setblocking(False)
                shape = spec["shapes"][min(len(conns), len(spec["shapes"]) - 1)]
                c = {"shape": shape, "sock": s, "t_accept": time.monotonic(), "t_close": None,
                     "rx": b"", "answered": False}
                conns.append(c)
                sel.register(s, selectors.EVENT_READ, c)
                continue
            c = key.data
            try:
                chunk = c["sock"].recv(65536)
            except (ConnectionResetError, BlockingIOError):
                chunk = b""
            if chunk:
                c["rx"] += chunk
                # "partial": after 0x03 and the start of the ClientHello, a TLS handshake record
                # header announcing 122 bytes and only 3 of them, then nothing more.
                if c["shape"] == "partial" and not c["answered"] and len(c["rx"]) > 6:
                    c["sock"].send(b"\x16\x03\x03\x00\x7a\x02\x00\x00")
                    c["answered"] = True
                continue
            c["t_close"] = time.monotonic()
            sel.unregister(c["sock"])
            c["sock"].close()
            open_left -= 1
    out = [{"shape": c["shape"], "first": c["rx"][:1].hex(), "record": c["rx"][1:3].hex(),
            "rx": len(c["rx"]), "answered": c["answered"],
            "lifetime": None if c["t_close"] is None else c["t_close"] - c["t_accept"]}
           for c in conns]
    print("RESULT " + json.dumps(out), flush=True)


# ---- the agent (runs in host c's namespace) ------------------------------------------------------

def _agent(spec):
    """Opens spec["n"] connections to spec["target"]:8300 (captured by sidecrypt), sends Consul's
    yamux type byte 0x04 on each, and waits (bounded) for each to be closed."""
    sel = selectors.DefaultSelector()
    conns = []
    for _ in range(spec["n"]):
        s = socket.create_connection((spec["target"], 8300), timeout=5)
        s.sendall(b"\x04")
        c = {"sock": s, "t_sent": time.monotonic(), "t_close": None, "how": None, "rx": 0}
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, c)
        conns.append(c)
        time.sleep(0.05)  # the remote tells its shapes apart by accept order
    until = time.monotonic() + spec["observe"]
    open_left = len(conns)
    while open_left > 0 and time.monotonic() < until:
        for key, _ in sel.select(timeout=0.2):
            c = key.data
            try:
                chunk = c["sock"].recv(65536)
            except ConnectionResetError:
                chunk, c["how"] = b"", "rst"
            except BlockingIOError:
                continue
            if chunk:
                c["rx"] += len(chunk)
                continue
            c["t_close"] = time.monotonic()
            c["how"] = c["how"] or "eof"
            sel.unregister(c["sock"])
            c["sock"].close()
            open_left -= 1
    for c in conns:
        if c["t_close"] is None:
            sel.unregister(c["sock"])
            c["sock"].close()
    return [{"how": c["how"], "rx": c["rx"],
             "lifetime": None if c["t_close"] is None else c["t_close"] - c["t_sent"]}
            for c in conns]


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--remote":
    _remote(json.loads(sys.argv[2]))
    sys.exit(0)
if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--agent":
    json.dump(_agent(json.loads(sys.argv[2])), sys.stdout)
    sys.exit(0)


# ---- the test (runs in the root namespace) -------------------------------------------------------

import unittest  # noqa: E402

import harness  # noqa: E402
from test_rpcpeer_go_interop import parse_line  # noqa: E402
import test_rpcpeer_go_interop as peers  # noqa: E402


class RpcOutboundHandshakeDeadline(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # c: client agent behind sidecrypt; r: the remote servers (stalling, and a Go TLS one).
        peers.open_lab(cls, ["c", "r"], "network namespaces and netfilter")
        try:
            c = lambda n: os.path.join(cls.certs, n)
            cls.ca = c("consul-agent-ca.pem")
            cfg = cls.w.file("client.toml", harness.rpc_proxy_toml(
                data_dir=os.path.join(cls.w.path, "dc"), server=False, ports=[(8300, "rpc")],
                log_level="info",
                tls={"ca_file": cls.ca, "cert_file": c("dc1-client-consul-0.pem"),
                     "key_file": c("dc1-client-consul-0-key.pem"), "verify_outgoing": True,
                     "verify_server_hostname": True,
                     "rpc_handshake_timeout": "%ds" % DEADLINE_S}))
            cls.sc = cls.lab.spawn("c", [harness.binary(), "run", "-c", cfg],
                                   os.path.join(cls.w.path, "sc-client.log"))
            harness.wait_for(lambda: "started:" in harness.read(cls.sc.log_path), 10,
                             what="sidecrypt started")
            cls.good_ip = "10.250.%d.%d" % (cls.lab.subnet, 200)
            cls.lab.run("r", "ip", "addr", "add", cls.good_ip + "/24", "dev",
                        cls.lab.hosts["r"]["veth"])
            cls.tls_server = cls.lab.spawn(
                "r", [cls.peer, "server", "-listen", cls.good_ip + ":8300", "-ca", cls.ca,
                      "-cert", c("dc1-server-consul-0.pem"), "-key",
                      c("dc1-server-consul-0-key.pem"), "-verify-incoming", "-lifetime", "300s"],
                os.path.join(cls.w.path, "tls-server.log"))
            harness.wait_for(lambda: "LISTENING" in harness.read(cls.tls_server.log_path), 15,
                             what="rpcpeer TLS server")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        harness.cleanup(cls.lab, cls.w)

    def assertAlive(self):
        self.assertIsNone(self.sc.poll(), "sidecrypt exited: %s"
                          % harness.read(self.sc.log_path)[-2000:])

    def test_stalled_remote_cut_at_deadline(self):
        observe = DEADLINE_S + LATE_SLACK_S + 5
        remote = self.lab.spawn("r", [sys.executable, os.path.abspath(__file__), "--remote",
                                      json.dumps({"listen": self.lab.ip("r"), "shapes": SHAPES,
                                                  "observe": observe + 5})],
                                os.path.join(self.w.path, "remote.log"))
        harness.wait_for(lambda: "LISTENING" in harness.read(remote.log_path), 10,
                         what="stalling remote")
        log_before = len(harness.read(self.sc.log_path))
        r = self.lab.run("c", sys.executable, os.path.abspath(__file__), "--agent",
                         json.dumps({"target": self.lab.ip("r"), "n": len(SHAPES),
                                     "observe": observe}), check=False, timeout=observe + 20)
        self.assertEqual(r.returncode, 0, "agent failed: %s" % r.stderr[-3000:])
        agent = json.loads(r.stdout)
        harness.wait_for(lambda: "RESULT " in harness.read(remote.log_path), observe + 15,
                         what="the stalling remote's report")
        line = [l for l in harness.read(remote.log_path).splitlines() if l.startswith("RESULT ")]
        remote_conns = json.loads(line[-1][len("RESULT "):])
        print("OUTBOUND-DEADLINE agent: %s" % agent, file=sys.stderr)
        print("OUTBOUND-DEADLINE remote: %s" % remote_conns, file=sys.stderr)
        self.assertAlive()
        self.assertEqual(len(agent), len(SHAPES))
        for c in agent:
            self.assertIsNotNone(c["lifetime"], "the agent's connection was never closed: %s"
                                 % agent)
            self.assertGreaterEqual(c["lifetime"], DEADLINE_S - EARLY_SLACK_S, agent)
            self.assertLessEqual(c["lifetime"], DEADLINE_S + LATE_SLACK_S, agent)
            self.assertEqual(c["rx"], 0, "the agent got bytes from a remote that never finished "
                                         "its handshake: %s" % agent)
        self.assertEqual(len(remote_conns), len(SHAPES), remote_conns)
        self.assertEqual(sorted(c["shape"] for c in remote_conns), sorted(SHAPES))
        for c in remote_conns:
            self.assertEqual(c["first"], "03", c)    # Consul's TLS upgrade byte ...
            self.assertEqual(c["record"], "1603", c)  # ... then a TLS handshake record
            self.assertIsNotNone(c["lifetime"], "sidecrypt kept the remote's connection: %s"
                                 % remote_conns)
            self.assertLessEqual(c["lifetime"], DEADLINE_S + LATE_SLACK_S, c)
        self.assertTrue(any(c["answered"] for c in remote_conns), remote_conns)
        log = harness.read(self.sc.log_path)[log_before:]
        self.assertIn("the remote did not finish the handshake within %d ms of the connect"
                      % (DEADLINE_S * 1000), log)
        harness.stop_process(remote)

    def test_completed_handshake_not_cut(self):
        for mode in ("rpc", "rpc-single"):
            r = self.lab.run("c", self.peer, "client", "-addr", self.good_ip + ":8300", "-mode",
                             mode, "-n", "4", "-idle", "%ds" % (DEADLINE_S + 1), "-timeout",
                             "30s", check=False, timeout=60)
            line = (r.stdout.strip().splitlines() or [""])[-1]
            word, fields = parse_line(line)
            self.assertEqual(word, "RESULT ok", line + r.stderr[-2000:])
            self.assertEqual(fields.get("calls_after_idle"), "4", line)
            self.assertEqual(fields.get("server_tls"), "true", line)  # sidecrypt's TLS, verified
        self.assertAlive()


if __name__ == "__main__":
    harness.main()
