"""Claim (issue 17.4): the fleet-wide gate, `sidecrypt check enforce-incoming --prometheus URL`
and `sidecrypt check remove-key KEY --prometheus URL`, answers for a whole fleet from Debian's
real Prometheus and the repository's recording rules, and says "no" whenever one node is not
known to be safe.

Fleet: four hosts in network namespaces (alpha, bravo, charlie, delta), each a plaintext
serf 0.9.4 agent behind its own sidecrypt with `[census] window = "15s"` and its read-only
metrics listener on the host's address (:9921); a fifth namespace runs `prometheus` (temporary
config and storage; scrape and evaluation interval 1 s; job "sidecrypt" over the four listeners;
rule_files = monitoring/prometheus/sidecrypt-rules.yml of this repository). The gate runs in
that fifth namespace, as an operator's pipeline would, and is polled with a deadline.

1. Rollout: all four at stage 1 (key installed, plaintext out, both accepted): the gate says no
   and names every node. The nodes go to stage 2 (encrypt outgoing) one by one by reload; while
   any is still at stage 1 the gate says no and names it among the holdouts. Right after the
   last one converts it still says no (plaintext heard within the window); it says yes only once
   the window has passed since then, and not before.
2. A target Prometheus cannot scrape (its metrics port dropped by a netfilter rule in its host):
   the gate says no and names it, by node name even seconds later (down); reachable again, yes.
3. A sidecrypt restarted less than a window ago: no, because its census is younger than the
   window; yes once the window has passed since the restart, and not before.
4. A key rotation with Serf's own tooling from a proxied agent (`serf keys -install K2`,
   `-use K2`): `check remove-key K1` says no while K1 is primary and while any node still hears
   K1 within the window, yes after; K2 (primary) is never removable.
5. alpha stops hearing delta (a one-way drop; delta stays alive through indirect probes): the
   gate says no and names alpha (a live member silent in its window), as alpha's own check does;
   yes again once alpha hears delta.

Everything (namespaces, sidecrypts, agents, Prometheus, its directory) is removed on every path
(SIDECRYPT_KEEP_LOGS keeps the directory; SIDECRYPT_GATE_TRACE=1 prints every answer of the gate).
"""
import json
import os
import re
import time
import unittest

import harness

NODES = {"alpha": "h1", "bravo": "h2", "charlie": "h3", "delta": "h4"}
PROM_HOST = "pm"
WINDOW = 15  # [census] window, seconds
METRICS_PORT = 9921
PROM_PORT = 9090
REPO_RULES = os.path.join(harness.REPO_ROOT, "monitoring", "prometheus", "sidecrypt-rules.yml")


class InNs(harness.Netns):
    """An existing namespace of the lab, entered with `with` (harness.Netns without creating)."""

    def __init__(self, name):  # pylint: disable=super-init-not-called
        self.name = name
        self._saved = []


