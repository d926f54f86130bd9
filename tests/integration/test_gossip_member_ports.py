"""Claim: when members listen on different gossip ports (a proxied plaintext serf on 7946 next to
a native encrypting serf on 7947, and the reverse), every packet and stream the proxied agents
send is sealed or dropped, never sent in clear:

1. without intercept.member_ports (the agent's own port only) the agent's TCP push/pull to a
   member on 7947 leaves in plaintext (the leak this test guards against), and sidecrypt says so:
   a warning, /status member_ports.uncovered_members, the metric;
2. with member_ports = [7946, 7947], one fleet of four (n1 proxied:7946, n2 native:7947, n3
   proxied:7947, n4 native:7946) forms by joins in both directions, every member is alive
   everywhere, and every payload on the wire is sealed and opens with the key;
3. with the proxied agent's sidecrypt stopped, its join attempts and its gossip are dropped:
   nothing from that host reaches the wire."""
import json
import os
import time
import unittest

import harness

ADMIN = "127.0.0.1:9920"


def config(path, data_dir, key, own_port, member_ports):
    body = ["[agent]", 'profile = "custom"', 'data_dir = "%s"' % data_dir,
            "[gossip]", 'encrypt = "%s"' % key,
            "[intercept]", "install_rules = true", 'drain_time = "0s"']
    if member_ports:
        body.append("member_ports = [%s]" % ", ".join(str(p) for p in member_ports))
    body += ["[[intercept.port]]", "port = %d" % own_port, 'protocol = "gossip"', 'name = "serf"',
             "[log]", 'level = "debug"', ""]
    with open(path, "w") as f:
        f.write("\n".join(body))
    return path


