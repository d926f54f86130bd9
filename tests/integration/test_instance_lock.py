"""Claim: one sidecrypt per network namespace. A second `sidecrypt run` started by mistake in the
namespace of a running one (another profile, install_rules = true) exits non-zero with a message
naming the first (pid, config) and leaves the first one's rules (`nft list ruleset` identical),
its sealed wire and its /ready exactly as they were. `rules install` with another config and
`rules remove` refuse while it runs; `rules install` with the running config reinstalls. /ready
fails when the installed rules are another config's (fingerprint), and passes again once the
right rules are back."""
import json
import os
import re
import time
import unittest

import harness

ADMIN = "127.0.0.1:9920"


class InstanceLock(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_root("network namespaces, netfilter and serf agents")
        harness.require_commands("serf", "tcpdump", "nft", why="serf agents, capture, nft")
        cls.w = harness.Workdir()
        cls.lab = None
        try:
            cls.lab = harness.Lab(["h1", "h2"])
            cls.key = harness.run(["keygen"], check=True).stdout.strip()
            cls.pcap = os.path.join(cls.w.path, "wire.pcap")
            cls.cap = cls.lab.capture(cls.pcap, "tcp or udp")
            cls.cfg1 = harness.proxy_config(os.path.join(cls.w.path, "serf.toml"),
                                            os.path.join(cls.w.path, "d1"), cls.key)
            # Another profile (Consul client: 8301, 8300), its own admin port, install_rules.
            cls.cfg2 = harness.proxy_config(os.path.join(cls.w.path, "consul.toml"),
                                            os.path.join(cls.w.path, "d2"), cls.key,
                                            profile="consul",
                                            extra='[admin]\nlisten = "127.0.0.1:9930"')
            cls.p1 = cls.lab.spawn("h1", [harness.binary(), "run", "--config", cls.cfg1],
                                   os.path.join(cls.w.path, "p1.log"))
            harness.wait_for(lambda: "started:" in harness.read_log(cls.p1), 15,
                             what="first sidecrypt")
            cls.n1 = harness.start_serf(cls.lab, "h1", "n1", cls.lab.ip("h1") + ":7946",
                                        os.path.join(cls.w.path, "n1.log"),
                                        ["-log-level", "debug"])
            cls.n2 = harness.start_serf(cls.lab, "h2", "n2", cls.lab.ip("h2") + ":7946",
                                        os.path.join(cls.w.path, "n2.log"), ["-encrypt", cls.key])
            cls.lab.run("h1", "serf", "join", cls.lab.ip("h2") + ":7946")
            harness.wait_members_alive(cls.lab, ["h1", "h2"], ["n1", "n2"], timeout=30)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        harness.cleanup(cls.lab, cls.w)

    def ruleset(self):
        return self.lab.run("h1", "nft", "list", "ruleset").stdout

    def ready(self):
        r = self.lab.run("h1", "python3", "-c",
                         "import urllib.request,urllib.error,sys\n"
                         "try:\n"
                         " r=urllib.request.urlopen('http://%s/ready',timeout=5)\n"
                         " print(r.status, r.read().decode().strip())\n"
                         "except urllib.error.HTTPError as e:\n"
                         " print(e.code, e.read().decode().strip())\n" % ADMIN,
                         check=False, timeout=15)
        return r.stdout.strip()

    def sidecrypt(self, *args, timeout=30):
        return self.lab.run("h1", harness.binary(), *args, check=False, timeout=timeout)

    def test_1_second_run_leaves_everything_alone(self):
        rules_before = self.ruleset()
        harness.wait_for(lambda: self.ready().startswith("200"), 15, what="/ready 200")
        ready_before = self.ready()
        t0 = time.monotonic()
        r = self.sidecrypt("run", "--config", self.cfg2)
        self.assertEqual(self.ruleset(), rules_before, "the second instance rewrote the rules")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertIn("another sidecrypt already runs in this network namespace: pid %d "
                      "(sidecrypt run, config %s)" % (self.p1.pid, self.cfg1), r.stderr)
        self.assertEqual(self.ruleset(), rules_before)
        time.sleep(5.5)  # /ready re-reads the rules at most every 5 s
        self.assertEqual(self.ready(), ready_before)
        self.assertIsNone(self.p1.poll(), "the first sidecrypt died")
        self.assertIn("sidecrypt rules ", rules_before)  # the fingerprint comment

    def test_2_rules_commands_refuse_while_it_runs(self):
        rules_before = self.ruleset()
        r = self.sidecrypt("rules", "install", "--config", self.cfg2)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stderr, r"rules install refused: pid %d \(sidecrypt run, config %s\) "
                         r"owns the rules" % (self.p1.pid, re.escape(self.cfg1)))
        r = self.sidecrypt("rules", "remove", "--config", self.cfg1)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("rules remove refused", r.stderr)
        self.assertEqual(self.ruleset(), rules_before)
        # The running instance's own config: the same rules, reinstalled (a repair).
        r = self.sidecrypt("rules", "install", "--config", self.cfg1)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("with the same rules", r.stdout)
        self.assertEqual(self.ruleset(), rules_before)

    def assert_sealed(self, pcap):
        ring = self.w.file("decode.keyring", '["%s"]' % self.key)
        r = harness.run(["decode", "--keyring", ring, "--json", pcap], timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        items = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
        self.assertGreater(len(items), 10)
        for i in items:
            self.assertTrue(i["encrypted"], i)
            self.assertIsNone(i["error"], i)

    def test_3_the_wire_stayed_sealed(self):
        # Everything on the wire so far (the join, the second instance, the refused rules
        # commands and the same-config reinstall) was sealed. (The reinstall once deleted the
        # fwmark policy rule before adding it again: a plaintext ackResp leaked in that window.)
        self.lab.run("h1", "serf", "event", "after-second-instance", "x")
        harness.wait_for(lambda: "after-second-instance" in harness.read_log(self.n2), 15,
                         what="n2 receives n1's event")
        harness.stop_process(self.cap)
        self.assert_sealed(self.pcap)

    def test_4_ready_checks_the_rules_are_this_configs(self):
        plan = self.sidecrypt("rules", "print", "--config", self.cfg2).stdout
        m = re.search(r"nft -f - <<'EOF'\n(.*?)EOF\n", plan, re.S)
        self.assertIsNotNone(m, plan)
        # Another config's table, loaded behind sidecrypt's back (as the old second instance
        # did): /ready must notice.
        r = harness.sh("ip", "netns", "exec", self.lab.ns("h1"), "nft", "-f", "-",
                       input=m.group(1), check=False)
        self.assertEqual(r.returncode, 0, r.stderr)
        harness.wait_for(lambda: self.ready().startswith("503"), 10, what="/ready 503")
        self.assertIn("holds the rules of another configuration", self.ready())
        r = self.sidecrypt("rules", "install", "--config", self.cfg1)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        harness.wait_for(lambda: self.ready().startswith("200"), 10, what="/ready 200 again")

    def test_5_after_the_first_stops_the_lock_is_free(self):
        harness.wait_members_alive(self.lab, ["h1", "h2"], ["n1", "n2"], timeout=15)
        harness.stop_process(self.p1)
        r = self.sidecrypt("rules", "remove", "--config", self.cfg1)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    harness.main()
