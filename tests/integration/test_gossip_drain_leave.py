"""Claim: on SIGTERM sidecrypt keeps forwarding for intercept.drain_time, so an agent that leaves
right after (the systemd stop order: sidecrypt is asked first, the agent next) still sends its
leave encrypted: the native peers see it as `left`, not `failed`, and no plaintext reaches the
wire."""
import os
import signal
import time
import unittest

import harness


class DrainLeave(unittest.TestCase):
    def setUp(self):
        harness.require_root("network namespaces, netfilter and serf agents")
        self.w = harness.Workdir()
        self.lab = harness.Lab(["h1", "h2"])

    def tearDown(self):
        self.lab.cleanup()
        self.w.cleanup()

    def test_leave_during_drain_is_encrypted(self):
        lab = self.lab
        key = harness.run(["keygen"], check=True).stdout.strip()
        cfg = harness.proxy_config(os.path.join(self.w.path, "p.toml"),
                                   os.path.join(self.w.path, "d"), key)
        with open(cfg) as f:
            body = f.read().replace('drain_time = "0s"', 'drain_time = "8s"')
        with open(cfg, "w") as f:
            f.write(body)
        pcap = os.path.join(self.w.path, "wire.pcap")
        lab.capture(pcap, "port 7946")
        proxy = lab.spawn("h1", [harness.binary(), "run", "-c", cfg],
                          os.path.join(self.w.path, "sc.log"))
        harness.wait_for(lambda: "started:" in harness.read(proxy.log_path), 10, what="sidecrypt")
        n1 = lab.spawn("h1", ["serf", "agent", "-node", "n1", "-bind", lab.ip("h1") + ":7946"],
                       os.path.join(self.w.path, "n1.log"))
        n2 = lab.spawn("h2", ["serf", "agent", "-node", "n2", "-bind", lab.ip("h2") + ":7946",
                              "-encrypt", key], os.path.join(self.w.path, "n2.log"))
        for p in (n1, n2):
            harness.wait_for(lambda p=p: "Serf agent running" in harness.read(p.log_path), 15,
                             what="serf agent")
        lab.run("h1", "serf", "join", lab.ip("h2") + ":7946")
        harness.wait_members_alive(lab, ["h1", "h2"], ["n1", "n2"])
        proxy.send_signal(signal.SIGTERM)
        harness.wait_for(lambda: "forwarding for 8000 ms more" in harness.read(proxy.log_path), 5,
                         what="drain announced")
        n1.send_signal(signal.SIGINT)  # serf agent: graceful leave on SIGINT
        harness.wait_for(lambda: harness.serf_members(lab, "h2").get("n1") == "left", 15,
                         what="n2 to see n1 as left")
        self.assertEqual(proxy.wait(15), 0)
        self.assertNotIn("EventMemberFailed: n1", harness.read(n2.log_path))
        time.sleep(0.5)
        for proto, payload in harness.read_pcap_payloads(pcap):
            self.assertNotIn(b"\xa2n1", payload, "plaintext from n1 on the wire")


if __name__ == "__main__":
    harness.main()
