"""Claim (issue 14.5): a real Prometheus scrapes sidecrypt's read-only metrics listener.

In a namespace of its own: a veth pair with 10.250.96.1/24 on one end stands for a pod address, and
sidecrypt runs with `[metrics] listen = "10.250.96.1:9921"` (a non-loopback address, accepted
without any unsafe flag because the listener only serves /metrics and /ready). Debian's
prometheus (2.42) runs in the same namespace on 127.0.0.1:19090 with its storage in a temporary
directory and a config written here (scrape and evaluation interval 1 s, one static target: the
metrics listener). Through its HTTP API: the target's health is "up" and `up` is 1; the
metadata Prometheus read from the scrape has a HELP text and a TYPE (not "unknown") for every
sidecrypt family in a body the test scrapes itself, which `promtool check metrics` passes with
no complaint; `rate()` over a counter (sidecrypt_http_requests_total, which every scrape moves)
answers with a value above 0. Prometheus is killed and its directory removed on every path.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import admin_http
import harness

POD_IP = "10.250.96.1"
METRICS = POD_IP + ":9921"
PROM = "127.0.0.1:19090"


class MetricsPrometheus(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_root("network namespaces, the data path's transparent sockets")
        harness.require_commands("prometheus", "promtool", why="Debian's prometheus package")
        cls.w = harness.Workdir()
        cls.prom = None
        cls.prom_dir = tempfile.mkdtemp(prefix="sc-prom-")
        cls.sc = admin_http.SidecryptInNetns("mp", cls.w, [
            "[metrics]", 'listen = "%s"' % METRICS])
        try:
            ns = cls.sc.ns.name
            harness.sh("ip", "-n", ns, "link", "add", "scm96a", "type", "veth", "peer", "name",
                       "scm96b")
            harness.sh("ip", "-n", ns, "addr", "add", POD_IP + "/24", "dev", "scm96a")
            harness.sh("ip", "-n", ns, "link", "set", "scm96a", "up")
            harness.sh("ip", "-n", ns, "link", "set", "scm96b", "up")
            cls.sc.start("127.0.0.1:9920")
            cls.start_prometheus()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def start_prometheus(cls):
        cfg = os.path.join(cls.prom_dir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("\n".join([
                "global:", "  scrape_interval: 1s", "  scrape_timeout: 1s",
                "  evaluation_interval: 1s",
                "scrape_configs:", "  - job_name: sidecrypt", "    metrics_path: /metrics",
                "    static_configs:", "      - targets: ['%s']" % METRICS, ""]))
        cls.prom_log = open(os.path.join(cls.prom_dir, "prometheus.log"), "w")
        with cls.sc.ns:
            cls.prom = subprocess.Popen(
                ["prometheus", "--config.file=" + cfg,
                 "--storage.tsdb.path=" + os.path.join(cls.prom_dir, "data"),
                 "--web.listen-address=" + PROM, "--log.level=warn"],
                stdout=cls.prom_log, stderr=subprocess.STDOUT, cwd=cls.prom_dir)
        harness.wait_for(lambda: cls.prom.poll() is not None or cls.api_ok("/-/ready"),
                         timeout=30, what="prometheus /-/ready")
        if cls.prom.poll() is not None:
            raise AssertionError("prometheus exited: " + harness.read(cls.prom_log.name))

    @classmethod
    def tearDownClass(cls):
        if cls.prom is not None:
            harness.stop_process(cls.prom, timeout=10)
            cls.prom_log.close()
            if os.environ.get("SIDECRYPT_KEEP_LOGS"):
                print(harness.read(cls.prom_log.name))
        shutil.rmtree(cls.prom_dir, ignore_errors=True)
        cls.sc.stop()
        cls.w.cleanup()

    @classmethod
    def http_get(cls, url, timeout=3):
        # The namespace's loopback: urllib's socket is made while this thread is in it.
        with cls.sc.ns:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read().decode()

    @classmethod
    def api_ok(cls, path):
        try:
            return cls.http_get("http://" + PROM + path)[0] == 200
        except OSError:
            return False

    @classmethod
    def api(cls, path, **params):
        url = "http://%s%s?%s" % (PROM, path, urllib.parse.urlencode(params))
        doc = json.loads(cls.http_get(url)[1])
        assert doc["status"] == "success", doc
        return doc["data"]

    def wait_api(self, what, fn, timeout=30):
        last = [None]

        def ok():
            last[0] = fn()
            return bool(last[0])
        try:
            harness.wait_for(ok, timeout=timeout, interval=0.5, what=what)
        except Exception:
            raise AssertionError("%s: last answer %r\nprometheus log:\n%s" % (
                what, last[0], harness.read(self.prom_log.name)))
        return last[0]

    def test_target_is_up(self):
        def target_up():
            ts = self.api("/api/v1/targets")["activeTargets"]
            return [t for t in ts if t["scrapeUrl"] == "http://%s/metrics" % METRICS
                    and t["health"] == "up"]
        self.wait_api("target up", target_up)
        res = self.wait_api("up == 1", lambda: self.api("/api/v1/query",
                                                        query='up{job="sidecrypt"} == 1')["result"])
        self.assertEqual(res[0]["value"][1], "1")

    def test_every_family_has_help_and_type(self):
        status, body = self.http_get("http://%s/metrics" % METRICS)
        self.assertEqual(status, 200)
        lint = subprocess.run(["promtool", "check", "metrics"], input=body,
                              capture_output=True, text=True, timeout=30)
        self.assertEqual(lint.returncode, 0, lint.stdout + lint.stderr)
        self.assertEqual((lint.stdout + lint.stderr).strip(), "", "promtool complaints")
        helps = set(re.findall(r"^# HELP (\S+) ", body, re.M))
        types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", body, re.M))
        samples = {re.split(r"[{ ]", l, 1)[0] for l in body.splitlines()
                   if l and not l.startswith("#")}
        self.assertTrue(samples)
        self.assertEqual(samples - helps, set(), "samples without HELP")
        self.assertEqual(samples - set(types), set(), "samples without TYPE")
        self.assertEqual(helps, set(types))
        # What Prometheus itself recorded from its scrapes of the listener.
        def metadata():
            md = self.api("/api/v1/targets/metadata", match_target='{job="sidecrypt"}')
            got = {m["metric"]: m for m in md if m["metric"].startswith("sidecrypt_")}
            return got if set(types) <= set(got) else None
        got = self.wait_api("metadata for every family", metadata)
        for name, t in types.items():
            self.assertEqual(got[name]["type"], t, name)
            self.assertTrue(got[name]["help"], name)
        print("families: %d (promtool check metrics: clean, exit 0)" % len(types))

    def test_rate_over_a_counter(self):
        q = 'rate(sidecrypt_http_requests_total{listener="metrics"}[5s])'

        def positive():
            res = self.api("/api/v1/query", query=q)["result"]
            return res if res and float(res[0]["value"][1]) > 0 else None
        res = self.wait_api(q, positive)
        print("%s = %s" % (q, res[0]["value"][1]))


if __name__ == "__main__":
    harness.main()
