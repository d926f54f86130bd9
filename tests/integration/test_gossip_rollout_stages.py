"""Claim: a plaintext serf agent behind sidecrypt walks Consul's documented gossip-encryption
rollout (docs/spec/gossip-wire.md §4.4, docs/spec/consul-rpc-tls.md §6.2) by reloading sidecrypt only, next to real
memberlist 0.2.2 peers that make the same moves the way operators do (rolling restarts), and no
member is ever marked suspect or failed:

  start    a plaintext fleet (keyless Go peers); the proxied node is the first to get the key:
           sidecrypt starts at stage a (it needs a key to run at all);
  stage a  keys installed, encrypt_verify_incoming = encrypt_verify_outgoing = false;
           Go peers restarted with -key -verify-incoming=false -verify-outgoing=false.
           Plaintext is accepted and counted as shadow-refused; a keyless peer still joins.
  stage b  encrypt_verify_outgoing = true (reload); Go peers restarted with it; native
           `serf agent -encrypt` nodes (always verify both, i.e. stage c) join now, which the
           rollout matrix allows only once everyone encrypts. No plaintext is left (shadow
           counters stand still); a keyless peer's plaintext join is still accepted by
           sidecrypt (shadow-refused) but fails on the sealed reply.
  stage c  encrypt_verify_incoming = true (reload); Go peers restarted with defaults. A keyless
           peer is refused and counted (plaintext_refused) while events and queries still reach
           every native, Go and proxied member.

Every stage checks that all members are alive on every node; the last test checks every log of
the run for "Suspect X has failed" / "Marking X as failed" / EventMemberFailed of a member.
"""
import os
import re
import signal
import time
import unittest

import harness

KEYLESS_ERR_SEALED_REPLY = "Remote state is encrypted and encryption is not configured"


