"""Claim: a gossip TCP stream established before a reload finishes at the stage it started with
(docs/architecture.md, "Reload"; docs/configuration.md, "What a reload applies").

Two proxied hosts, both at stage 3 (encrypt_verify_incoming and _outgoing on), each with a stand-in
agent speaking memberlist's stream framing. h2's agent dials h1's agent on the gossip port and sends
a user message (sealed by h2's sidecrypt, opened by h1's). While that stream is open, h1 is
reloaded to stage 1 (both flags off). h1's agent then answers on the same stream: h1's sidecrypt
must still seal the answer (the stream's stage), so h2's sidecrypt, still enforcing, opens it and
h2's agent reads the answer byte for byte. Had the reload reached the established stream, the
answer would leave h1 in clear and h2 would refuse it. A stream opened after the reload leaves h1
in clear (the new stage applies to new streams), which h2 refuses."""
import os
import socket
import sys
import time
import unittest

import harness

PORT = 7946


def user_message(payload):
    """memberlist's stream form of a user message: [8][msgpack {UserMsgLen: n}][n bytes]."""
    return bytes([8, 0x81, 0xaa]) + b"UserMsgLen" + bytes([0xcd]) + len(payload).to_bytes(2, "big") + \
        payload


def read_exactly(conn, n, deadline):
    out = b""
    while len(out) < n and time.monotonic() < deadline:
        conn.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = conn.recv(n - len(out))
        except socket.timeout:
            break
        if not chunk:
            break
        out += chunk
    return out


def serve(bind_ip, go_file, request, answer):
    """h1's agent: accepts one stream, reads the request, waits for go_file, answers."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((bind_ip, PORT))
    srv.listen(4)
    srv.settimeout(20)
    conn, _ = srv.accept()
    got = read_exactly(conn, len(request), time.monotonic() + 10)
    print("request-ok" if got == request else "request-bad %r" % got, flush=True)
    deadline = time.monotonic() + 20
    while not os.path.exists(go_file) and time.monotonic() < deadline:
        time.sleep(0.05)
    conn.sendall(answer)
    time.sleep(1)
    conn.close()


def dial(target, request, answer, hold):
    """h2's agent: sends the request, then prints whether the answer arrived intact."""
    c = socket.create_connection((target, PORT), timeout=10)
    c.sendall(request)
    got = read_exactly(c, len(answer), time.monotonic() + hold)
    print("answer-ok" if got == answer else "answer-bad %r" % got[:64], flush=True)
    c.close()


class GossipStreamAcrossReload(unittest.TestCase):
    def setUp(self):
        harness.require_root("network namespaces, netfilter and sidecrypt's capture sockets")
        self.w = harness.Workdir()
        self.lab = None
        try:
            self.lab = harness.Lab(["h1", "h2"])
            key = harness.run(["keygen"], check=True).stdout.strip()
            self.cfgs = {}
            self.proxies = {}
            for h in ("h1", "h2"):
                self.cfgs[h] = harness.proxy_config(os.path.join(self.w.path, h + ".toml"),
                                                    os.path.join(self.w.path, h), key)
                self.proxies[h] = self.lab.spawn(h, [harness.binary(), "run", "--config",
                                                     self.cfgs[h]],
                                                 os.path.join(self.w.path, h + ".log"))
            for h in ("h1", "h2"):
                harness.wait_for(lambda h=h: "started:" in harness.read_log(self.proxies[h]), 15,
                                 what="sidecrypt on " + h)
        except BaseException:
            harness.cleanup(self.lab, self.w)
            raise

    def tearDown(self):
        harness.cleanup(self.lab, self.w)

    def py(self, host, role, *args):
        return self.lab.spawn(host, [sys.executable, os.path.abspath(__file__), role] +
                              [str(a) for a in args],
                              os.path.join(self.w.path, "%s-%s.log" % (role, host)))

    def test_established_stream_keeps_its_stage(self):
        h1 = self.lab.ip("h1")
        go = os.path.join(self.w.path, "go")
        server = self.py("h1", "serve", h1, go)
        harness.wait_for(lambda: self.lab.run("h1", "ss", "-ltn").stdout.count(":%d" % PORT) >= 1,
                         10, what="h1's stand-in agent listening")
        client = self.py("h2", "dial", h1, 25)
        harness.wait_for(lambda: "request-ok" in harness.read_log(server) or
                         "request-bad" in harness.read_log(server), 15,
                         what="the request through both sidecrypts")
        self.assertIn("request-ok", harness.read_log(server))

        # h1 to stage 1 while the stream is open.
        with open(self.cfgs["h1"]) as f:
            body = f.read()
        with open(self.cfgs["h1"], "w") as f:
            f.write(body.replace("[gossip]", "[gossip]\nencrypt_verify_incoming = false\n"
                                 "encrypt_verify_outgoing = false", 1))
        r = self.lab.run("h1", harness.binary(), "reload", "-c", self.cfgs["h1"], check=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("stage changed: gossip.encrypt_verify_outgoing true -> false",
                      harness.read_log(self.proxies["h1"]))

        open(go, "w").close()
        harness.wait_for(lambda: "answer-" in harness.read_log(client), 20,
                         what="the answer at h2's agent")
        self.assertIn("answer-ok", harness.read_log(client),
                      "the established stream changed stage with the reload")

        # A stream begun after the reload takes the new stage: h1 answers in clear, and h2,
        # still enforcing, refuses that answer.
        harness.wait_for(lambda: server.poll() is not None and client.poll() is not None, 15,
                         what="the first stream's agents to finish")
        os.unlink(go)
        server = self.py("h1", "serve", h1, go)
        harness.wait_for(lambda: self.lab.run("h1", "ss", "-ltn").stdout.count(":%d" % PORT) >= 1,
                         10, what="h1's stand-in agent listening again")
        client = self.py("h2", "dial", h1, 10)
        harness.wait_for(lambda: "request-" in harness.read_log(server), 15,
                         what="the second request")
        open(go, "w").close()
        harness.wait_for(lambda: "answer-" in harness.read_log(client), 20,
                         what="the second answer at h2's agent")
        self.assertIn("answer-bad", harness.read_log(client))
        for h in ("h1", "h2"):
            self.assertIsNone(self.proxies[h].poll(), "sidecrypt on %s died" % h)


REQUEST = user_message(b"request from h2's agent " * 4)
ANSWER = user_message(b"answer from h1's agent " * 4)

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3], REQUEST, ANSWER)
    elif len(sys.argv) > 1 and sys.argv[1] == "dial":
        dial(sys.argv[2], REQUEST, ANSWER, float(sys.argv[3]))
    else:
        harness.main()
