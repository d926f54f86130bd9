"""Claim: sidecrypt fails closed. When it stops (SIGTERM, drain_time = "0s") with install_rules
= true and outgoing encryption on, its netfilter rules and policy routes stay installed, it says
so in its log, and the plaintext agent's gossip does not reach the wire: a capture on the bridge
sees no frame at all from the agent's host while the agent keeps probing, gossiping and trying
to join. `sidecrypt rules remove -c CONFIG` lifts the rules (and then - the positive control of
the capture check - the agent's plaintext does appear on the wire). With
`unsafe_remove_rules_on_exit = true` the rules are gone as soon as sidecrypt exits.
"""
import os
import shutil
import signal
import time
import unittest

import harness

ROUTE_TABLE = "133"


def config(path, data_dir, key, unsafe_remove=False):
    body = ["[agent]", 'profile = "serf"', 'data_dir = "%s"' % data_dir,
            "[gossip]", 'encrypt = "%s"' % key,
            "encrypt_verify_incoming = true", "encrypt_verify_outgoing = true",
            "[intercept]", "install_rules = true", 'drain_time = "0s"']
    if unsafe_remove:
        body.append("unsafe_remove_rules_on_exit = true")
    body += ["[log]", 'level = "debug"', ""]
    with open(path, "w") as f:
        f.write("\n".join(body))
    return path