class MemberPorts(unittest.TestCase):
    IPV6 = False

    @classmethod
    def setUpClass(cls):
        harness.require_root("network namespaces, netfilter and serf agents")
        harness.require_commands("serf", "tcpdump", why="real serf agents and a wire capture")
        cls.w = harness.Workdir()
        cls.lab = None
        try:
            cls.lab = harness.Lab(["h1", "h2", "h3", "h4"], ipv6=cls.IPV6)
            cls.key = harness.run(["keygen"], check=True).stdout.strip()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        harness.cleanup(cls.lab, cls.w)

    # --- helpers ---------------------------------------------------------------------------

    def ip(self, host):
        return self.lab.ip(host, v6=self.IPV6)

    def addr(self, host, port):
        return ("[%s]:%d" if self.IPV6 else "%s:%d") % (self.ip(host), port)

    def agent(self, host, node, port, encrypt=False):
        return harness.start_serf(
            self.lab, host, node, self.addr(host, port), os.path.join(self.w.path, node + ".log"),
            ["-log-level", "debug"] + (["-encrypt", self.key] if encrypt else []))

    def proxy(self, host, name, own_port, member_ports):
        cfg = config(os.path.join(self.w.path, name + ".toml"),
                     os.path.join(self.w.path, "data-" + name), self.key, own_port, member_ports)
        p = self.lab.spawn(host, [harness.binary(), "run", "--config", cfg],
                           os.path.join(self.w.path, name + ".log"))
        harness.wait_for(lambda: "started:" in harness.read_log(p), 15, what="sidecrypt " + name)
        return p

    def admin(self, host, path):
        r = self.lab.run(host, "python3", "-c",
                         "import urllib.request,sys;"
                         "sys.stdout.write(urllib.request.urlopen('http://%s%s',timeout=5)"
                         ".read().decode())" % (ADMIN, path), check=False, timeout=15)
        return r.stdout

    def join(self, host, target, timeout=25):
        return self.lab.run(host, "serf", "join", "-rpc-addr", "127.0.0.1:7373", target,
                            check=False, timeout=timeout)

    def decoded(self, pcap):
        """Every gossip message of a capture as `sidecrypt decode --json` reads it with the key
        (plaintext ones have encrypted = false: memberlist compresses push/pull, so node names
        are not visible in the raw bytes)."""
        ring = self.w.file("decode.keyring", '["%s"]' % self.key)
        r = harness.run(["decode", "--keyring", ring, "--json", pcap], timeout=120)
        return [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")], r

    # --- the scenario, in order ------------------------------------------------------------

    def test_member_ports(self):
        lab = self.lab
        # 1. The leak: n1's rules match only its own port 7946.
        pcap1 = os.path.join(self.w.path, "leak.pcap")
        cap1 = lab.capture(pcap1, "tcp or udp")
        p1 = self.proxy("h1", "p1-own-port-only", 7946, None)
        self.agents = {"n1": self.agent("h1", "n1", 7946),
                       "n2": self.agent("h2", "n2", 7947, encrypt=True)}
        # n2 dials n1's covered port: sidecrypt learns that n2 lives on 7947.
        self.assertEqual(self.join("h2", self.addr("h1", 7946)).returncode, 0)
        harness.wait_for(lambda: "n2" in self.admin("h1", "/status"), 10,
                         what="/status lists n2")
        status = json.loads(self.admin("h1", "/status"))
        uncovered = status["member_ports"]["uncovered_members"]
        self.assertEqual([(m["name"], m["port"]) for m in uncovered], [("n2", 7947)], status)
        self.assertIn("sidecrypt_gossip_members_uncovered 1", self.admin("h1", "/metrics"))
        self.assertIn("advertises %s:7947, a gossip port the netfilter rules do not capture"
                      % self.ip("h2"), harness.read_log(p1))
        cfg1 = os.path.join(self.w.path, "p1-own-port-only.toml")
        r = lab.run("h1", harness.binary(), "check", "enforce-incoming", "--config", cfg1,
                    check=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("advertises gossip port 7947, which the rules do not capture", r.stdout)
        r = lab.run("h1", harness.binary(), "doctor", "--config", cfg1, "--json", "--only",
                    "members.ports", check=False, timeout=60)
        checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
        self.assertEqual(checks["members.ports"]["status"], "fail", checks)
        self.assertIn("n2@%s" % self.addr("h2", 7947), checks["members.ports"]["detail"])
        self.assertIn("add 7947 to intercept.member_ports", checks["members.ports"]["fix"])
        # n1 dials n2 on 7947: its push/pull leaves in plaintext.
        self.join("h1", self.addr("h2", 7947))
        time.sleep(1)
        harness.stop_process(cap1)
        items, _ = self.decoded(pcap1)
        leaked = [i for i in items if not i["encrypted"]]
        self.assertTrue(any(i["transport"] == "tcp" and i["dst"].endswith(":7947") and
                            "n1" in i["summary"] for i in leaked),
                        "expected the plaintext push/pull to 7947 without member_ports "
                        "(the test could not see the leak)")
        harness.stop_process(p1)
        for a in self.agents.values():
            harness.stop_process(a)

        # 2. The fix: member_ports = [7946, 7947] on both proxied hosts; one fleet of four.
        pcap2 = os.path.join(self.w.path, "fleet.pcap")
        cap2 = lab.capture(pcap2, "tcp or udp")
        p1 = self.proxy("h1", "p1", 7946, [7946, 7947])
        p3 = self.proxy("h3", "p3", 7947, [7946, 7947])
        n1 = self.agent("h1", "n1b", 7946)
        self.agent("h2", "n2b", 7947, encrypt=True)
        self.agent("h3", "n3b", 7947)
        self.agent("h4", "n4b", 7946, encrypt=True)
        names = ["n1b", "n2b", "n3b", "n4b"]
        # proxied:7946 -> native:7947, proxied:7947 -> native:7946 and proxied:7946 ->
        # proxied:7947 (outbound to member ports); native:7947 -> proxied:7947 and native:7946
        # -> proxied:7946 (inbound).
        for host, target in (("h1", self.addr("h2", 7947)), ("h3", self.addr("h4", 7946)),
                             ("h1", self.addr("h3", 7947)), ("h2", self.addr("h3", 7947)),
                             ("h4", self.addr("h1", 7946))):
            r = self.join(host, target)
            self.assertEqual(r.returncode, 0, "%s joins %s: %s%s" % (host, target, r.stdout,
                                                                   r.stderr))
        harness.wait_members_alive(lab, ["h1", "h2", "h3", "h4"], names, timeout=40)
        time.sleep(2)
        for h in ("h1", "h3"):
            st = json.loads(self.admin(h, "/status"))
            self.assertEqual(st["member_ports"]["uncovered_members"], [], (h, st))
            self.assertEqual(st["member_ports"]["lan"], [7946, 7947])
        harness.stop_process(cap2)
        frames = harness.read_pcap_frames(pcap2)
        self.assertTrue(any(f[0] == "tcp" and f[4] == 7947 and f[1] == self.ip("h1") and f[5]
                            for f in frames), "no TCP from n1 to a member on 7947 was captured")
        self.assertTrue(any(f[0] == "tcp" and f[4] == 7946 and f[1] == self.ip("h3") and f[5]
                            for f in frames), "no TCP from n3 to a member on 7946 was captured")
        items, r = self.decoded(pcap2)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        self.assertGreater(len(items), 20)
        self.assertTrue(any(i["transport"] == "tcp" for i in items), "no TCP message decoded")
        for i in items:
            self.assertTrue(i["encrypted"], i)
            self.assertIsNone(i["error"], i)

        # 3. Stopped: n1's sidecrypt exits (rules stay, fail closed); nothing from h1 goes out.
        harness.stop_process(p1)
        time.sleep(0.5)
        pcap3 = os.path.join(self.w.path, "stopped.pcap")
        cap3 = lab.capture(pcap3, "tcp or udp")
        r = self.join("h1", self.addr("h2", 7947))
        self.assertNotEqual(r.returncode, 0, "n1 joined n2 with sidecrypt stopped: " + r.stdout)
        time.sleep(2)
        harness.stop_process(cap3)
        frames = harness.read_pcap_frames(pcap3)
        from_h1 = [f[:5] for f in frames if f[1] == self.ip("h1")]
        self.assertEqual(from_h1, [], "with sidecrypt stopped, h1 still sent packets")
        self.assertTrue(any(f[3] == self.ip("h1") for f in frames),
                        "the other members did not try to reach n1 (the capture saw nothing)")
        items, _ = self.decoded(pcap3)
        self.assertEqual([i["summary"] for i in items if not i["encrypted"]], [])
        self.assertTrue(n1.poll() is None, "n1's serf agent died")
        harness.stop_process(p3)


if __name__ == "__main__":
    harness.main()
