"""Claim: three real Prometheus Alertmanagers (Debian's prometheus-alertmanager 0.25), each in
plaintext behind its own sidecrypt with profile = "alertmanager", stay one cluster while the
rollout walks from plaintext to verify-incoming, and at the end nothing of theirs crosses the
wire in clear:

  stage 0  the three Alertmanagers cluster in plaintext, no sidecrypt (a1 and a2 on 9094, a3 on
           9095: Alertmanager members may listen on different ports, so every sidecrypt lists
           intercept.member_ports = [9094, 9095]);
  stage 1  a sidecrypt starts beside each running Alertmanager in turn (keys installed,
           encrypt_verify_incoming = encrypt_verify_outgoing = false; its rules installed at
           start);
  stage 2  encrypt_verify_outgoing = true, by reload, node by node;
  stage 3  encrypt_verify_incoming = true, by reload, node by node.

After every step every Alertmanager reports 3 peers and cluster status "ready" (GET
/api/v2/status): the cluster never splits. A silence created on one Alertmanager (POST
/api/v2/silences) appears on the other two, at stage 0 and at stage 3. From stage 2 on every
gossip payload between them is captured on the bridge and must open with the key
(`sidecrypt decode`), and no silence text or node name appears in any raw payload.

At stage 3: `sidecrypt check enforce-incoming` said yes before the step; an Alertmanager restarted
with a new random node name stays one census member (by address and port, the old name kept in
/peers and /members); an unproxied Alertmanager pointed at a1 cannot join (its plaintext is
refused and counted); and with a3's sidecrypt stopped (rules stay: fail closed) nothing from a3
reaches the wire and the other two see it leave.
"""
import json
import os
import time
import unittest
import uuid

import harness

AM = "/usr/bin/prometheus-alertmanager"
ADMIN = "127.0.0.1:9920"
PORTS = {"a1": 9094, "a2": 9094, "a3": 9095, "x4": 9094}
AM_CONFIG = """route:
  receiver: "null"
receivers:
  - name: "null"
"""


def proxy_toml(path, data_dir, key, stage, own_port):
    vin, vout = {1: (False, False), 2: (False, True), 3: (True, True)}[stage]
    body = ["[agent]", 'profile = "alertmanager"', 'data_dir = "%s"' % data_dir,
            "[gossip]", 'encrypt = "%s"' % key,
            "encrypt_verify_incoming = %s" % str(vin).lower(),
            "encrypt_verify_outgoing = %s" % str(vout).lower(),
            "[intercept]", "install_rules = true", 'drain_time = "0s"',
            "member_ports = [9094, 9095]"]
    if own_port != 9094:
        # A member on another port: the profile's list replaced by that port.
        body += ["[[intercept.port]]", "port = %d" % own_port, 'protocol = "gossip"',
                 'name = "alertmanager"']
    body += ["[log]", 'level = "debug"', ""]
    with open(path, "w") as f:
        f.write("\n".join(body))
    return path