class FleetGatePrometheus(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_root("network namespaces, netfilter, serf agents and prometheus")
        harness.require_commands("serf", "prometheus", "promtool", "nft",
                                 why="serf agents, Debian's prometheus, a netfilter drop rule")
        cls.w = harness.Workdir()
        cls.lab = None
        try:
            cls.lab = harness.Lab(list(NODES.values()) + [PROM_HOST])
            cls.k1 = harness.run(["keygen"], check=True).stdout.strip()
            cls.cfg = {n: os.path.join(cls.w.path, n + ".toml") for n in NODES}
            cls.stage = {}
            for n in NODES:
                cls.write_config(n, 1)
            cls.proxies, cls.agents = {}, {}
            first = None
            for n in NODES:
                cls.proxies[n], cls.agents[n] = harness.start_proxied_serf(
                    cls.lab, NODES[n], n, cls.cfg[n], cls.w.path, join=first)
                first = first or cls.addr(n)
            harness.wait_members_alive(cls.lab, list(NODES.values()), list(NODES), timeout=40)
            cls.prom_url = "http://%s:%d" % (cls.lab.ip(PROM_HOST), PROM_PORT)
            cls.start_prometheus()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.lab is not None:
            for h in NODES.values():
                harness.sh("ip", "netns", "exec", cls.lab.ns(h), "nft", "delete", "table",
                           "inet", "scgate", check=False)
        harness.cleanup(cls.lab, cls.w)

    # ---- fleet ------------------------------------------------------------------------------

    @classmethod
    def addr(cls, n):
        return "%s:7946" % cls.lab.ip(NODES[n])

    @classmethod
    def write_config(cls, n, stage):
        cls.stage[n] = stage
        extra = "\n".join([
            "encrypt_verify_outgoing = %s" % ("true" if stage >= 2 else "false"),
            "encrypt_verify_incoming = false",
            "[census]", 'window = "%ds"' % WINDOW,
            "[metrics]", 'listen = "%s:%d"' % (cls.lab.ip(NODES[n]), METRICS_PORT)])
        harness.proxy_config(cls.cfg[n], os.path.join(cls.w.path, "data-" + n), cls.k1,
                             extra=extra)

    def reload(self, n, stage):
        self.write_config(n, stage)
        r = self.lab.run(NODES[n], harness.binary(), "reload", "-c", self.cfg[n], check=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return time.monotonic()

    @classmethod
    def start_proxy(cls, n):
        p = cls.lab.spawn(NODES[n], [harness.binary(), "run", "--config", cls.cfg[n]],
                          os.path.join(cls.w.path, "sidecrypt-%s-%d.log" % (n, time.time())))
        harness.wait_for(lambda: "started:" in harness.read_log(p) or p.poll() is not None, 15,
                         what="sidecrypt of " + n)
        if p.poll() is not None:
            raise AssertionError("sidecrypt of %s exited:\n%s" % (n, harness.read_log(p)))
        return p

    # ---- prometheus -------------------------------------------------------------------------

    @classmethod
    def start_prometheus(cls):
        cls.prom, cls.prom_url = harness.start_prometheus(
            cls.lab, PROM_HOST, PROM_PORT, cls.w.path,
            ["%s:%d" % (cls.lab.ip(h), METRICS_PORT) for h in NODES.values()], REPO_RULES)

    @classmethod
    def prom_get(cls, path, timeout=3):
        import urllib.request
        with InNs(cls.lab.ns(PROM_HOST)):
            with urllib.request.urlopen(cls.prom_url + path, timeout=timeout) as r:
                return r.status, r.read().decode()

    @classmethod
    def query(cls, expr):
        import urllib.parse
        doc = json.loads(cls.prom_get("/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}))[1])
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    # ---- the gate ---------------------------------------------------------------------------

    def gate(self, *args):
        """(exit code, parsed JSON or None, all output) of the fleet gate run in the
        Prometheus namespace."""
        r = self.lab.run(PROM_HOST, harness.binary(), "check", *args, "--prometheus",
                         self.prom_url, "--json", check=False, timeout=30)
        if os.environ.get("SIDECRYPT_GATE_TRACE"):
            print("gate %s -> %d %s" % (" ".join(args), r.returncode, r.stdout + r.stderr))
        try:
            doc = json.loads(r.stdout)
        except ValueError:
            doc = None
        return r.returncode, doc, r.stdout + r.stderr

    def wait_gate(self, what, want, args=("enforce-incoming",), timeout=40):
        """Polls the gate (about once a second) until want(rc, doc, text) holds; returns
        (rc, doc, text, seconds waited). On timeout the last answer is in the failure."""
        start = time.monotonic()
        last = [None]

        def ok():
            last[0] = self.gate(*args)
            if last[0][0] not in (0, 1):
                raise AssertionError("gate error (exit %d): %s" % (last[0][0], last[0][2]))
            return want(*last[0])
        try:
            harness.wait_for(ok, timeout, interval=1.0, what=what)
        except AssertionError as e:
            raise AssertionError("%s\nlast gate answer: %r\nprometheus says up: %r" % (
                e, last[0], self.query('up{job="sidecrypt"}'))) from None
        return last[0] + (time.monotonic() - start,)

    def instance(self, n):
        return "%s:%d" % (self.lab.ip(NODES[n]), METRICS_PORT)

    def why(self, doc, n):
        """The reasons the gate gives for node n (found by node name, or by its target when
        Prometheus has no node name for it), joined; "" when n is not a holdout."""
        return "; ".join(w for h in (doc or {}).get("holdouts", [])
                         if h.get("node") == n or h.get("instance") == self.instance(n)
                         for w in h.get("why", []))

    def holdouts(self, doc):
        """The nodes (of NODES) the gate names as holdouts."""
        return {n for n in NODES if self.why(doc, n)}

    def stage1(self, doc, n):
        return re.search(r"stage 1\b", self.why(doc, n)) is not None

    @staticmethod
    def says_yes(rc, doc, text):
        return rc == 0

    def assert_yes(self, rc, doc, text):
        self.assertEqual(rc, 0, text)
        self.assertIs(doc["ok"], True, text)
        self.assertEqual(doc["holdouts"], [], text)
        self.assertEqual(doc["nodes"], len(NODES), text)
        self.assertLess(doc["data_age_seconds"], 5, text)

    def start_from_yes(self):
        """Every node at stage 2 (an earlier step may have failed half-way) and the gate at yes,
        so that each step fails on its own."""
        for n in NODES:
            if self.stage[n] != 2:
                self.reload(n, 2)
        self.wait_gate("yes before the test", self.says_yes, timeout=2 * WINDOW + 30)

    # ---- the walk ---------------------------------------------------------------------------

    def test_1_rollout_walk(self):
        # Prometheus has scraped every target and evaluated the node rules, with node names.
        harness.wait_for(lambda: {s["metric"].get("node") for s in self.query(
            "sidecrypt:node:gossip_stage")} == set(NODES), 30, interval=0.5,
            what="sidecrypt:node:gossip_stage with the node name of every node")
        # Stage 1 everywhere: every node's agent still sends plaintext, and hears it.
        rc, doc, text, _ = self.wait_gate(
            "the gate names every node at stage 1",
            lambda rc, doc, text: rc == 1 and all(self.stage1(doc, n) for n in NODES))
        self.assertIs(doc["ok"], False, text)
        self.assertEqual(doc["nodes"], len(NODES), text)
        self.assertRegex(self.why(doc, "alpha"), r"plaintext", text)
        order = list(NODES)
        for i, n in enumerate(order):
            converted_at = self.reload(n, 2)
            done, remaining = order[:i + 1], order[i + 1:]
            # Whoever is still at stage 1 is named for it; the converted ones are not, and the
            # answer stays no.
            rc, doc, text, _ = self.wait_gate(
                "the gate names %s (stage 1) after %s converted" % (remaining, n),
                lambda rc, doc, text: rc == 1 and all(self.stage1(doc, m) for m in remaining)
                and not any(self.stage1(doc, m) for m in done))
        # Right after the last conversion plaintext was heard within the window: still no.
        rc, doc, text = self.gate("enforce-incoming")
        self.assertEqual(rc, 1, text)
        self.assertTrue(any(re.search("plaintext", self.why(doc, n)) for n in NODES), text)
        rc, doc, text, _ = self.wait_gate("yes after the window", self.says_yes,
                                          timeout=WINDOW + 30)
        since = time.monotonic() - converted_at
        self.assertGreaterEqual(since, WINDOW - 2,
                                "the gate said yes %.1fs after the last node stopped sending "
                                "plaintext, within the %ds window: %s" % (since, WINDOW, text))
        self.assert_yes(rc, doc, text)

    def test_2_unreachable_target(self):
        self.start_from_yes()
        ns = self.lab.ns(NODES["bravo"])
        harness.sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=(
            "table inet scgate {\n chain input {\n  type filter hook input priority -300;\n"
            "  tcp dport %d drop\n }\n}\n" % METRICS_PORT))
        try:
            rc, doc, text, _ = self.wait_gate(
                "the gate names bravo's unreachable target",
                lambda rc, doc, text: rc == 1 and self.holdouts(doc) == {"bravo"})
            self.assertRegex(self.why(doc, "bravo"), r"down|stale", text)
            self.assertEqual(doc["nodes"], len(NODES), text)
            # Still named by its node name once Prometheus has marked its series stale.
            time.sleep(5)
            rc, doc, text = self.gate("enforce-incoming")
            self.assertEqual(rc, 1, text)
            self.assertEqual([(h["node"], h["instance"]) for h in doc["holdouts"]],
                             [("bravo", self.instance("bravo"))], text)
            self.assertRegex(self.why(doc, "bravo"), r"down", text)
        finally:
            harness.sh("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "scgate")
        rc, doc, text, _ = self.wait_gate("yes once bravo is scraped again", self.says_yes,
                                          timeout=30)
        self.assert_yes(rc, doc, text)

    def test_3_young_census(self):
        self.start_from_yes()
        harness.stop_process(self.proxies["charlie"])
        type(self).proxies["charlie"] = self.start_proxy("charlie")
        restarted = time.monotonic()
        rc, doc, text, _ = self.wait_gate(
            "the gate says charlie's census is younger than the window",
            lambda rc, doc, text: rc == 1 and self.holdouts(doc) == {"charlie"} and re.search(
                r"started \d+s ago, less than its %ds window" % WINDOW, self.why(doc, "charlie"))
            is not None)
        rc, doc, text, _ = self.wait_gate("yes a window after the restart", self.says_yes,
                                          timeout=WINDOW + 30)
        since = time.monotonic() - restarted
        self.assertGreaterEqual(since, WINDOW - 2,
                                "yes %.1fs after charlie's restart, within the window" % since)
        self.assert_yes(rc, doc, text)

    def test_4_remove_key_during_rotation(self):
        self.start_from_yes()
        fp1 = self.fingerprint(self.k1)
        k2 = harness.run(["keygen"], check=True).stdout.strip()
        fp2 = self.fingerprint(k2)
        serf = lambda *a: self.lab.run(NODES["alpha"], "serf", "keys", *a, check=False,
                                       timeout=30)
        r = serf("-install", k2)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        harness.wait_for(lambda: len(self.query(
            'sidecrypt_keyring_key{job="sidecrypt",fingerprint="%s"}' % fp2)) == len(NODES), 20,
            interval=0.5, what="K2 installed on every node, seen by Prometheus")
        # K2 is on every node, K1 still primary and in use everywhere: no, every node named.
        rc, doc, text, _ = self.wait_gate(
            "remove-key K1 says no while K1 is primary",
            lambda rc, doc, text: rc == 1 and all(
                re.search("primary", self.why(doc, n)) and re.search("still send", self.why(
                    doc, n)) for n in NODES), args=("remove-key", fp1))
        self.assertEqual(doc["check"], "remove-key " + fp1, text)
        # The same question asked with the key itself (base64) names the same fingerprint.
        rc, doc, text = self.gate("remove-key", self.k1)
        self.assertEqual((rc, doc["check"]), (1, "remove-key " + fp1), text)
        r = serf("-use", k2)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        used = time.monotonic()
        # K1 is no node's primary now, but peers still sent with it within the window: no.
        rc, doc, text, _ = self.wait_gate(
            "remove-key K1: not primary, still heard",
            lambda rc, doc, text: rc == 1 and not any(
                re.search("primary", self.why(doc, n)) for n in NODES) and any(
                re.search("still send", self.why(doc, n)) for n in NODES),
            args=("remove-key", fp1))
        rc, doc, text, _ = self.wait_gate("remove-key K1 says yes after the window",
                                          self.says_yes, args=("remove-key", fp1),
                                          timeout=WINDOW + 30)
        since = time.monotonic() - used
        self.assertGreaterEqual(since, WINDOW - 2, "yes %.1fs after -use K2" % since)
        self.assert_yes(rc, doc, text)
        # The new primary is not removable: every node names it.
        rc, doc, text = self.gate("remove-key", fp2)
        self.assertEqual(rc, 1, text)
        self.assertEqual(self.holdouts(doc), set(NODES), text)
        r = serf("-remove", self.k1)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_5_silent_member(self):
        self.start_from_yes()
        # alpha stops hearing delta (a one-way drop before sidecrypt sees the packets); delta
        # stays alive everywhere through indirect probes, so only alpha's census knows.
        ns = self.lab.ns(NODES["alpha"])
        harness.sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=(
            "table inet scgate {\n chain pre {\n  type filter hook prerouting priority -400;\n"
            "  ip saddr %s drop\n }\n}\n" % self.lab.ip(NODES["delta"])))
        try:
            rc, doc, text, _ = self.wait_gate(
                "the gate names alpha, where delta is silent",
                lambda rc, doc, text: rc == 1 and self.holdouts(doc) == {"alpha"},
                timeout=WINDOW + 30)
            self.assertRegex(self.why(doc, "alpha"), r"silent", text)
            self.assertEqual(harness.serf_members(self.lab, NODES["alpha"]).get("delta"),
                             "alive")
            # alpha's own check says the same, and names delta.
            r = self.lab.run(NODES["alpha"], harness.binary(), "check", "enforce-incoming",
                             "--json", "-c", self.cfg["alpha"], check=False)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn("delta", [x.get("node") for x in json.loads(r.stdout)["reasons"]],
                          r.stdout)
        finally:
            harness.sh("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "scgate")
        rc, doc, text, _ = self.wait_gate("yes once alpha hears delta again", self.says_yes,
                                          timeout=30)
        self.assert_yes(rc, doc, text)

    def fingerprint(self, key):
        f = self.w.file("fp-%d.keyring" % time.time_ns(), json.dumps([key]))
        out = harness.run(["keyring", "list", "--file", f], check=True).stdout
        os.unlink(f)
        return re.search(r"^\s+0\s+(\S+)", out, re.M).group(1)


if __name__ == "__main__":
    harness.main()
