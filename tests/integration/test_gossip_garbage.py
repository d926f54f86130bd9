"""Claim: garbage aimed at a proxied agent's gossip port never reaches the agent and does not
hurt the cluster. During a live mixed cluster (a plaintext serf agent behind sidecrypt, two
native `serf agent -encrypt` nodes), another namespace sends 10,000 random datagrams, the
memberlist 0.2.2 crash shapes of negatives.json `parser_vectors` both raw and sealed with the
cluster key (by the Go peer, as a buggy or hostile key holder would), a sealed packet relabelled
to version 0 (invalid padding: panics 0.2.2), and 100 random TCP streams, all at the proxied
agent's port 7946. Afterwards sidecrypt still runs and counted every datagram as dropped (crash
shapes as crash_shape_dropped), the agent logged no decode error, unknown type or failed stream
beyond its baseline, and every member is still alive everywhere, never suspected or failed.
"""
import json
import os
import random
import re
import time
import unittest

import harness

NAMES = ["proxied", "nat1", "nat2"]
HOSTS = {"proxied": "h1", "nat1": "h2", "nat2": "h3"}
ATTACKER = "h4"
N_DATAGRAMS = 10000
N_STREAMS = 100
# What memberlist 0.2.2 (and serf) log when an input reaches them and fails (docs/spec/gossip-wire.md §9,
# negatives.json outcome_0_2_2), plus any panic.
AGENT_ERROR = re.compile(r"Failed to decode|not supported|invalid checksum|truncated messages|"
                         r"failed to receive|Failed to handle|Decrypt packet failed|"
                         r"Failed to decompress|Failed to receive|panic|goroutine \d+|"
                         r"Failed to push/pull|Error decoding", re.I)
# Crash shapes from parser_vectors that panic a 0.2.2 agent when they arrive as plaintext.
CRASH_SHAPES = ["hasCrc-of-nothing", "compound-empty-part", "compound-count-200-short",
                "compress-to-empty"]

ATTACK_SCRIPT = r'''
import random, socket, sys, time
seed, host, port, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
extra = [bytes.fromhex(h) for h in sys.argv[5].split(",") if h] if len(sys.argv) > 5 else []
rng = random.Random(seed)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
sent = 0
payloads = list(extra)
for i in range(n):
    r = rng.random()
    if r < 0.002:
        size = rng.randint(1401, 65000)          # over the 1400 budget: IP fragments
    elif r < 0.01:
        size = 0                                  # empty datagram
    else:
        size = rng.randint(1, 1400)
    b = bytearray(rng.randbytes(size))
    if size and rng.random() < 0.4:
        b[0] = rng.choice([0, 1, 2, 4, 7, 9, 12, 244])   # real message / version / label bytes
    payloads.append(bytes(b))
for i, b in enumerate(payloads):
    s.sendto(b, (host, port))
    sent += 1
    if i % 200 == 199:
        time.sleep(0.02)                          # paced: the receiver must not overflow
print("SENT", sent)
'''


STREAM_SCRIPT = r'''
import socket, sys
from concurrent.futures import ThreadPoolExecutor
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
streams = [bytes.fromhex(l) for l in open(path).read().split()]

def one(data):
    try:
        s = socket.create_connection((host, port), timeout=5)
    except OSError:
        return "connect-error"
    s.settimeout(5)
    try:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            return "send-error"
        got = 0
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    return "closed after %d reply bytes" % got
                got += len(b)
        except socket.timeout:
            return "timeout"
        except OSError:
            return "reset after %d reply bytes" % got
    finally:
        s.close()

with ThreadPoolExecutor(10) as ex:
    results = list(ex.map(one, streams))
from collections import Counter
print(len(results), dict(Counter(r.split(" after")[0] for r in results)))
'''


