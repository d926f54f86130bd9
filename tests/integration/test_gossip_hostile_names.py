"""Claim (issue 15, item 1): member names are bytes, and no name a datagram can carry stops the
proxy. At every rollout stage (a: accept both ways, b: encrypt outgoing, c: verify incoming) a
host with no key sends plaintext memberlist alive messages whose node names are not valid UTF-8
(a stray 0xff, an overlong NUL, a UTF-16 surrogate, a truncated sequence, terminal control
bytes), and a host holding the key sends the same names sealed. After each volley:

  - sidecrypt is still running (before the fix the next /members or `sidecrypt status` threw
    nlohmann type_error.316 and the process aborted with SIGABRT; the rules fail closed, so the
    agent was cut off);
  - /members, /peers and /status answer 200 with strict UTF-8 JSON; each hostile name that
    reached the census is listed as valid text with its exact bytes in "name_hex";
  - /metrics is strict UTF-8 and `promtool check metrics` accepts it;
  - `sidecrypt status`, `sidecrypt status --json` and `sidecrypt check enforce-incoming` run;
  - a real serf peer (another plaintext serf agent behind its own sidecrypt) is still served:
    both members stay alive on both agents and a serf query is acked by both.

Finally every sidecrypt log is strict UTF-8 with no raw control bytes.
"""
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import unittest

import harness

HOSTS = {"p1": "h1", "p2": "h2", "attacker": "h3"}
STAGES = {"a": (False, False), "b": (False, True), "c": (True, True)}

SEND = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for h in sys.argv[2:]:
    s.sendto(bytes.fromhex(h), (sys.argv[1], 7946))
"""

# Fetches an admin path and checks it is strict UTF-8 (and JSON unless told otherwise); prints
# the body re-encoded as ASCII-only JSON (or as a JSON string for text).
FETCH = r"""
import json, sys, urllib.request
with urllib.request.urlopen("http://127.0.0.1:9920" + sys.argv[1], timeout=10) as r:
    body = r.read()
text = body.decode("utf-8")  # strict: raises on any invalid byte
print(json.dumps(json.loads(text) if sys.argv[2] == "json" else text))
"""


def msgpack_str(b):
    return (bytes([0xa0 | len(b)]) if len(b) < 32 else b"\xd9" + bytes([len(b)])) + b


def msgpack_bin(b):
    return b"\xc4" + bytes([len(b)]) + b


def alive(name, ip, incarnation, port=7946):
    """memberlist aliveMsg (type 4) as Go's codec writes it."""
    fields = [(b"Incarnation", b"\xce" + struct.pack(">I", incarnation)),
              (b"Node", msgpack_str(name)),
              (b"Addr", msgpack_bin(bytes(int(x) for x in ip.split(".")))),
              (b"Port", b"\xcd" + struct.pack(">H", port)),
              (b"Meta", msgpack_bin(b"")),
              (b"Vsn", msgpack_bin(bytes([1, 5, 2, 2, 5, 4])))]
    body = bytes([0x80 | len(fields)])
    for k, v in fields:
        body += msgpack_str(k) + v
    return b"\x04" + body