class AlertmanagerCluster(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_root("network namespaces, netfilter and real Alertmanagers")
        if not os.access(AM, os.X_OK):
            harness.skip_or_fail("needs %s (Debian package prometheus-alertmanager; "
                                 "scripts/install-deps.sh --engines)" % AM)
        harness.require_commands("tcpdump", why="a wire capture")
        cls.w = harness.Workdir()
        cls.lab = None
        try:
            cls.lab = harness.Lab(["a1", "a2", "a3", "x4"])
            cls.key = harness.run(["keygen"], check=True).stdout.strip()
            cls.am_cfg = cls.w.file("alertmanager.yml", AM_CONFIG)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        harness.cleanup(cls.lab, cls.w)

    # --- helpers ---------------------------------------------------------------------------

    def cluster_addr(self, host):
        return "%s:%d" % (self.lab.ip(host), PORTS[host])

    def start_am(self, host, peers):
        """An Alertmanager in `host`: cluster on its address and port, short gossip intervals,
        API on :9093 of its address. Waits until its API answers."""
        stamp = "%s-%d" % (host, int(time.time() * 1000))
        args = [AM, "--config.file=" + self.am_cfg,
                "--storage.path=" + os.path.join(self.w.path, "am-data-" + stamp),
                "--web.listen-address=%s:9093" % self.lab.ip(host),
                "--cluster.listen-address=" + self.cluster_addr(host),
                "--cluster.advertise-address=" + self.cluster_addr(host),
                "--cluster.gossip-interval=100ms", "--cluster.pushpull-interval=2s",
                "--cluster.probe-interval=500ms", "--cluster.probe-timeout=300ms",
                "--cluster.settle-timeout=5s", "--cluster.reconnect-interval=2s",
                "--log.level=debug"]
        args += ["--cluster.peer=" + self.cluster_addr(p) for p in peers]
        proc = self.lab.spawn(host, args, os.path.join(self.w.path, "am-%s.log" % stamp))
        harness.wait_for(lambda: self.status(host) is not None, 20,
                         what="Alertmanager API in " + host)
        return proc

    def api(self, host, path, body=None):
        """GET (or POST `body` as JSON) http://<host ip>:9093<path> from inside `host`."""
        script = ("import urllib.request,sys,json\n"
                  "b=sys.argv[2].encode() if len(sys.argv)>2 else None\n"
                  "r=urllib.request.Request(sys.argv[1],data=b,"
                  "headers={'Content-Type':'application/json'})\n"
                  "sys.stdout.write(urllib.request.urlopen(r,timeout=5).read().decode())\n")
        args = ["python3", "-c", script, "http://%s:9093%s" % (self.lab.ip(host), path)]
        if body is not None:
            args.append(json.dumps(body))
        r = self.lab.run(host, *args, check=False, timeout=15)
        if r.returncode != 0:
            return None
        return json.loads(r.stdout)

    def status(self, host):
        return self.api(host, "/api/v2/status")

    def cluster_view(self, host):
        """(status, sorted peer addresses) of `host`'s Alertmanager, or (None, [])."""
        st = self.status(host)
        if st is None:
            return None, []
        c = st.get("cluster", {})
        return c.get("status"), sorted(p["address"] for p in c.get("peers") or [])

    def assert_one_cluster(self, hosts=("a1", "a2", "a3"), timeout=30, what=""):
        """Every host reports exactly the three members and status ready (bounded wait)."""
        want = sorted(self.cluster_addr(h) for h in hosts)
        views = {}

        def ok():
            for h in hosts:
                views[h] = self.cluster_view(h)
            return all(v == ("ready", want) for v in views.values())
        try:
            harness.wait_for(ok, timeout, interval=0.5, what="one cluster " + what)
        except AssertionError:
            self.fail("cluster split or not ready %s: want %s on each, got %s"
                      % (what, want, views))
        return views

    def admin(self, host, path):
        r = self.lab.run(host, "python3", "-c",
                         "import urllib.request,sys;"
                         "sys.stdout.write(urllib.request.urlopen('http://%s%s',timeout=5)"
                         ".read().decode())" % (ADMIN, path), check=False, timeout=15)
        return r.stdout

    def start_proxy(self, host, stage):
        cfg = proxy_toml(os.path.join(self.w.path, "sc-%s.toml" % host),
                         os.path.join(self.w.path, "sc-data-" + host), self.key, stage,
                         PORTS[host])
        p = self.lab.spawn(host, [harness.binary(), "run", "--config", cfg],
                           os.path.join(self.w.path, "sc-%s.log" % host))
        harness.wait_for(lambda: "started:" in harness.read_log(p), 15,
                         what="sidecrypt in " + host)
        return p

    def set_stage(self, host, stage):
        proxy_toml(os.path.join(self.w.path, "sc-%s.toml" % host),
                   os.path.join(self.w.path, "sc-data-" + host), self.key, stage, PORTS[host])
        harness.sighup_reload(self.proxies[host], what="reload of %s to stage %d" % (host, stage))

    def silence(self, host, marker):
        now = time.time()
        body = {"matchers": [{"name": "alertname", "value": marker, "isRegex": False}],
                "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60)),
                "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600)),
                "createdBy": "sidecrypt-test", "comment": marker}
        r = self.api(host, "/api/v2/silences", body)
        self.assertIsNotNone(r, "POST /api/v2/silences on " + host)
        return r["silenceID"]

    def wait_silence(self, hosts, sid, timeout=20):
        def ok():
            for h in hosts:
                s = self.api(h, "/api/v2/silence/" + sid)
                if s is None or s.get("status", {}).get("state") != "active":
                    return False
            return True
        harness.wait_for(ok, timeout, interval=0.5,
                         what="silence %s replicated to %s" % (sid, hosts))

    # --- the scenario, in order ------------------------------------------------------------

    def test_alertmanager_rollout(self):
        lab = self.lab
        started = time.monotonic()
        # Stage 0: plaintext cluster, no sidecrypt.
        self.ams = {"a1": self.start_am("a1", []),
                    "a2": self.start_am("a2", ["a1"]),
                    "a3": self.start_am("a3", ["a1", "a2"])}
        self.assert_one_cluster(what="at stage 0")
        sid0 = self.silence("a1", "stage0-" + uuid.uuid4().hex)
        self.wait_silence(["a2", "a3"], sid0)

        # Stage 1: a sidecrypt beside each running Alertmanager, one at a time.
        self.proxies = {}
        for h in ("a1", "a2", "a3"):
            self.proxies[h] = self.start_proxy(h, 1)
            time.sleep(1)
            self.assert_one_cluster(what="after sidecrypt started in " + h)
        # Stage 2 by reload, node by node.
        for h in ("a1", "a2", "a3"):
            self.set_stage(h, 2)
            time.sleep(1)
            self.assert_one_cluster(what="after %s reloaded to stage 2" % h)

        # From here on nothing may cross the wire in clear.
        pcap = os.path.join(self.w.path, "sealed.pcap")
        cap = lab.capture(pcap, "tcp or udp")
        marker2 = "stage2-" + uuid.uuid4().hex
        sid2 = self.silence("a2", marker2)
        self.wait_silence(["a1", "a3"], sid2)
        # The gate before stage 3 (a short window: the sidecrypts are seconds old).
        time.sleep(4)
        for h in ("a1", "a2", "a3"):
            cfg = os.path.join(self.w.path, "sc-%s.toml" % h)
            r = lab.run(h, harness.binary(), "check", "enforce-incoming", "--config", cfg,
                        "--within", "3s", check=False)
            self.assertEqual(r.returncode, 0, "%s: %s%s" % (h, r.stdout, r.stderr))
            st = json.loads(self.admin(h, "/status"))
            self.assertEqual(st["member_ports"]["uncovered_members"], [], (h, st))
        # Stage 3 by reload, node by node.
        for h in ("a1", "a2", "a3"):
            self.set_stage(h, 3)
            time.sleep(1)
            self.assert_one_cluster(what="after %s reloaded to stage 3" % h)
        marker3 = "stage3-" + uuid.uuid4().hex
        sid3 = self.silence("a3", marker3)
        self.wait_silence(["a1", "a2"], sid3)
        self.wait_silence(["a1", "a2", "a3"], sid0)  # the stage-0 silence is still everywhere

        # Restart a2 with a new random node name: one census member by address and port.
        a2_name = self.status("a2")["cluster"]["name"]
        harness.stop_process(self.ams["a2"])
        self.ams["a2"] = self.start_am("a2", ["a1", "a3"])
        new_a2 = self.status("a2")["cluster"]["name"]
        self.assertNotEqual(a2_name, new_a2, "Alertmanager kept its node name across a restart")
        self.assert_one_cluster(timeout=45, what="after a2 restarted as " + new_a2)
        self.wait_silence(["a2"], sid3)

        def a2_record():
            members = json.loads(self.admin("a1", "/members"))["members"]
            return [m for m in members if m["endpoint"] == self.cluster_addr("a2")]
        harness.wait_for(lambda: [m["name"] for m in a2_record()] == [new_a2], 15,
                         what="a1's census names a2 by its new name")
        rec = a2_record()
        self.assertEqual(len(rec), 1, rec)
        self.assertEqual(rec[0]["state"], "alive", rec)
        self.assertIn(a2_name, [e["name"] for e in rec[0]["earlier_names"]], rec)
        peers = json.loads(self.admin("a1", "/peers"))
        p2 = [p for p in peers if p["address"] == lab.ip("a2")]
        self.assertEqual(len(p2), 1, peers)
        self.assertEqual(p2[0]["node"], new_a2, p2)
        self.assertIn(a2_name, [e["name"] for e in p2[0]["earlier_names"]], p2)
        r = lab.run("a1", harness.binary(), "status", "--peers", check=False)
        self.assertIn("was: " + a2_name, r.stdout)

        # An unproxied Alertmanager cannot join a stage-3 cluster.
        x4 = self.start_am("x4", ["a1"])
        time.sleep(8)
        self.assertEqual(self.cluster_view("x4"), ("ready", [self.cluster_addr("x4")]),
                         "the unproxied Alertmanager joined the stage-3 cluster")
        self.assert_one_cluster(what="with an unproxied Alertmanager knocking")
        metrics = self.admin("a1", "/metrics")
        # Its join (a TCP push/pull) and any packets it sent were refused and counted.
        refused = sum(float(l.split()[-1]) for l in metrics.splitlines()
                      if l.startswith(("sidecrypt_gossip_packets_total{",
                                       "sidecrypt_gossip_streams_total{")) and
                      'direction="peer_to_agent"' in l and 'result="plaintext_refused"' in l)
        self.assertGreater(refused, 0, [l for l in metrics.splitlines() if "refused" in l])
        harness.stop_process(x4)

        harness.stop_process(cap)
        frames = harness.read_pcap_frames(pcap)
        am_ips = {lab.ip(h) for h in ("a1", "a2", "a3")}
        between = [f for f in frames if f[1] in am_ips and f[3] in am_ips and f[5] and
                   (f[2] in (9094, 9095) or f[4] in (9094, 9095))]
        self.assertTrue(any(f[0] == "udp" for f in between), "no UDP gossip captured")
        self.assertTrue(any(f[0] == "tcp" for f in between), "no TCP push/pull captured")
        self.assertTrue(any(f[4] == 9095 for f in between), "nothing to the member on 9095")
        secrets = [marker2.encode(), marker3.encode(), a2_name.encode(), new_a2.encode()]
        for f in between:
            for s in secrets:
                self.assertNotIn(s, f[5], "plaintext on the wire: %r in %s" % (s, f[:5]))
        ring = self.w.file("decode.keyring", '["%s"]' % self.key)
        r = harness.run(["decode", "--keyring", ring, "--json", pcap], timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        items = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
        ours = [i for i in items if i["src"].rsplit(":", 1)[0] in am_ips and
                i["dst"].rsplit(":", 1)[0] in am_ips]
        self.assertGreater(len(ours), 50)
        self.assertTrue(any(i["transport"] == "tcp" for i in ours), "no TCP message decoded")
        for i in ours:
            self.assertTrue(i["encrypted"], i)
            self.assertIsNone(i["error"], i)
        print("wire from stage 2 on: %d payload frames between the Alertmanagers (%d UDP, %d "
              "TCP, %d to :9095), %d gossip messages decoded, all sealed; refused from x4: %d"
              % (len(between), sum(f[0] == "udp" for f in between),
                 sum(f[0] == "tcp" for f in between), sum(f[4] == 9095 for f in between),
                 len(ours), refused))
        # The unproxied Alertmanager's plaintext was there, and refused.
        self.assertTrue(any(not i["encrypted"] and i["src"].startswith(lab.ip("x4") + ":")
                            for i in items), "the capture did not see x4's plaintext")

        # Fail closed: a3's sidecrypt stops, its rules stay; nothing from a3 goes out.
        harness.stop_process(self.proxies["a3"])
        time.sleep(0.5)
        pcap3 = os.path.join(self.w.path, "stopped.pcap")
        cap3 = lab.capture(pcap3, "tcp or udp")
        try:
            harness.wait_for(lambda: self.cluster_view("a1")[1] ==
                             sorted([self.cluster_addr("a1"), self.cluster_addr("a2")]), 30,
                             interval=0.5, what="a1 sees a3 gone")
        finally:
            harness.stop_process(cap3)
        frames = harness.read_pcap_frames(pcap3)
        from_a3 = [f[:5] for f in frames if f[1] == lab.ip("a3")]
        self.assertEqual(from_a3, [], "with sidecrypt stopped, a3 still sent packets")
        self.assertTrue(any(f[3] == lab.ip("a3") for f in frames),
                        "the other members did not try to reach a3 (the capture saw nothing)")
        self.assertIsNone(self.ams["a3"].poll(), "a3's Alertmanager died")
        print("alertmanager rollout: %.1f s" % (time.monotonic() - started))


if __name__ == "__main__":
    harness.main()
