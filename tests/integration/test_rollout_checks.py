"""Claim: the rollout checks gate the next step truthfully. While a plaintext peer remains,
`sidecrypt check enforce-incoming` answers no (exit 1) and its JSON names that peer; once the
peer is converted it answers yes (exit 0); `check remove-key` says no for the primary and for a
key peers still use, yes for an unused one; and the final stage, applied by reload alone, keeps
every member alive."""
import json
import os
import signal
import time
import unittest

import harness


class RolloutChecks(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_root("network namespaces, netfilter, serf and Go peers")
        harness.require_commands("serf", why="serf agents")
        cls.w = harness.Workdir()
        cls.lab = None
        try:
            cls.peer_bin = harness.build_gossippeer(os.path.join(cls.w.path, "bin"))
            cls.lab = harness.Lab(["h1", "h2", "h3"])
            cls.key = harness.run(["keygen"], check=True).stdout.strip()
            cls.cfg = os.path.join(cls.w.path, "proxy.toml")
            cls.data = os.path.join(cls.w.path, "data")
            cls.write_config(verify_incoming=False)
            cls.proxy = cls.lab.spawn("h1", [harness.binary(), "run", "--config", cls.cfg],
                                      os.path.join(cls.w.path, "sidecrypt.log"))
            harness.wait_for(lambda: "started:" in harness.read(cls.proxy.log_path), 15,
                             what="sidecrypt started")
            cls.n1 = cls.lab.spawn("h1", ["serf", "agent", "-node", "n1", "-bind",
                                          cls.lab.ip("h1") + ":7946"],
                                   os.path.join(cls.w.path, "n1.log"))
            harness.wait_for(lambda: "Serf agent running" in harness.read(cls.n1.log_path), 15,
                             what="n1")
            cls.native = cls.go("h2", "native", ["-key", cls.key, "-verify-incoming=false"], [])
            # A node still at stage 1: it holds the key but sends plaintext.
            cls.legacy = cls.go("h3", "legacy", ["-key", cls.key, "-verify-incoming=false",
                                                 "-verify-outgoing=false"], ["h2"])
            cls.lab.run("h1", "serf", "join", cls.lab.ip("h2") + ":7946")
            harness.wait_for(lambda: cls.alive_on_n1() == {"n1", "native", "legacy"}, 30,
                             what="three members alive on n1")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.lab is not None:
            cls.lab.cleanup()
        cls.w.cleanup()

    @classmethod
    def write_config(cls, verify_incoming):
        harness.proxy_config(cls.cfg, cls.data, cls.key,
                             extra="encrypt_verify_incoming = %s" % str(verify_incoming).lower())

    @classmethod
    def go(cls, host, name, flags, joins):
        args = [cls.peer_bin, "-node", name, "-bind", cls.lab.ip(host), "-port", "7946",
                "-interval", "500ms", "-retransmit-mult", "10"] + flags
        for j in joins:
            args += ["-join", cls.lab.ip(j) + ":7946"]
        p = cls.lab.spawn(host, args, os.path.join(cls.w.path, "%s-%d.log" % (name, time.time())))
        harness.wait_for(lambda: "READY" in harness.read(p.log_path) or p.poll() is not None, 20,
                         what=name)
        return p

    @classmethod
    def alive_on_n1(cls):
        return {n for n, s in harness.serf_members(cls.lab, "h1").items() if s == "alive"}

    def sidecrypt(self, *args):
        return self.lab.run("h1", harness.binary(), *args, "-c", self.cfg, check=False,
                            timeout=30)

    def test_1_no_while_a_plaintext_peer_remains(self):
        # The member list may name h3 (alive but silent) before h3's own plaintext arrives: wait
        # for the census to have seen that plaintext, which is what this test is about.
        def plaintext_from_h3():
            status = json.loads(self.sidecrypt("status", "--json").stdout)
            return any(p["address"] == self.lab.ip("h3") and p["shadow_refused"] > 0
                       for p in status["peers"])
        harness.wait_for(plaintext_from_h3, 15, what="h3's plaintext in the census")
        r = self.sidecrypt("check", "enforce-incoming", "--json")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        doc = json.loads(r.stdout)
        self.assertFalse(doc["ok"])
        why = {x["peer"]: x["why"] for x in doc["reasons"]}
        self.assertIn("sent plaintext", why.get(self.lab.ip("h3"), ""), doc)
        status = json.loads(self.sidecrypt("status", "--json").stdout)
        peers = {p["address"]: p for p in status["peers"]}
        self.assertGreater(peers[self.lab.ip("h2")]["gossip"]["packets_encrypted"], 0, peers)

    def test_2_yes_once_the_peer_is_converted(self):
        cls = type(self)
        harness.stop_process(cls.legacy, signal.SIGTERM)
        cls.legacy = cls.go("h3", "legacy", ["-key", self.key, "-verify-incoming=false"],
                            ["h2"])
        harness.wait_for(lambda: self.alive_on_n1() == {"n1", "native", "legacy"}, 30,
                         what="legacy back, now encrypting")
        time.sleep(4)
        harness.wait_for(lambda: self.sidecrypt("check", "enforce-incoming", "--within",
                                                "3s").returncode == 0, 20,
                         what="enforce-incoming to say yes")
        r = self.sidecrypt("check", "enforce-incoming", "--within", "3s", "--json")
        self.assertTrue(json.loads(r.stdout)["ok"], r.stdout)

    def test_3_remove_key(self):
        k2 = harness.run(["keygen"], check=True).stdout.strip()
        ring = os.path.join(self.data, "serf", "local.keyring")
        harness.run(["keyring", "install", k2, "--file", ring], check=True)
        self.assertEqual(self.sidecrypt("reload").returncode, 0)
        # (A short window: the census must be older than the window to answer yes.)
        r = self.sidecrypt("check", "remove-key", k2, "--within", "3s", "--json")
        self.assertEqual(r.returncode, 0, r.stdout)
        r = self.sidecrypt("check", "remove-key", self.key, "--json")
        self.assertEqual(r.returncode, 1, r.stdout)
        whys = " ".join(x["why"] for x in json.loads(r.stdout)["reasons"])
        self.assertIn("primary key", whys)
        self.assertIn("still sends with this key", whys)

    def test_4_enforce_by_reload_keeps_everyone_alive(self):
        self.write_config(verify_incoming=True)
        self.assertEqual(self.sidecrypt("reload").returncode, 0)
        self.assertIn("stage changed: gossip.encrypt_verify_incoming false -> true",
                      harness.read(self.proxy.log_path))
        time.sleep(5)
        self.assertEqual(self.alive_on_n1(), {"n1", "native", "legacy"})
        for p in (self.n1,):
            self.assertNotIn("as failed", harness.read(p.log_path))

    def test_5_member_list_and_silent_members(self):
        # The member list comes from the gossip itself: every node by name, the agent as self.
        members = json.loads(self.sidecrypt("status", "--json").stdout)["members"]
        self.assertEqual(members["self"]["node"], "n1", members)
        live = {m["name"]: m for m in members["members"] if m["state"] == "alive"}
        self.assertTrue({"native", "legacy"} <= set(live), members)
        self.assertEqual(live["legacy"]["address"], self.lab.ip("h3"))
        peers = {p["address"]: p for p in json.loads(self.sidecrypt("status", "--json").stdout)
                 ["peers"]}
        self.assertEqual(peers[self.lab.ip("h3")]["node"], "legacy", peers)
        # A live member that goes silent is not mistaken for a safe one: freeze it, and the check
        # names it while the gossip still lists it alive or suspect.
        cls = type(self)
        os.kill(cls.legacy.pid, signal.SIGSTOP)
        try:
            def names_silent_legacy():
                r = self.sidecrypt("check", "enforce-incoming", "--within", "1s", "--json")
                doc = json.loads(r.stdout)
                return r.returncode == 1 and any(
                    x["node"] == "legacy" and "silent" in x["why"] for x in doc["reasons"])
            harness.wait_for(names_silent_legacy, 10, interval=0.2,
                             what="enforce-incoming to name the silent live member")
        finally:
            os.kill(cls.legacy.pid, signal.SIGCONT)


if __name__ == "__main__":
    harness.main()