def seal(key_b64, plain):
    """memberlist encryption version 1 (AES-GCM, no padding, no label)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    import base64
    nonce = os.urandom(12)
    return b"\x01" + nonce + AESGCM(base64.b64decode(key_b64)).encrypt(nonce, plain, b"")


def hostile_names(stage, kind):
    tag = ("%s-%s-" % (stage, kind)).encode()
    return [tag + b"ff\xff\xfe", tag + b"overlong\xc0\x80", tag + b"surrogate\xed\xa0\x80",
            tag + b"cut\xe2\x82", tag + b"ctl\x1b[31m\x07\x00\x7f\xc2\x9b"]


def name_bytes(member):
    """The exact name: "name_hex" when the name is not valid UTF-8, else "name" itself."""
    if "name_hex" in member:
        return bytes.fromhex(member["name_hex"])
    return member["name"].encode("utf-8")


class HostileNames(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_root("network namespaces, netfilter and serf agents")
        harness.require_commands("serf", why="serf agents")
        try:
            import cryptography.hazmat.primitives.ciphers.aead  # noqa: F401
        except ImportError:
            harness.skip_or_fail("needs python3-cryptography (to seal the hostile datagram)")
        cls.w = harness.Workdir()
        cls.lab = None
        try:
            cls.lab = harness.Lab(["h1", "h2", "h3"])
            cls.key = harness.run(["keygen"], check=True).stdout.strip()
            cls.cfgs = {n: os.path.join(cls.w.path, n + ".toml") for n in ("p1", "p2")}
            cls.write_stage("a")
            cls.proxies, cls.agents = {}, {}
            for n in ("p1", "p2"):
                cls.proxies[n], cls.agents[n] = harness.start_proxied_serf(
                    cls.lab, HOSTS[n], n, cls.cfgs[n], cls.w.path,
                    join=cls.addr("p1") if n == "p2" else None)
            harness.wait_members_alive(cls.lab, ["h1", "h2"], ["p1", "p2"], timeout=30)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        harness.cleanup(cls.lab, cls.w)

    @classmethod
    def addr(cls, name):
        return "%s:7946" % cls.lab.ip(HOSTS[name])

    @classmethod
    def write_stage(cls, stage):
        incoming, outgoing = STAGES[stage]
        for n, cfg in cls.cfgs.items():
            harness.proxy_config(cfg, os.path.join(cls.w.path, "data-" + n), cls.key,
                                 extra="encrypt_verify_incoming = %s\nencrypt_verify_outgoing = %s"
                                 % (str(incoming).lower(), str(outgoing).lower()))

    def sidecrypt(self, *args):
        return self.lab.run("h1", harness.binary(), *args, "-c", self.cfgs["p1"], check=False,
                            timeout=30)

    def fetch(self, path, kind="json"):
        r = self.lab.run("h1", "python3", "-c", FETCH, path, kind, check=False, timeout=20)
        if r.returncode != 0:
            self.assert_alive("answering " + path)
        self.assertEqual(r.returncode, 0, "%s: %s" % (path, r.stderr[-1500:]))
        return json.loads(r.stdout)

    def assert_alive(self, what):
        for n, p in self.proxies.items():
            rc = p.poll()
            self.assertIsNone(rc, "sidecrypt of %s exited (%s%s) %s:\n%s" % (
                n, rc, " = SIGABRT" if rc == -signal.SIGABRT else "", what,
                harness.read_log(p)[-3000:]))

    def volley(self, stage):
        """Plaintext from h3 (no key), then the same names sealed with the key."""
        target = self.lab.ip("h1")
        src = self.lab.ip("h3")
        plain = hostile_names(stage, "plain")
        sealed = hostile_names(stage, "sealed")
        # Each name announced at its own port: the census knows a member by address and port,
        # so names announced at one endpoint would be one member renamed (issue 20).
        names = plain + sealed
        packets = [alive(n, src, 1, 20000 + names.index(n)).hex() for n in plain]
        packets += [seal(self.key, alive(n, src, 1, 20000 + names.index(n))).hex()
                    for n in sealed]
        self.lab.run("h3", "python3", "-c", SEND, target, *packets)
        return plain, sealed

    def check_stage(self, stage):
        if stage != "a":
            self.write_stage(stage)
            for n in ("p1", "p2"):
                r = self.lab.run(HOSTS[n], harness.binary(), "reload", "-c", self.cfgs[n],
                                 check=False, timeout=30)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        plain, sealed = self.volley(stage)
        expected = sealed + (plain if stage != "c" else [])

        last = {}

        def listed():
            m = last["m"] = self.fetch("/members")
            hexes = {name_bytes(x).hex() for x in m["members"]}
            return all(n.hex() in hexes for n in expected)
        self.assert_alive("right after the volley")
        try:
            harness.wait_for(listed, 10, interval=0.3, what="the hostile names in /members")
        except AssertionError:
            self.assert_alive("answering /members")
            self.fail("not every hostile name reached /members: %s" % last.get("m"))
        self.assert_alive("after /members")
        members = self.fetch("/members")
        for m in members["members"]:
            if "name_hex" in m:
                self.assertEqual(bytes.fromhex(m["name_hex"]).decode("utf-8", "replace")
                                 .replace("\ufffd", ""), m["name"].replace("\ufffd", ""), m)
        for n in plain if stage == "c" else []:
            self.assertNotIn(n, {name_bytes(x) for x in members["members"]},
                             "refused plaintext reached the census")
        self.fetch("/peers")
        self.fetch("/status")
        metrics = self.fetch("/metrics", "text")
        if shutil.which("promtool"):
            r = harness.sh("promtool", "check", "metrics", input=metrics, check=False)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for args in (["status"], ["status", "--json"]):
            r = self.lab.run("h1", harness.binary(), *args, "-c", self.cfgs["p1"], check=False,
                             timeout=30)
            self.assertEqual(r.returncode, 0, "%s: %s" % (args, r.stderr))
            self.assertNotIn("\x1b", r.stdout, "a control byte reached the terminal")
            if "--json" in args:
                doc = json.loads(r.stdout)
                self.assertIn("members", doc)
        r = self.lab.run("h1", harness.binary(), "check", "enforce-incoming", "-c",
                         self.cfgs["p1"], check=False, timeout=30)
        self.assertIn(r.returncode, (0, 1), r.stdout + r.stderr)
        self.assertNotIn("\x1b", r.stdout)
        self.assert_alive("after status and check")
        self.served()

    def serf_members(self, host):
        """{name: status}; the agents list the hostile names too, so decode leniently."""
        r = subprocess.run(["ip", "netns", "exec", self.lab.ns(host), "serf", "members"],
                           capture_output=True, timeout=10, check=False)
        out = {}
        for line in r.stdout.decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) >= 3:
                out[parts[0]] = parts[2]
        return out

    def served(self):
        harness.wait_for(lambda: all(self.serf_members(h).get(n) == "alive"
                                     for h in ("h1", "h2") for n in ("p1", "p2")),
                         20, interval=0.5, what="p1 and p2 alive on both agents")
        acked = set()
        # Serf spreads a query with a bounded number of transmissions: ask again if an ack
        # is missing (right after a reload the agents' gossip queues may still be settling).
        for i in range(6):
            r = self.lab.run("h2", "serf", "query", "-timeout", "4s", "q%d" % i, "x",
                             check=False, timeout=20)
            acked |= set(re.findall(r"Ack from '([^']+)'", r.stdout))
            if {"p1", "p2"} <= acked:
                break
        self.assertTrue({"p1", "p2"} <= acked, "query acks: %s" % acked)

    def test_1_stage_a_accept_both(self):
        self.check_stage("a")

    def test_2_stage_b_encrypt_outgoing(self):
        self.check_stage("b")

    def test_3_stage_c_verify_incoming(self):
        self.check_stage("c")

    def test_4_logs_are_clean_utf8(self):
        self.assert_alive("at the end")
        for n, p in self.proxies.items():
            with open(p.log_path, "rb") as f:
                raw = f.read()
            raw.decode("utf-8")  # strict
            bad = [c for c in raw if c < 0x20 and c not in (0x0a,)]
            self.assertEqual(bad, [], "raw control bytes in the log of %s" % n)


if __name__ == "__main__":
    harness.main()
