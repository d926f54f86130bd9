"""Claim: gossip keys rotate across a mixed fleet with Serf's own tooling (issue 8).

Two plaintext serf agents, each behind its own sidecrypt (p1, p2), and two natively encrypting
serf agents with keyring files (n3, n4) form one cluster under K1. From a native node,
`serf keys -install K2`, `-list`, `-use K2`, `-remove K1`, `-list` each report success from every
member (sidecrypt answers Serf's key queries for its agent), while a watcher checks the whole time
that nobody is ever marked failed. Afterwards every proxied node's keyring file holds exactly the
native nodes' keyring, and `sidecrypt decode` of a fresh capture finds only K2 in use. The same
tooling run against a plaintext agent behind sidecrypt (the agent originates the query) changes
every keyring too.

Then the honest-failure case: with one proxied node (its agent and its sidecrypt) stopped,
`-install K3` reports the missing member; once the node is back, `-list` shows the gap (K3 on
3/4) and a second `-install` closes it.
"""
import json
import os
import re
import signal
import threading
import time
import unittest

import harness

NAMES = ["p1", "p2", "n3", "n4"]
HOSTS = {"p1": "h1", "p2": "h2", "n3": "h3", "n4": "h4"}
PROXIED = ["p1", "p2"]


class KeyRotation(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_root("network namespaces, netfilter and serf agents")
        harness.require_commands("serf", "tcpdump", why="serf agents and a wire capture")
        cls.w = harness.Workdir()
        cls.lab = None
        try:
            cls.lab = harness.Lab(["h1", "h2", "h3", "h4"])
            cls.k1 = cls.keygen()
            cls.proxies, cls.cfgs, cls.agents = {}, {}, {}
            for n in PROXIED:
                cls.cfgs[n] = harness.proxy_config(
                    os.path.join(cls.w.path, n + ".toml"), cls.data_dir(n), cls.k1)
                cls.start_proxied(n)
            for n in ("n3", "n4"):
                cls.w.file(n + ".keyring", json.dumps([cls.k1]))
                cls.start_native(n)
            for n in ("p2", "n3", "n4"):
                cls.lab.run(HOSTS[n], "serf", "join", cls.addr("p1"), timeout=20)
            harness.wait_members_alive(cls.lab, list(HOSTS.values()), NAMES, timeout=40)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        harness.cleanup(cls.lab, cls.w)

    @classmethod
    def keygen(cls):
        return harness.run(["keygen"], check=True).stdout.strip()

    @classmethod
    def data_dir(cls, n):
        return os.path.join(cls.w.path, "data-" + n)

    @classmethod
    def addr(cls, n):
        return "%s:7946" % cls.lab.ip(HOSTS[n])

    @classmethod
    def start_proxied(cls, n, join=None):
        cls.proxies[n], cls.agents[n] = harness.start_proxied_serf(
            cls.lab, HOSTS[n], n, cls.cfgs[n], cls.w.path, join=join)

    @classmethod
    def start_native(cls, n):
        args = ["serf", "agent", "-node", n, "-bind", cls.addr(n), "-log-level", "debug",
                "-rpc-addr", "127.0.0.1:7373",
                "-keyring-file", os.path.join(cls.w.path, n + ".keyring")]
        cls.agents[n] = cls.lab.spawn(HOSTS[n], args,
                                      os.path.join(cls.w.path, "%s-%d.log" % (n, time.time())))
        harness.wait_for(lambda: "Serf agent running" in harness.read_log(cls.agents[n]), 15,
                         what="serf agent " + n)

    # ---- helpers ---------------------------------------------------------------------------

    def keys(self, node, *args):
        return self.lab.run(HOSTS[node], "serf", "keys", *args, check=False, timeout=30)

    def listed(self, node="n3"):
        """{key: (count, total)} from `serf keys -list`."""
        r = self.keys(node, "-list")
        out = {}
        for m in re.finditer(r"^(\S+)\s+\|?\s*\[(\d+)/(\d+)\]", r.stdout, re.M):
            out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
        return r, out

    def proxied_ring(self, n):
        with open(os.path.join(self.data_dir(n), "serf", "local.keyring")) as f:
            return json.load(f)

    def native_ring(self, n):
        with open(os.path.join(self.w.path, n + ".keyring")) as f:
            return json.load(f)

    def watch(self):
        """Polls every member list until stopped; returns the list of non-alive sightings."""
        seen, stop = [], threading.Event()

        def loop():
            while not stop.is_set():
                for h in ("h1", "h3"):
                    for name, status in harness.serf_members(self.lab, h).items():
                        if name in NAMES and status != "alive":
                            seen.append((h, name, status))
                stop.wait(0.5)
        t = threading.Thread(target=loop, daemon=True)
        t.start()
        return seen, stop, t

    def assert_ok(self, r, text):
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn(text, r.stdout + r.stderr)

    # ---- the rotation ----------------------------------------------------------------------

    def test_1_rotation_across_the_mixed_fleet(self):
        k2 = self.keygen()
        seen, stop, t = self.watch()
        try:
            self.assert_ok(self.keys("n3", "-install", k2), "Successfully installed key!")
            r, listed = self.listed()
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertEqual(listed, {self.k1: (4, 4), k2: (4, 4)}, r.stdout)
            self.assert_ok(self.keys("n3", "-use", k2), "Successfully changed primary key!")
            time.sleep(2)  # gossip now sealed with K2 everywhere
            self.assert_ok(self.keys("n3", "-remove", self.k1), "Successfully removed key!")
            r, listed = self.listed()
            self.assertEqual(listed, {k2: (4, 4)}, r.stdout + r.stderr)
            time.sleep(3)
        finally:
            stop.set()
            t.join(10)
        self.assertEqual(seen, [], "members seen not alive during the rotation")
        for n in NAMES:
            for line in harness.read_log(self.agents[n]).splitlines():
                self.assertNotIn("as failed", line)
        native = self.native_ring("n3")
        self.assertEqual(native, [k2])
        self.assertEqual(self.native_ring("n4"), native)
        for n in PROXIED:
            self.assertEqual(self.proxied_ring(n), native, n)
            mode = os.stat(os.path.join(self.data_dir(n), "serf", "local.keyring")).st_mode
            self.assertEqual(mode & 0o777, 0o600)
            log = harness.read_log(self.proxies[n])
            self.assertIn("key query install-key", log)
            self.assertIn("applied and persisted", log)
            self.assertNotIn(k2, log)
            self.assertNotIn(self.k1, log)
            status = json.loads(self.lab.run(HOSTS[n], harness.binary(), "status", "--json",
                                             "-c", self.cfgs[n]).stdout)
            ring = status["status"]["keyrings"]["lan"]
            self.assertEqual(len(ring), 1)
            self.assertGreaterEqual(status["status"]["key_queries"]["answers_rewritten"], 5)
            # `sidecrypt keyring list` reads the same file the admin API shows.
            kl = harness.run(["keyring", "list", "--file",
                              os.path.join(self.data_dir(n), "serf", "local.keyring")], check=True)
            self.assertIn(ring[0]["fingerprint"], kl.stdout)
        # Only K2 is in use on the wire now: every gossip packet of a fresh capture opens with
        # K2 (the ring file holds nothing else) and none is plaintext.
        pcap = os.path.join(self.w.path, "after.pcap")
        cap = self.lab.capture(pcap, "udp port 7946")
        time.sleep(4)
        cap.terminate()
        cap.wait(5)
        ring_file = self.w.file("k2.keyring", json.dumps([k2]))
        d = harness.run(["decode", pcap, "--keyring", ring_file, "--json"], timeout=60)
        packets = [json.loads(line) for line in d.stdout.splitlines() if line.startswith("{")]
        self.assertGreater(len(packets), 10, d.stderr)
        for p in packets:
            self.assertTrue(p["encrypted"], p)
            self.assertEqual(p["key_index"], 0, p)
        type(self).current = k2

    def test_2_agent_behind_sidecrypt_originates(self):
        k = self.current
        k4 = self.keygen()
        r = self.keys("p1", "-install", k4)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r, listed = self.listed("p2")
        self.assertEqual(listed, {k: (4, 4), k4: (4, 4)}, r.stdout + r.stderr)
        self.assert_ok(self.keys("p2", "-remove", k4), "Successfully removed key!")
        for n in PROXIED:
            self.assertEqual(self.proxied_ring(n), [k])
        self.assertEqual(self.native_ring("n3"), [k])

    def test_3_a_stopped_node_is_reported_and_the_gap_closes(self):
        k = self.current
        k3 = self.keygen()
        # Stop p2 entirely: the agent first (its sidecrypt keeps its rules: fail closed), then
        # its sidecrypt.
        harness.stop_process(self.agents["p2"], signal.SIGKILL)
        harness.stop_process(self.proxies["p2"], signal.SIGTERM)
        r = self.keys("n3", "-install", k3)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("3/4 nodes reported success", r.stdout + r.stderr)
        self.assertEqual(self.proxied_ring("p2"), [k])
        # Back: sidecrypt first (it holds the old ring), then the agent rejoins.
        self.start_proxied("p2", join=self.addr("n3"))
        harness.wait_members_alive(self.lab, ["h1", "h2", "h3"], NAMES, timeout=40)
        r, listed = self.listed()
        self.assertEqual(listed.get(k3), (3, 4), r.stdout + r.stderr)
        self.assert_ok(self.keys("n3", "-install", k3), "Successfully installed key!")
        r, listed = self.listed()
        self.assertEqual(listed, {k: (4, 4), k3: (4, 4)}, r.stdout + r.stderr)
        self.assertEqual(self.proxied_ring("p2"), [k, k3])


if __name__ == "__main__":
    harness.main()
