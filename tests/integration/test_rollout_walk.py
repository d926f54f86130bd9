"""Claim: a mixed fleet walks every rollout stage, gossip and RPC together, by reloading
sidecrypt alone (issue 7): no proxied agent and no sidecrypt is restarted, no member is ever
marked anything but alive, and RPC calls keep succeeding the whole time.

Fleet: two plaintext serf agents behind sidecrypt (p1 a client agent, p2 a server agent with a
plaintext Consul-shaped RPC server on :8300), a memberlist 0.2.2 peer (g3) that starts at the
accept-both stage and is converted by restart (as an operator converts a native agent), and a
native `serf agent -encrypt` (n4) that joins once everyone encrypts. A watcher polls the member
lists of p1 and p2 and an RPC caller on p1 calls p2 every second through both sidecrypts, from
the first stage to the last.

Stages (both sidecrypts, by reload): 1. keys and certificates installed, every verify flag off;
2. encrypt_verify_outgoing, verify_outgoing + verify_server_hostname; 3. encrypt_verify_incoming,
verify_incoming. Between 2 and 3, `sidecrypt check enforce-incoming` on p2 says no while g3 still
sends plaintext (its JSON names g3 by address and node name), and yes once g3 is converted.
"""
import json
import os
import re
import threading
import time
import unittest

import harness
from test_rpcpeer_go_interop import build_peer_and_certs, parse_line
import test_rpcpeer_go_interop as peers

HOSTS = {"p1": "h1", "p2": "h2", "g3": "h3", "n4": "h4"}