class RolloutStages(unittest.TestCase):
    HOSTS = {"proxied": "h1", "go-1": "h2", "go-2": "h3", "native-1": "h4", "native-2": "h5",
             "keyless": "h6"}

    @classmethod
    def setUpClass(cls):
        harness.require_root("network namespaces, netfilter, serf agents and Go peers")
        harness.require_commands("serf", why="serf agents")
        cls.w = harness.Workdir()
        cls.lab = None
        cls.broken = None
        try:
            cls.peer_bin = harness.build_gossippeer(os.path.join(cls.w.path, "bin"))
            cls.lab = harness.Lab(["h1", "h2", "h3", "h4", "h5", "h6"])
            cls.key = harness.run(["keygen"], check=True).stdout.strip()
            cls.cfg = os.path.join(cls.w.path, "proxy.toml")
            cls.data = os.path.join(cls.w.path, "data")
            cls.members = []  # cluster members so far (for the health checks)
            cls.go = {}
            cls.go_logs = []
            cls.natives = {}
            cls.serial = 0
            harness.proxy_config(cls.cfg, cls.data, cls.key, extra=cls.flags(False, False))
            cls.proxy = cls.lab.spawn("h1", [harness.binary(), "run", "--config", cls.cfg],
                                      os.path.join(cls.w.path, "sidecrypt.log"))
            harness.wait_for(lambda: "started:" in harness.read_log(cls.proxy), 15,
                             what="sidecrypt started")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        harness.cleanup(cls.lab, cls.w)

    def setUp(self):
        if type(self).broken and "no_member_ever" not in self.id():
            self.fail("an earlier stage failed (%s); the rollout cannot go on" % type(self).broken)

    def run_stage(self, fn):
        try:
            fn()
        except BaseException:
            type(self).broken = self.id().rsplit(".", 1)[-1]
            raise

    # --- helpers ---------------------------------------------------------------------------

    def host(self, name):
        return self.HOSTS["keyless" if name.startswith("keyless") else name]

    def addr(self, name):
        return "%s:7946" % self.lab.ip(self.host(name))

    def start_go(self, name, flags, joins):
        cls = type(self)
        cls.serial += 1
        log = os.path.join(self.w.path, "%s.%d.log" % (name, cls.serial))
        args = [self.peer_bin, "-node", name, "-bind", self.lab.ip(self.host(name)),
                "-port", "7946", "-interval", "500ms", "-retransmit-mult", "10"] + flags
        for j in joins:
            args += ["-join", self.addr(j)]
        p = self.lab.spawn(self.host(name), args, log)
        self.go_logs.append(log)
        marks = ("JOINED", "JOIN-FAILED") if joins else ("READY",)
        harness.wait_for(lambda: any(m in harness.read_log(p) for m in marks) or
                         p.poll() is not None, 20, what="%s to start and join" % name)
        return p

    def restart_go(self, name, flags, joins):
        """An operator's rolling restart of one node: graceful leave, start with new flags."""
        old = self.go.get(name)
        if old is not None:
            rc = harness.stop_process(old, signal.SIGTERM, timeout=15)
            out = harness.read_log(old)
            self.assertIn("STOPPED", out, "%s did not stop cleanly (exit %s)" % (name, rc))
        p = self.start_go(name, flags, joins)
        out = harness.read_log(p)
        self.assertIsNone(p.poll(), "%s exited:\n%s" % (name, out[-2000:]))
        if joins:
            self.assertIn("JOINED", out, "%s (%s) could not join:\n%s"
                          % (name, flags, out[-2000:]))
        self.go[name] = p
        self.wait_all_alive(timeout=30)

    def start_native(self, name, join):
        args = ["serf", "agent", "-node", name, "-bind", self.addr(name), "-encrypt", self.key,
                "-rpc-addr", "127.0.0.1:7373", "-log-level", "debug", "-join", self.addr(join)]
        p = self.lab.spawn(self.HOSTS[name], args, os.path.join(self.w.path, name + ".log"))
        harness.wait_for(lambda: "Serf agent running" in harness.read_log(p) or
                         p.poll() is not None, 20, what="serf agent " + name)
        self.assertIsNone(p.poll(), "native %s exited (its -join failed?):\n%s"
                          % (name, harness.read_log(p)[-2000:]))
        self.natives[name] = p
        self.members.append(name)

    def views(self):
        """{observer: {name: status}} from every cluster member still running."""
        v = {"proxied": harness.serf_members(self.lab, "h1")}
        for n in self.natives:
            v[n] = harness.serf_members(self.lab, self.HOSTS[n])
        for n, p in self.go.items():
            v[n] = harness.peer_members(p)
        return v

    def wait_all_alive(self, timeout=30):
        state = {}

        def ok():
            state["v"] = self.views()
            return all(view.get(m) == "alive" for view in state["v"].values()
                       for m in self.members)
        try:
            harness.wait_for(ok, timeout, interval=0.5, what="all members alive everywhere")
        except AssertionError:
            raise AssertionError("not every member is alive on every node: %s (members %s)"
                                 % (state.get("v"), self.members))

    @staticmethod
    def flags(incoming, outgoing):
        return "encrypt_verify_incoming = %s\nencrypt_verify_outgoing = %s" % (
            str(incoming).lower(), str(outgoing).lower())

    def reload(self, stage, key, incoming, outgoing, expect_changes):
        harness.proxy_config(self.cfg + ".new", self.data, key,
                             extra=self.flags(incoming, outgoing))
        os.replace(self.cfg + ".new", self.cfg)
        before = harness.read_log(self.proxy).count("reload complete")
        self.proxy.send_signal(signal.SIGHUP)
        harness.wait_for(lambda: harness.read_log(self.proxy).count("reload complete") > before,
                         10, what="sidecrypt reload for stage " + stage)
        tail = harness.read_log(self.proxy).split("SIGHUP")[-1]
        for change in expect_changes:
            self.assertIn(change, tail, "stage %s reload did not log %r" % (stage, change))
        self.assertIsNone(self.proxy.poll(), "sidecrypt exited")

    def event_reaches(self, host, name, payload, seen_in):
        """`serf event` from `host` until every log in seen_in shows it (at most 3 sends: Serf
        spreads events by a bounded number of gossip transmissions, which can miss a node)."""
        def seen():
            return all(name in harness.read_log(p) for p in seen_in)
        for _ in range(3):
            self.lab.run(host, "serf", "event", name, payload)
            try:
                harness.wait_for(seen, 8, interval=0.2, what="event %s" % name)
                return
            except AssertionError:
                pass
        missing = [getattr(p, "log_path", p) for p in seen_in if name not in harness.read_log(p)]
        self.fail("event %s from %s never reached %s" % (name, host, missing))

    def query_acked_by_all(self, host, name):
        """`serf query` from `host` (at most 3 times, same reason); every member must ack."""
        acked = set()
        for i in range(3):
            r = self.lab.run(host, "serf", "query", "-timeout", "3s", "%s-%d" % (name, i), "x",
                             timeout=20)
            acked |= set(re.findall(r"Ack from '([^']+)'", r.stdout))
            if acked >= set(self.members):
                return
        self.fail("query from %s: acks only from %s of %s" % (host, sorted(acked), self.members))

    def keyless_join(self, name):
        """A keyless Go peer (a plaintext agent without sidecrypt) tries to join the proxied
        agent; returns its log once it has given up or joined."""
        p = self.start_go(name, [], ["proxied"])
        return p, harness.read_log(p)

    # --- the walk ----------------------------------------------------------------------------

    def test_0_plaintext_fleet_proxied_node_at_stage_a(self):
        def stage():
            args = ["serf", "agent", "-node", "proxied", "-bind", self.addr("proxied"),
                    "-rpc-addr", "127.0.0.1:7373", "-log-level", "debug"]
            type(self).agent = self.lab.spawn("h1", args,
                                              os.path.join(self.w.path, "proxied.log"))
            harness.wait_for(lambda: "Serf agent running" in harness.read_log(self.agent), 15,
                             what="the proxied serf agent")
            self.members.append("proxied")
            self.members.append("go-1")
            self.restart_go("go-1", [], ["proxied"])  # inbound TCP through sidecrypt
            self.members.append("go-2")
            self.go["go-2"] = self.start_go("go-2", [], [])
            # The proxied agent dials out (outbound TCP through sidecrypt).
            self.lab.run("h1", "serf", "join", self.addr("go-2"), timeout=20)
            self.wait_all_alive()
        self.run_stage(stage)

    def test_1_stage_a_keys_installed_accept_both(self):
        def stage():
            self.assertIn("encrypt_verify_incoming=false encrypt_verify_outgoing=false",
                          harness.read_log(self.proxy))
            flags = ["-key", self.key, "-verify-incoming=false", "-verify-outgoing=false"]
            self.restart_go("go-1", flags, ["proxied"])
            self.restart_go("go-2", flags, ["proxied", "go-1"])
            c = harness.dump_counters(self.proxy)
            # Stage-1 peers send plaintext: accepted, and counted as what stage c would refuse.
            self.assertGreater(harness.counter(c, "lan packets peer->agent", "shadow_refused"), 0,
                               c)
            self.assertEqual(harness.counter(c, "lan packets peer->agent", "plaintext_refused"),
                             0, c)
            # A keyless node still joins: its plaintext push/pull is accepted (shadow) and the
            # reply is plaintext.
            shadow = harness.counter(c, "lan streams peer->agent", "shadow_refused")
            p, out = self.keyless_join("keyless")
            self.assertIn("JOINED", out, out[-2000:])
            c = harness.dump_counters(self.proxy)
            self.assertGreater(harness.counter(c, "lan streams peer->agent", "shadow_refused"),
                               shadow, c)
            harness.wait_for(lambda: harness.serf_members(self.lab, "h1").get("keyless") ==
                             "alive", 15, interval=0.5, what="keyless node alive on proxied")
            harness.stop_process(p, signal.SIGTERM)  # graceful leave
            self.assertIn("STOPPED", harness.read_log(p))
            harness.wait_for(lambda: harness.serf_members(self.lab, "h1").get("keyless") ==
                             "left", 15, interval=0.5, what="keyless node left")
            self.wait_all_alive()
        self.run_stage(stage)

    def test_2_stage_b_everyone_encrypts(self):
        def stage():
            self.reload("b", self.key, False, True,
                        ["stage changed: gossip.encrypt_verify_outgoing false -> true"])
            flags = ["-key", self.key, "-verify-incoming=false", "-verify-outgoing=true"]
            self.restart_go("go-1", flags, ["proxied"])
            self.restart_go("go-2", flags, ["go-1", "proxied"])
            # Everyone encrypts now: stage-c nodes (native serf agents) can join.
            self.start_native("native-1", "proxied")
            self.start_native("native-2", "go-2")
            self.wait_all_alive()
            # Census: nobody sends plaintext any more, so the shadow counters stand still.
            c1 = harness.dump_counters(self.proxy)
            time.sleep(5)
            c2 = harness.dump_counters(self.proxy)
            for sec in ("lan packets peer->agent", "lan streams peer->agent"):
                self.assertEqual(harness.counter(c1, sec, "shadow_refused"),
                                 harness.counter(c2, sec, "shadow_refused"),
                                 "plaintext still arrives in stage b: %s -> %s" % (c1, c2))
            self.assertGreater(harness.counter(c2, "lan packets peer->agent", "opened_key_0"),
                               harness.counter(c1, "lan packets peer->agent", "opened_key_0"))
            self.assertGreater(harness.counter(c2, "lan packets agent->peer", "sealed"),
                               harness.counter(c1, "lan packets agent->peer", "sealed"))
            # A keyless node's plaintext join is still accepted (shadow-refused) by sidecrypt,
            # but the agent's reply is sealed now, which the keyless node cannot read.
            p, out = self.keyless_join("keyless-b")
            harness.stop_process(p, signal.SIGKILL)
            self.assertIn("JOIN-FAILED", out, out[-2000:])
            self.assertIn(KEYLESS_ERR_SEALED_REPLY, out)
            c3 = harness.dump_counters(self.proxy)
            self.assertGreater(harness.counter(c3, "lan streams peer->agent", "shadow_refused"),
                               harness.counter(c2, "lan streams peer->agent", "shadow_refused"),
                               c3)
            self.wait_all_alive()
        self.run_stage(stage)

    def test_3_stage_c_plaintext_refused(self):
        def stage():
            self.reload("c", self.key, True, True,
                        ["stage changed: gossip.encrypt_verify_incoming false -> true"])
            self.restart_go("go-1", ["-key", self.key], ["proxied"])
            self.restart_go("go-2", ["-key", self.key], ["native-1", "proxied"])
            # The proxied agent dials a native node through sidecrypt (outbound, sealed).
            self.lab.run("h1", "serf", "join", self.addr("native-2"), timeout=20)
            self.wait_all_alive()
            c1 = harness.dump_counters(self.proxy)
            p, out = self.keyless_join("keyless-c")
            harness.stop_process(p, signal.SIGKILL)
            self.assertIn("JOIN-FAILED", out, out[-2000:])
            c2 = harness.dump_counters(self.proxy)
            self.assertGreater(harness.counter(c2, "lan streams peer->agent", "plaintext_refused"),
                               harness.counter(c1, "lan streams peer->agent",
                                               "plaintext_refused"), c2)
            for sec in ("lan packets peer->agent", "lan streams peer->agent"):
                self.assertEqual(harness.counter(c1, sec, "shadow_refused"),
                                 harness.counter(c2, sec, "shadow_refused"), c2)
            # The refused node never became a member anywhere.
            for observer, view in self.views().items():
                self.assertNotIn("keyless-c", view, observer)
            # Events and queries still travel between native, Go and proxied members.
            self.event_reaches("h4", "from-native-c", "n1",
                               [self.agent, self.natives["native-2"]] + list(self.go.values()))
            self.event_reaches("h1", "from-proxied-c", "p1",
                               list(self.natives.values()) + list(self.go.values()))
            self.query_acked_by_all("h1", "q-from-proxied-c")
            self.query_acked_by_all("h4", "q-from-native-c")
            self.wait_all_alive()
        self.run_stage(stage)

    def test_4_no_member_ever_suspected_or_failed(self):
        self.assertTrue(self.members, "the cluster never formed")
        logs = [harness.read_log(self.agent)] + [harness.read_log(p) for p in self.natives.values()]
        logs += [harness.read_log(path) for path in self.go_logs]
        bad = harness.failure_lines("\n".join(logs), self.members)
        self.assertEqual(bad, [], "members were suspected or marked failed")
        self.assertIsNone(self.proxy.poll(), "sidecrypt exited")


if __name__ == "__main__":
    harness.main()
