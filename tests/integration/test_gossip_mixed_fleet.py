"""Claim: a plaintext serf 0.9.4 agent behind sidecrypt and natively encrypting serf agents form
one cluster: all members alive everywhere, user events and queries travel both ways, joins work
in both directions (TCP push/pull), the agent sees peers' real addresses (TPROXY), and nothing
on the wire between hosts carries plaintext gossip."""
import json
import os
import re
import signal
import unittest

import harness


class MixedFleet(unittest.TestCase):
    IPV6 = False

    @classmethod
    def setUpClass(cls):
        harness.require_root("network namespaces, netfilter and serf agents")
        cls.w = harness.Workdir()
        cls.lab = harness.Lab(["h1", "h2", "h3"], ipv6=cls.IPV6)
        lab = cls.lab
        try:
            cls.key = harness.run(["keygen"], check=True).stdout.strip()
            cls.pcap = os.path.join(cls.w.path, "wire.pcap")
            lab.capture(cls.pcap, "port 7946")
            cfg = harness.proxy_config(os.path.join(cls.w.path, "p1.toml"),
                                       os.path.join(cls.w.path, "d1"), cls.key)
            cls.proxy = lab.spawn("h1", [harness.binary(), "run", "--config", cfg],
                                  os.path.join(cls.w.path, "sidecrypt.log"))
            harness.wait_for(lambda: "started:" in cls.read(cls.proxy), 10,
                             what="sidecrypt started")
            cls.agents = {}
            for i, h in enumerate(["h1", "h2", "h3"], start=1):
                addr = cls.addr(h)
                args = ["serf", "agent", "-node", "n%d" % i, "-bind", addr, "-log-level", "debug",
                        "-rpc-addr", "127.0.0.1:7373"]
                if h != "h1":
                    args += ["-encrypt", cls.key]
                cls.agents[h] = lab.spawn(h, args, os.path.join(cls.w.path, "n%d.log" % i))
            for h in ["h1", "h2", "h3"]:
                harness.wait_for(lambda h=h: "Serf agent running" in cls.read(cls.agents[h]), 15,
                                 what="serf agent on " + h)
            # n1 (plaintext, proxied) dials n2: outbound TCP push/pull through sidecrypt.
            lab.run("h1", "serf", "join", cls.addr("h2"))
            # n3 (native) dials n1: inbound TCP push/pull through sidecrypt.
            lab.run("h3", "serf", "join", cls.addr("h1"))
            harness.wait_members_alive(lab, ["h1", "h2", "h3"], ["n1", "n2", "n3"], timeout=30)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def addr(cls, host):
        ip = cls.lab.ip(host, v6=cls.IPV6)
        return ("[%s]:7946" % ip) if cls.IPV6 else ("%s:7946" % ip)

    @staticmethod
    def read(proc):
        with open(proc.log_path) as f:
            return f.read()

    @classmethod
    def tearDownClass(cls):
        harness.cleanup(cls.lab, cls.w)

    def test_1_user_events_both_ways(self):
        self.lab.run("h2", "serf", "event", "from-native", "payload-1")
        self.lab.run("h1", "serf", "event", "from-proxied", "payload-2")
        harness.wait_for(lambda: "user-event: from-native" in self.read(self.agents["h1"]), 15,
                         what="n1 receives the native agent's event")
        harness.wait_for(lambda: "user-event: from-proxied" in self.read(self.agents["h3"]), 15,
                         what="n3 receives the proxied agent's event")

    def test_2_queries_both_ways(self):
        for h in ("h1", "h2"):
            r = self.lab.run(h, "serf", "query", "-timeout", "3s", "q-" + h, "x", timeout=20)
            self.assertIn("Total Acks: 3", r.stdout, r.stdout)

    def test_3_agent_sees_real_peer_address(self):
        # memberlist logs the source of every inbound stream at debug level.
        log = self.read(self.agents["h1"])
        ip3 = self.lab.ip("h3", v6=self.IPV6)
        froms = [f[1:f.index("]")] if f.startswith("[") else f.rsplit(":", 1)[0]
                 for f in re.findall(r"Stream connection from=(\S+)", log)]
        self.assertIn(ip3, froms, "n1 saw inbound streams only from %s" % froms)

    def test_4_members_stay_alive(self):
        for h in ("h1", "h2", "h3"):
            m = harness.serf_members(self.lab, h)
            self.assertEqual(m, {"n1": "alive", "n2": "alive", "n3": "alive"}, (h, m))
        for h in ("h1", "h2", "h3"):
            self.assertNotIn("Marking n1 as failed", self.read(self.agents[h]))
            self.assertNotIn("Marking n2 as failed", self.read(self.agents[h]))

    def test_5_counters_show_sealed_and_opened_traffic(self):
        before = self.read(self.proxy).count("counters:")
        self.proxy.send_signal(signal.SIGUSR1)
        harness.wait_for(lambda: self.read(self.proxy).count("counters:") > before, 5,
                         what="counter dump")
        line = [l for l in self.read(self.proxy).splitlines() if "counters:" in l][-1]
        sealed = int(re.search(r"packets agent->peer sealed=(\d+)", line).group(1))
        opened = int(re.search(r"packets peer->agent opened_key_0=(\d+)", line).group(1))
        self.assertGreater(sealed, 5, line)
        self.assertGreater(opened, 5, line)
        self.assertRegex(line, r"streams agent->peer sealed=\d+")
        self.assertRegex(line, r"streams peer->agent opened_key_0=\d+")

    def test_7_every_payload_opens_with_the_key(self):
        # sidecrypt decode on the bridge capture: every UDP payload and TCP message is sealed
        # and opens with the cluster key; nothing parses as plaintext memberlist.
        ring = self.w.file("decode.keyring", '["%s"]' % self.key)
        r = harness.run(["decode", "--keyring", ring, "--json", self.pcap], timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        items = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
        self.assertGreater(len(items), 10)
        self.assertTrue(any(i["transport"] == "tcp" for i in items), "no TCP message decoded")
        for i in items:
            self.assertTrue(i["encrypted"], i)
            self.assertEqual(i["key_index"], 0, i)
            self.assertIsNone(i["error"], i)

    def test_6_no_plaintext_on_the_wire(self):
        frames = harness.read_pcap_payloads(self.pcap)
        self.assertGreater(len(frames), 10)
        for proto, payload in frames:
            for name in (b"n1", b"n2", b"n3"):
                # Every plaintext memberlist message names a node (ping, alive, push/pull...).
                self.assertNotIn(b"\xa2" + name, payload, "plaintext node name on the wire")
            if proto == "udp":
                self.assertIn(payload[0], (0, 1), "UDP payload is not a sealed packet")
                self.assertGreaterEqual(len(payload), 29)


if __name__ == "__main__":
    harness.main()
