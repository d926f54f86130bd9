"""Claim: two plaintext serf agents, each behind its own sidecrypt, and one natively encrypting
`serf agent -encrypt` form one cluster: every member is alive on every node, nobody is ever
suspected or failed, user events and queries travel from each kind of member to all others, and
the gossip between the two proxies is sealed (one seals, the other opens) - no plaintext gossip
crosses the wire between hosts."""
import os
import re
import unittest

import harness

NAMES = ["p1", "p2", "nat"]
HOSTS = {"p1": "h1", "p2": "h2", "nat": "h3"}


class TwoProxiedPlusNative(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_root("network namespaces, netfilter and serf agents")
        harness.require_commands("serf", "tcpdump", why="serf agents and a wire capture")
        cls.w = harness.Workdir()
        cls.lab = None
        try:
            cls.lab = harness.Lab(["h1", "h2", "h3"])
            lab = cls.lab
            cls.key = harness.run(["keygen"], check=True).stdout.strip()
            cls.pcap = os.path.join(cls.w.path, "wire.pcap")
            lab.capture(cls.pcap, "port 7946")
            cls.proxies = {}
            for n in ("p1", "p2"):
                cfg = harness.proxy_config(os.path.join(cls.w.path, n + ".toml"),
                                           os.path.join(cls.w.path, "data-" + n), cls.key)
                cls.proxies[n] = lab.spawn(HOSTS[n], [harness.binary(), "run", "--config", cfg],
                                           os.path.join(cls.w.path, "sidecrypt-%s.log" % n))
            for n, p in cls.proxies.items():
                harness.wait_for(lambda p=p: "started:" in harness.read_log(p), 15,
                                 what="sidecrypt of " + n)
            cls.agents = {}
            for n in NAMES:
                args = ["serf", "agent", "-node", n, "-bind", cls.addr(n), "-log-level", "debug",
                        "-rpc-addr", "127.0.0.1:7373"]
                if n == "nat":
                    args += ["-encrypt", cls.key]
                cls.agents[n] = lab.spawn(HOSTS[n], args, os.path.join(cls.w.path, n + ".log"))
            for n, p in cls.agents.items():
                harness.wait_for(lambda p=p: "Serf agent running" in harness.read_log(p), 15,
                                 what="serf agent " + n)
            # proxied -> proxied: p2 dials p1 (out through sidecrypt 2, in through sidecrypt 1).
            lab.run("h2", "serf", "join", cls.addr("p1"), timeout=20)
            # native -> proxied: nat dials p2.
            lab.run("h3", "serf", "join", cls.addr("p2"), timeout=20)
            harness.wait_members_alive(lab, ["h1", "h2", "h3"], NAMES, timeout=30)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def addr(cls, name):
        return "%s:7946" % cls.lab.ip(HOSTS[name])

    @classmethod
    def tearDownClass(cls):
        harness.cleanup(cls.lab, cls.w)

    def event_reaches(self, sender, event, receivers):
        # Serf spreads an event with a bounded number of gossip transmissions: resend at most
        # twice if a receiver missed it.
        for _ in range(3):
            self.lab.run(HOSTS[sender], "serf", "event", event, "payload-" + sender)
            try:
                harness.wait_for(lambda: all("user-event: " + event in
                                             harness.read_log(self.agents[r])
                                             for r in receivers), 8, interval=0.2, what=event)
                return
            except AssertionError:
                pass
        self.fail("event %s from %s did not reach all of %s" % (event, sender, receivers))

    def test_1_all_alive_everywhere(self):
        for n in NAMES:
            m = harness.serf_members(self.lab, HOSTS[n])
            self.assertEqual(m, {"p1": "alive", "p2": "alive", "nat": "alive"}, (n, m))

    def test_2_events_travel_from_every_kind_of_member(self):
        self.event_reaches("p1", "from-p1", ["p2", "nat"])
        self.event_reaches("p2", "from-p2", ["p1", "nat"])
        self.event_reaches("nat", "from-nat", ["p1", "p2"])

    def test_3_queries_are_acked_by_all(self):
        for sender in NAMES:
            acked = set()
            for i in range(3):
                r = self.lab.run(HOSTS[sender], "serf", "query", "-timeout", "3s",
                                 "q-%s-%d" % (sender, i), "x", timeout=20)
                acked |= set(re.findall(r"Ack from '([^']+)'", r.stdout))
                if acked >= set(NAMES):
                    break
            self.assertEqual(acked, set(NAMES), "query from %s" % sender)

    def test_4_both_proxies_seal_and_open(self):
        for n, p in self.proxies.items():
            c = harness.dump_counters(p)
            self.assertGreater(harness.counter(c, "lan packets agent->peer", "sealed"), 5, (n, c))
            self.assertGreater(harness.counter(c, "lan packets peer->agent", "opened_key_0"), 5,
                               (n, c))
            self.assertGreater(harness.counter(c, "lan streams peer->agent", "opened_key_0") +
                               harness.counter(c, "lan streams agent->peer", "sealed"), 0, (n, c))
            for sec in ("lan packets peer->agent", "lan streams peer->agent"):
                for bad in ("plaintext_refused", "open_failed", "shadow_refused", "malformed"):
                    self.assertEqual(harness.counter(c, sec, bad), 0, (n, sec, bad, c))
            self.assertIsNone(p.poll(), "sidecrypt of %s exited" % n)

    def test_5_no_member_ever_suspected_or_failed(self):
        text = "\n".join(harness.read_log(p) for p in self.agents.values())
        self.assertEqual(harness.failure_lines(text, NAMES), [])

    def test_6_no_plaintext_on_the_wire(self):
        frames = harness.read_pcap_payloads(self.pcap)
        self.assertGreater(len(frames), 10)
        for proto, payload in frames:
            for name in NAMES:
                # msgpack fixstr of the node name: every plaintext memberlist message has one.
                self.assertNotIn(bytes([0xa0 + len(name)]) + name.encode(), payload,
                                 "plaintext node name on the wire (%s)" % proto)
            if proto == "udp":
                self.assertEqual(payload[0], 1, "UDP payload is not a v1 sealed packet")
                self.assertGreaterEqual(len(payload), 29)
            for event in (b"from-p1", b"from-p2", b"from-nat"):
                self.assertNotIn(event, payload, "plaintext event name on the wire")


if __name__ == "__main__":
    harness.main()