class RolloutWalk(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_root("network namespaces, netfilter, serf agents and Go peers")
        harness.require_commands("serf", why="serf agents")
        build_peer_and_certs()
        cls.rpcpeer, cls.certs = peers.PEER, peers.CERTS
        cls.w = harness.Workdir()
        cls.lab = None
        cls.stop = threading.Event()
        cls.threads = []
        try:
            cls.gossippeer = harness.build_gossippeer(os.path.join(cls.w.path, "bin"))
            cls.lab = harness.Lab(list(HOSTS.values()))
            cls.key = harness.run(["keygen"], check=True).stdout.strip()
            cls.cfg = {n: os.path.join(cls.w.path, n + ".toml") for n in ("p1", "p2")}
            cls.write_stage(1)
            cls.proxies = {}
            for n in ("p1", "p2"):
                cls.proxies[n] = cls.lab.spawn(HOSTS[n], [harness.binary(), "run", "-c",
                                                          cls.cfg[n]],
                                               os.path.join(cls.w.path, "sidecrypt-%s.log" % n))
            for n, p in cls.proxies.items():
                harness.wait_for(lambda p=p: "started:" in harness.read_log(p), 15,
                                 what="sidecrypt of " + n)
            cls.agents = {}
            for n in ("p1", "p2"):
                cls.agents[n] = cls.lab.spawn(
                    HOSTS[n], ["serf", "agent", "-node", n, "-bind", cls.addr(n)],
                    os.path.join(cls.w.path, n + ".log"))
                harness.wait_for(lambda n=n: "Serf agent running" in
                                 harness.read_log(cls.agents[n]), 15, what="serf " + n)
            cls.rpc_server = cls.lab.spawn(
                "h2", [cls.rpcpeer, "server", "-listen", cls.lab.ip("h2") + ":8300",
                       "-lifetime", "900s"], os.path.join(cls.w.path, "rpc-server.log"))
            harness.wait_for(lambda: "LISTENING" in harness.read_log(cls.rpc_server), 15,
                             what="rpcpeer server")
            cls.lab.run("h2", "serf", "join", cls.addr("p1"), timeout=20)
            cls.g3 = cls.go_peer(["-verify-incoming=false", "-verify-outgoing=false"])
            cls.expected = {"p1", "p2", "g3"}
            harness.wait_members_alive(cls.lab, ["h1", "h2"], sorted(cls.expected), timeout=40)
            cls.sightings, cls.rpc_calls, cls.rpc_failures = [], [0], []
            cls.start_watchers()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.stop.set()
        for t in cls.threads:
            t.join(30)
        harness.cleanup(cls.lab, cls.w)

    @classmethod
    def addr(cls, n):
        return "%s:7946" % cls.lab.ip(HOSTS[n])

    @classmethod
    def write_stage(cls, stage):
        c = lambda n: os.path.join(cls.certs, n)
        for n, server in (("p1", False), ("p2", True)):
            role = "server" if server else "client"
            body = harness.rpc_proxy_toml(
                data_dir=os.path.join(cls.w.path, "data-" + n), server=server,
                gossip={"encrypt": cls.key, "encrypt_verify_outgoing": stage >= 2,
                        "encrypt_verify_incoming": stage >= 3},
                tls={"ca_file": c("consul-agent-ca.pem"),
                     "cert_file": c("dc1-%s-consul-0.pem" % role),
                     "key_file": c("dc1-%s-consul-0-key.pem" % role),
                     "verify_outgoing": stage >= 2, "verify_server_hostname": stage >= 2,
                     "verify_incoming": stage >= 3},
                ports=[(7946, "gossip"), (8300, "rpc")])
            with open(cls.cfg[n], "w") as f:
                f.write(body)

    @classmethod
    def go_peer(cls, flags):
        args = [cls.gossippeer, "-node", "g3", "-bind", cls.lab.ip("h3"), "-port", "7946",
                "-interval", "500ms", "-retransmit-mult", "10", "-key", cls.key,
                "-join", cls.addr("p1")] + flags
        p = cls.lab.spawn("h3", args, os.path.join(cls.w.path, "g3-%d.log" % time.time()))
        harness.wait_for(lambda: "READY" in harness.read_log(p) or p.poll() is not None, 20,
                         what="g3")
        return p

    @classmethod
    def start_watchers(cls):
        def members():
            while not cls.stop.is_set():
                for h in ("h1", "h2"):
                    for name, status in harness.serf_members(cls.lab, h).items():
                        # g3's conversion is a graceful leave and rejoin: only "failed"
                        # would be wrong for it; everybody else must stay alive.
                        bad = status == "failed" if name == "g3" else status != "alive"
                        if name in cls.expected and bad:
                            cls.sightings.append((time.time(), h, name, status))
                cls.stop.wait(0.5)

        def rpc():
            while not cls.stop.is_set():
                r = cls.lab.run("h1", cls.rpcpeer, "client", "-addr", cls.lab.ip("h2") + ":8300",
                                "-mode", "rpc", check=False, timeout=40)
                line = (r.stdout.strip().splitlines() or [""])[-1]
                word, fields = parse_line(line)
                cls.rpc_calls[0] += 1
                if word != "RESULT ok":
                    cls.rpc_failures.append((time.time(), line, r.stderr[-400:]))
                cls.stop.wait(1.0)
        for f in (members, rpc):
            t = threading.Thread(target=f, daemon=True)
            t.start()
            cls.threads.append(t)

    def reload_all(self, stage):
        self.write_stage(stage)
        for n in ("p1", "p2"):
            r = self.lab.run(HOSTS[n], harness.binary(), "reload", "-c", self.cfg[n], check=False)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        time.sleep(3)  # traffic in the new stage, while the watchers keep watching

    def check(self, *extra):
        r = self.lab.run("h2", harness.binary(), "check", "enforce-incoming", "--json", "-c",
                         self.cfg["p2"], *extra, check=False)
        return r.returncode, json.loads(r.stdout)

    def check_metrics(self):
        from prometheus_client.parser import text_string_to_metric_families
        fetch = ("import urllib.request,sys;"
                 "sys.stdout.write(urllib.request.urlopen('http://%s/metrics').read().decode())")
        admin = "127.0.0.1:9920"  # admin.listen default
        text = self.lab.run("h2", "python3", "-c", fetch % admin).stdout
        families = {f.name: f for f in text_string_to_metric_families(text)}
        samples = lambda name: [s for s in families[name].samples]
        # Counters by pool/direction/result, per-peer counters with node names, member gauges,
        # reloads: the families a rollout dashboard reads.
        self.assertEqual(families["sidecrypt_reloads"].type, "counter")
        reloads = {s.labels.get("result"): s.value for s in samples("sidecrypt_reloads")}
        self.assertGreaterEqual(reloads.get("ok", 0), 2, reloads)
        self.assertGreaterEqual(reloads.get("failed", 0), 1, reloads)
        members = {s.labels["state"]: s.value for s in samples("sidecrypt_gossip_members")}
        self.assertGreaterEqual(members["alive"], 4, members)
        # No series per peer by default (issue 17): the census as bounded gauges instead.
        self.assertNotIn("sidecrypt_peer_encrypted", families)
        key_peers = samples("sidecrypt_census_key_peers")
        self.assertGreater(sum(s.value for s in key_peers), 0, key_peers)
        stage = {s.labels["track"]: s.value for s in samples("sidecrypt_rollout_stage")}
        self.assertEqual(stage.get("gossip"), 3, stage)
        info = samples("sidecrypt_info")
        self.assertEqual(len(info), 1, info)
        rpc = {s.labels["event"]: s.value for s in samples("sidecrypt_rpc")}
        self.assertGreater(sum(rpc.values()), 0, rpc)
        gossip = samples("sidecrypt_gossip_packets")
        self.assertTrue(any(s.labels.get("pool") == "lan" for s in gossip), gossip[:3])

    def rpc_events(self):
        return [parse_line(l)[1] for l in harness.read_log(self.rpc_server).splitlines()
                if l.startswith("EVENT")]

    def test_walk(self):
        cls = type(self)
        # Stage 1: accept both. RPC is plaintext end to end, gossip too.
        harness.wait_for(lambda: cls.rpc_calls[0] >= 2, 30, what="RPC calls in stage 1")
        self.assertEqual(self.rpc_events()[-1].get("tls"), "false")
        # Stage 2: encrypt outgoing, RPC over TLS.
        self.reload_all(2)
        for n in ("p1", "p2"):
            log = harness.read_log(self.proxies[n])
            self.assertIn("stage changed: gossip.encrypt_verify_outgoing false -> true", log)
            self.assertIn("stage changed: tls.verify_outgoing false -> true", log)
        calls = cls.rpc_calls[0]
        harness.wait_for(lambda: cls.rpc_calls[0] >= calls + 2, 30, what="RPC calls in stage 2")
        # g3 still sends plaintext: the gate says no and names it.
        harness.wait_for(lambda: self.check()[0] == 1, 15, what="enforce-incoming says no")
        rc, doc = self.check()
        named = [x for x in doc["reasons"] if x["peer"] == self.lab.ip("h3")]
        self.assertTrue(named, doc)
        self.assertEqual(named[0]["node"], "g3", doc)
        # Convert g3 (a restart with encrypt_verify_outgoing, as operators convert a native
        # agent), then the native node joins: everyone encrypts now.
        harness.stop_process(cls.g3)
        cls.g3 = cls.go_peer(["-verify-incoming=false"])
        cls.agents["n4"] = self.lab.spawn(
            "h4", ["serf", "agent", "-node", "n4", "-bind", self.addr("n4"), "-encrypt",
                   self.key, "-join", self.addr("p2")], os.path.join(self.w.path, "n4.log"))
        harness.wait_members_alive(self.lab, ["h1", "h2", "h4"], ["p1", "p2", "g3", "n4"],
                                   timeout=40)
        cls.expected = {"p1", "p2", "g3", "n4"}
        time.sleep(4)
        harness.wait_for(lambda: self.check("--within", "3s")[0] == 0, 30,
                         what="enforce-incoming says yes")
        # Stage 3: verify incoming, by reload.
        self.reload_all(3)
        calls = cls.rpc_calls[0]
        harness.wait_for(lambda: cls.rpc_calls[0] >= calls + 3, 30, what="RPC calls in stage 3")
        time.sleep(3)
        ev = self.rpc_events()[-1]
        self.assertEqual(ev.get("result"), "served", ev)
        self.assertEqual(ev.get("tls"), "false", ev)  # the agent still sees plaintext 0x04
        status = json.loads(self.lab.run("h2", harness.binary(), "status", "--json", "-c",
                                         self.cfg["p2"]).stdout)
        peer = {p["address"]: p for p in status["peers"]}[self.lab.ip("h1")]
        self.assertGreater(peer["rpc"]["tls"], 0, peer)
        self.assertIn("client.dc1.consul", peer["rpc"]["tls_dns_names"], peer)
        # A reload with a bad certificate keeps the whole running state; traffic goes on.
        with open(self.cfg["p2"]) as f:
            good = f.read()
        bad_cert = self.w.file("bad-cert.pem", "-----BEGIN CERTIFICATE-----\nnot one\n")
        with open(self.cfg["p2"], "w") as f:
            f.write(re.sub(r'cert_file = "[^"]*"', 'cert_file = "%s"' % bad_cert, good))
        r = self.lab.run("h2", harness.binary(), "reload", "-c", self.cfg["p2"], check=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(bad_cert, r.stderr)
        with open(self.cfg["p2"], "w") as f:
            f.write(good)
        calls = cls.rpc_calls[0]
        harness.wait_for(lambda: cls.rpc_calls[0] >= calls + 2, 30, what="RPC after bad reload")
        # /metrics, read by a real Prometheus text-format parser.
        self.check_metrics()
        cls.stop.set()
        for t in cls.threads:
            t.join(60)
        self.assertEqual(cls.rpc_failures, [], "RPC calls failed during the walk")
        self.assertGreater(cls.rpc_calls[0], 8)
        self.assertEqual(cls.sightings, [], "members seen not alive during the walk")
        for n in ("p1", "p2"):
            self.assertEqual(harness.read_log(self.proxies[n]).count("started:"), 1)
            self.assertIsNone(self.proxies[n].poll())
            self.assertIsNone(self.agents[n].poll())
            for line in harness.read_log(self.agents[n]).splitlines():
                self.assertNotIn("as failed", line)


if __name__ == "__main__":
    harness.main()