class Garbage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_root("network namespaces, netfilter and serf agents")
        harness.require_commands("serf", why="serf agents")
        cls.w = harness.Workdir()
        cls.lab = None
        cls.seed = int(os.environ.get("SIDECRYPT_GARBAGE_SEED", random.randrange(1 << 30)))
        print("garbage seed %d (SIDECRYPT_GARBAGE_SEED to repeat)" % cls.seed)
        try:
            cls.peer_bin = harness.build_gossippeer(os.path.join(cls.w.path, "bin"))
            cls.lab = harness.Lab(["h1", "h2", "h3", ATTACKER])
            lab = cls.lab
            cls.key = harness.run(["keygen"], check=True).stdout.strip()
            cfg = harness.proxy_config(os.path.join(cls.w.path, "proxy.toml"),
                                       os.path.join(cls.w.path, "data"), cls.key)
            cls.proxy = lab.spawn("h1", [harness.binary(), "run", "--config", cfg],
                                  os.path.join(cls.w.path, "sidecrypt.log"))
            harness.wait_for(lambda: "started:" in harness.read_log(cls.proxy), 15,
                             what="sidecrypt started")
            cls.agents = {}
            for n in NAMES:
                args = ["serf", "agent", "-node", n, "-bind", cls.addr(n), "-log-level", "debug",
                        "-rpc-addr", "127.0.0.1:7373"]
                if n != "proxied":
                    args += ["-encrypt", cls.key]
                cls.agents[n] = lab.spawn(HOSTS[n], args, os.path.join(cls.w.path, n + ".log"))
            for n, p in cls.agents.items():
                harness.wait_for(lambda p=p: "Serf agent running" in harness.read_log(p), 15,
                                 what="serf agent " + n)
            lab.run("h2", "serf", "join", cls.addr("proxied"), timeout=20)
            lab.run("h1", "serf", "join", cls.addr("nat2"), timeout=20)
            harness.wait_members_alive(lab, ["h1", "h2", "h3"], NAMES, timeout=30)
            time.sleep(2)  # let joins settle before the baseline
            cls.baseline_log = harness.read_log(cls.agents["proxied"])
            cls.c0 = harness.dump_counters(cls.proxy)
            cls.attack()
            time.sleep(1)
            # If sidecrypt died, test_1 says so; the counter checks then fail on empty counters.
            cls.c1 = harness.dump_counters(cls.proxy) if cls.proxy.poll() is None else {}
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def addr(cls, name):
        return "%s:7946" % cls.lab.ip(HOSTS[name])

    @classmethod
    def attack(cls):
        vectors_dir = os.environ.get("SIDECRYPT_VECTORS_DIR") or os.path.join(
            harness.REPO_ROOT, "tests", "vectors")
        with open(os.path.join(vectors_dir, "negatives.json")) as f:
            parser = json.load(f)["parser_vectors"]
        shapes = {v["name"]: v["input_hex"] for v in parser}
        missing = [n for n in CRASH_SHAPES if n not in shapes]
        assert not missing, "negatives.json lacks %s" % missing
        target_ip = cls.lab.ip("h1")
        # 1. Random datagrams plus every parser vector raw (plaintext from a keyless sender).
        script = os.path.join(cls.w.path, "attack.py")
        with open(script, "w") as f:
            f.write(ATTACK_SCRIPT)
        r = cls.lab.run(ATTACKER, "python3", script, str(cls.seed), target_ip, "7946",
                        str(N_DATAGRAMS), ",".join(shapes.values()), timeout=120)
        cls.raw_sent = int(r.stdout.split()[-1])
        # 2. The crash shapes sealed with the cluster key, and a sealed packet relabelled v0
        #    whose last plaintext byte is no valid PKCS#7 padding.
        packets = os.path.join(cls.w.path, "sealed.txt")
        with open(packets, "w") as f:
            for n in CRASH_SHAPES:
                f.write(shapes[n] + "\n")
            # 19 bytes ending in 0xff, like negatives.json's
            # "version-1-relabelled-0-padding-exceeds-length"
            f.write("relabel-v0 " + "00" * 18 + "ff\n")
        r = cls.lab.run(ATTACKER, cls.peer_bin, "-send-packets", packets, "-key", cls.key,
                        "-bind", cls.lab.ip(ATTACKER), "-port", "7946", "-join",
                        cls.addr("proxied"), timeout=60)
        cls.sealed_sent = int(r.stdout.split()[-1])
        cls.sealed_crash = len(CRASH_SHAPES)
        # 3. Random TCP streams, ten at a time, each bounded by socket timeouts.
        rng = random.Random(cls.seed + 1)
        streams = []
        for i in range(N_STREAMS):
            b = bytearray(rng.randbytes(rng.randint(1, 4096)))
            if i % 4 == 0:
                b[0] = 10  # looks like an encrypted frame: length, version, nonce are random
            elif i % 4 == 1:
                b[0] = rng.choice([6, 7, 8, 12, 244])  # push/pull, user, compress, label...
            streams.append(bytes(b))
        script = os.path.join(cls.w.path, "streams.py")
        with open(script, "w") as f:
            f.write(STREAM_SCRIPT)
        data = os.path.join(cls.w.path, "streams.hex")
        with open(data, "w") as f:
            f.write("\n".join(s.hex() for s in streams))
        r = cls.lab.run(ATTACKER, "python3", script, target_ip, "7946", data, timeout=180)
        cls.stream_report = r.stdout.strip()

    @classmethod
    def tearDownClass(cls):
        harness.cleanup(cls.lab, cls.w)

    def delta(self, section, name):
        return harness.counter(self.c1, section, name) - harness.counter(self.c0, section, name)

    def test_1_sidecrypt_and_agents_still_run(self):
        self.assertIsNone(self.proxy.poll(), "sidecrypt exited:\n" +
                          harness.read_log(self.proxy)[-3000:])
        for n, p in self.agents.items():
            self.assertIsNone(p.poll(), "serf agent %s died:\n%s"
                              % (n, harness.read_log(p)[-3000:]))

    def test_2_every_datagram_counted_as_dropped(self):
        attack = self.raw_sent + self.sealed_sent
        self.assertEqual(self.raw_sent, N_DATAGRAMS + 8)
        dropped = self.delta("udp in", "dropped")
        # Every attack datagram is dropped; the kernel may lose a few before sidecrypt sees them
        # but sidecrypt must never drop more than the attack (the cluster's own packets open).
        self.assertLessEqual(dropped, attack, (self.c0, self.c1))
        self.assertGreaterEqual(dropped, attack * 0.99, (self.c0, self.c1))
        sec = "lan packets peer->agent"
        self.assertGreaterEqual(self.delta(sec, "crash_shape_dropped"), self.sealed_crash + 1,
                                self.c1)
        self.assertGreaterEqual(self.delta(sec, "opened_key_0"), self.sealed_crash, self.c1)
        refused = sum(self.delta(sec, k) for k in ("plaintext_refused", "label_mismatch",
                                                   "malformed", "oversize"))
        self.assertGreaterEqual(refused, self.raw_sent * 0.99, self.c1)
        self.assertEqual(self.delta(sec, "plaintext_forwarded"), 0, self.c1)
        self.assertEqual(self.delta(sec, "shadow_refused"), 0, self.c1)

    def test_3_every_stream_refused(self):
        sec = "lan streams peer->agent"
        refused = sum(self.delta(sec, k) for k in (
            "plaintext_refused", "open_failed", "malformed", "oversize", "truncated",
            "label_mismatch", "crash_shape_dropped"))
        self.assertGreaterEqual(self.delta("tcp", "accepted"), N_STREAMS, self.stream_report)
        self.assertGreaterEqual(refused, N_STREAMS, (self.stream_report, self.c1))
        self.assertEqual(self.delta(sec, "plaintext_forwarded"), 0, self.c1)

    def test_4_agent_logged_nothing_of_it(self):
        after = harness.read_log(self.agents["proxied"])
        self.assertTrue(after.startswith(self.baseline_log))
        new = after[len(self.baseline_log):]
        before_errors = AGENT_ERROR.findall(self.baseline_log)
        self.assertEqual(AGENT_ERROR.findall(new), [],
                         "the agent logged errors after the attack (baseline had %d):\n%s"
                         % (len(before_errors),
                            "\n".join(l for l in new.splitlines() if AGENT_ERROR.search(l))))
        attacker = self.lab.ip(ATTACKER)
        self.assertEqual([l for l in new.splitlines() if "from=%s:" % attacker in l and
                          "Stream connection" not in l], [])

    def test_5_cluster_stays_healthy(self):
        harness.wait_members_alive(self.lab, ["h1", "h2", "h3"], NAMES, timeout=20)
        time.sleep(3)  # a few more probe rounds
        for n in NAMES:
            m = harness.serf_members(self.lab, HOSTS[n])
            self.assertEqual(m, {k: "alive" for k in NAMES}, (n, m))
        text = "\n".join(harness.read_log(p) for p in self.agents.values())
        self.assertEqual(harness.failure_lines(text, NAMES), [])
        r = self.lab.run("h2", "serf", "query", "-timeout", "3s", "after-garbage", "x",
                         timeout=20)
        self.assertIn("Ack from 'proxied'", r.stdout, r.stdout)
        self.assertIsNone(self.proxy.poll())


if __name__ == "__main__":
    harness.main()