class FailClosed(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        harness.require_root("network namespaces, netfilter and serf agents")
        harness.require_commands("serf", "tcpdump", "nft", why="agents, capture, rule checks")
        cls.w = harness.Workdir()
        cls.lab = None
        try:
            cls.lab = harness.Lab(["h1", "h2"])
            lab = cls.lab
            cls.key = harness.run(["keygen"], check=True).stdout.strip()
            cls.data = os.path.join(cls.w.path, "data")
            cls.cfg = config(os.path.join(cls.w.path, "proxy.toml"), cls.data, cls.key)
            cls.proxy, cls.agent = harness.start_proxied_serf(lab, "h1", "proxied", cls.cfg,
                                                              cls.w.path)
            cls.native = lab.spawn("h2", ["serf", "agent", "-node", "native", "-bind",
                                          cls.addr("h2"), "-rpc-addr", "127.0.0.1:7373",
                                          "-encrypt", cls.key, "-log-level", "debug"],
                                   os.path.join(cls.w.path, "native.log"))
            harness.wait_for(lambda: "Serf agent running" in harness.read_log(cls.native), 15,
                             what="serf agent native")
            lab.run("h1", "serf", "join", cls.addr("h2"), timeout=20)
            harness.wait_members_alive(lab, ["h1", "h2"], ["proxied", "native"], timeout=30)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        harness.cleanup(cls.lab, cls.w)

    @classmethod
    def addr(cls, host):
        return "%s:7946" % cls.lab.ip(host)

    def rules_state(self):
        """(sidecrypt's netfilter rules present, policy rule present, routes in table 133) in
        h1, whichever backend holds the rules."""
        nft = self.lab.run("h1", "nft", "list", "table", "inet", "sidecrypt", check=False)
        present = nft.returncode == 0
        for save in ("iptables-nft-save", "iptables-legacy-save"):
            if shutil.which(save):
                out = self.lab.run("h1", save, "-t", "mangle", check=False).stdout
                present = present or "SIDECRYPT" in out
        rules = self.lab.run("h1", "ip", "rule", "list", check=False).stdout
        routes = self.lab.run("h1", "ip", "route", "show", "table", ROUTE_TABLE,
                              check=False).stdout.strip()
        return present, "lookup %s" % ROUTE_TABLE in rules, routes

    def capture(self, name, seconds, during=None):
        pcap = os.path.join(self.w.path, name)
        cap = self.lab.capture(pcap, "port 7946")
        if during:
            during()
        time.sleep(seconds)
        harness.stop_process(cap, signal.SIGTERM, timeout=10)
        return harness.read_pcap_frames(pcap)

    def test_1_stop_keeps_rules_and_no_plaintext_leaves(self):
        harness.stop_process(self.proxy, signal.SIGTERM, timeout=15)
        self.assertEqual(self.proxy.returncode, 0, harness.read_log(self.proxy)[-2000:])
        log = harness.read_log(self.proxy)
        self.assertIn("netfilter rules stay installed (fail closed)", log)
        self.assertNotIn("netfilter rules removed", log)
        nft, rule, routes = self.rules_state()
        self.assertTrue(nft and rule and routes, "rules after stop: nft=%s rule=%s routes=%r"
                        % (nft, rule, routes))
        self.assertIsNone(self.agent.poll(), "the plaintext agent must keep running")
        agent_ip, native_ip = self.lab.ip("h1"), self.lab.ip("h2")
        mark = len(harness.read_log(self.agent))

        def agent_tries_to_talk():
            # Beyond its own probes and gossip: a join (TCP push/pull) and a user event.
            self.lab.run("h1", "serf", "event", "after-stop", "x", check=False, timeout=15)
            self.lab.run("h1", "timeout", "15", "serf", "join", self.addr("h2"), check=False,
                         timeout=20)
        frames = self.capture("after-stop.pcap", 4, agent_tries_to_talk)
        from_agent = [f for f in frames if f[1] == agent_ip]
        self.assertEqual(
            [], ["%s %s:%d->%s:%d %r" % (f[0], f[1], f[2], f[3], f[4], f[5][:24])
                 for f in from_agent],
            "frames left the agent's host after sidecrypt stopped (fail open)")
        for proto, src, _, _, _, payload in frames:
            self.assertNotIn(b"\xa7proxied", payload, "plaintext node name on the wire")
            self.assertNotIn(b"after-stop", payload, "plaintext event on the wire")
        # The capture did see traffic: the native node keeps probing the agent (sealed).
        self.assertTrue([f for f in frames if f[1] == native_ip], "capture saw nothing at all")
        # And the agent did try to send (its probes of the native node go unanswered).
        after = harness.read_log(self.agent)[mark:]
        # Nothing from peers reaches the plaintext agent either while sidecrypt is down.
        reached = [l for l in after.splitlines() if "from=%s:" % native_ip in l]
        self.assertEqual(reached, [], "peer traffic reached the plaintext agent directly")
        self.assertRegex(after, r"Failed ping: native|Suspect native|Failed to join|"
                                r"Marking native as failed|Failed fallback ping")

    def test_2_rules_remove_lifts_them(self):
        r = self.lab.run("h1", harness.binary(), "rules", "remove", "-c", self.cfg, check=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("rules removed", r.stdout)
        self.assertEqual(self.rules_state(), (False, False, ""))
        # Positive control for test_1's check: without rules (and without sidecrypt) the
        # plaintext agent's gossip is on the wire unsealed (its join's push/pull here).
        frames = self.capture("after-remove.pcap", 3, lambda: self.lab.run(
            "h1", "timeout", "15", "serf", "join", self.addr("h2"), check=False, timeout=20))
        agent_ip = self.lab.ip("h1")
        plain = [f for f in frames if f[1] == agent_ip and f[5] and
                 ((f[0] == "udp" and (f[5][0] != 1 or len(f[5]) < 29)) or
                  (f[0] == "tcp" and f[5][0] != 10))]
        self.assertTrue(plain, "without rules the agent's plaintext should be on the wire: %s"
                        % [(f[0], f[1], f[5][:8]) for f in frames])

    def test_3_unsafe_remove_rules_on_exit(self):
        cfg = config(os.path.join(self.w.path, "unsafe.toml"), self.data, self.key,
                     unsafe_remove=True)
        p = self.lab.spawn("h1", [harness.binary(), "run", "--config", cfg],
                           os.path.join(self.w.path, "sidecrypt-unsafe.log"))
        harness.wait_for(lambda: "started:" in harness.read_log(p) or p.poll() is not None, 15,
                         what="sidecrypt (unsafe_remove_rules_on_exit) started")
        self.assertIsNone(p.poll(), harness.read_log(p))
        nft, rule, routes = self.rules_state()
        self.assertTrue(nft and rule and routes, "rules while running")
        harness.stop_process(p, signal.SIGTERM, timeout=15)
        self.assertEqual(p.returncode, 0, harness.read_log(p)[-2000:])
        self.assertIn("netfilter rules removed (intercept.unsafe_remove_rules_on_exit)",
                      harness.read_log(p))
        self.assertEqual(self.rules_state(), (False, False, ""))


if __name__ == "__main__":
    harness.main()
