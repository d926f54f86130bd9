"""Claim (issue 15.5): the admin endpoint cannot be pinned, flooded or driven by a browser, and
the read-only metrics listener can be neither.

In a namespace of its own, a running sidecrypt (admin on 127.0.0.1:9920, the metrics listener
on its default 127.0.0.1:9921):
  - 200 slowloris connections to each listener (an unfinished request, then silence) never hold
    more than the connection cap (64 per listener) of sidecrypt's fds; /live and /metrics keep
    answering during the flood; every flood connection is closed within the 5 s deadline plus
    slack, sidecrypt's fd count (/proc/PID/fd) returns to its baseline, the counters show the cap
    was hit (shed) and the deadline fired (timed_out), and requests after the flood succeed;
  - POST /reload that a page could send cross-site without a preflight (Content-Type text/plain
    or a form type, no X-Sidecrypt) is refused with 403 and the reload counter does not move; so
    is one with a cross-site Origin or Sec-Fetch-Site even with the header; X-Sidecrypt: 1 or
    Content-Type: application/json reloads;
  - GET /members with Host: evil.example (a DNS-rebinding page) is refused, with Host: 127.0.0.1
    answered;
  - `sidecrypt status`, `sidecrypt reload` and `sidecrypt check enforce-incoming` still work;
  - the metrics listener serves /metrics and /ready only: POST /reload and GET /members,
    /peers, /status there are refused and reload nothing.
"""
import json
import os
import socket
import subprocess
import time
import unittest

import admin_http
import harness

ADMIN = "127.0.0.1:9920"
METRICS = "127.0.0.1:9921"
CAP = 64
DEADLINE_S = 5.0


class AdminHardening(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_root("network namespaces, the data path's transparent sockets")
        cls.w = harness.Workdir()
        cls.sc = admin_http.SidecryptInNetns("ah", cls.w)
        try:
            cls.sc.start(ADMIN)
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if os.environ.get("SIDECRYPT_KEEP_LOGS"):
            print(cls.sc.output())
        cls.sc.stop()
        cls.w.cleanup()

    def reloads(self):
        return self.sc.metric('sidecrypt_reloads_total{result="ok"}')

    def test_slowloris_is_capped_and_closed_by_the_deadline(self):
        base = self.sc.fds()
        flood = []
        t0 = time.monotonic()
        try:
            for n, addr in enumerate((ADMIN, METRICS), start=1):
                host, port = addr.split(":")
                with self.sc.ns:
                    for _ in range(200):
                        s = socket.create_connection((host, int(port)), timeout=5)
                        s.sendall(b"GET /live HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                        flood.append(s)
                time.sleep(0.3)
                during = self.sc.fds()
                self.assertLessEqual(during, base + n * CAP + 2, "fds: %d before, %d during the "
                                     "flood of %s" % (base, during, addr))
            for _ in range(3):
                self.assertEqual(self.sc.request(ADMIN, "GET", "/live", timeout=2)[0], 200)
                self.assertEqual(self.sc.request(METRICS, "GET", "/metrics", timeout=2)[0], 200)
            # Every flood connection is closed by sidecrypt: shed at once, or by the deadline.
            closed = 0
            end = t0 + DEADLINE_S + 5
            for s in flood:
                s.settimeout(max(0.01, end - time.monotonic()))
                try:
                    closed += s.recv(1) == b""
                except ConnectionResetError:
                    closed += 1
                except socket.timeout:
                    pass
            self.assertEqual(closed, len(flood), "flood connections closed by sidecrypt")
        finally:
            for s in flood:
                s.close()
        harness.wait_for(lambda: self.sc.fds() <= base, timeout=5,
                         what="sidecrypt's fds back to %d" % base)
        took = time.monotonic() - t0
        for addr, name in ((ADMIN, "admin"), (METRICS, "metrics")):
            shed = self.sc.metric(
                'sidecrypt_http_connections_total{listener="%s",result="shed"}' % name)
            timed_out = self.sc.metric(
                'sidecrypt_http_connections_total{listener="%s",result="timed_out"}' % name)
            self.assertGreaterEqual(shed, 200 - CAP, name)
            self.assertGreaterEqual(timed_out, 1, name)
            self.assertEqual(self.sc.request(addr, "GET", "/metrics")[0], 200)
        self.assertEqual(self.sc.request(ADMIN, "GET", "/members")[0], 200)
        print("slowloris: fds %d before, %d during, back to baseline after %.1fs"
              % (base, during, took))

    def test_cross_site_reload_is_refused(self):
        before = self.reloads()
        for headers in ({"Content-Type": "text/plain"},
                        {"Content-Type": "application/x-www-form-urlencoded"},
                        {"Content-Type": "multipart/form-data; boundary=x"},
                        {},
                        {"X-Sidecrypt": "1", "Origin": "http://evil.example"},
                        {"X-Sidecrypt": "1", "Origin": "null"},
                        {"Content-Type": "application/json", "Origin": "http://evil.example"},
                        {"X-Sidecrypt": "1", "Sec-Fetch-Site": "cross-site"}):
            status, body = self.sc.request(ADMIN, "POST", "/reload", headers)
            self.assertEqual(status, 403, "%r: %s" % (headers, body))
        self.assertEqual(self.reloads(), before, "a refused request reloaded")
        status, body = self.sc.request(ADMIN, "POST", "/reload", {"X-Sidecrypt": "1"})
        self.assertEqual(status, 200, body)
        status, body = self.sc.request(ADMIN, "POST", "/reload",
                                       {"Content-Type": "application/json",
                                        "Origin": "http://" + ADMIN})
        self.assertEqual(status, 200, body)
        self.assertEqual(self.reloads(), before + 2)

    def test_rebinding_host_is_refused(self):
        for path in ("/members", "/peers", "/status", "/metrics"):
            status, body = self.sc.request(ADMIN, "GET", path, {"Host": "evil.example"})
            self.assertEqual(status, 403, path + ": " + body)
            self.assertNotIn("members", body)
        status, body = self.sc.request(ADMIN, "GET", "/members", {"Host": "evil.example:9920"})
        self.assertEqual(status, 403, body)
        status, body = self.sc.request(ADMIN, "GET", "/members", {"Host": "127.0.0.1"})
        self.assertEqual(status, 200, body)
        self.assertIn("members", json.loads(body))

    def test_cli_still_works(self):
        before = self.reloads()
        for args in (["status", "--admin", ADMIN], ["status", "--json", "--admin", ADMIN],
                     ["reload", "--admin", ADMIN]):
            with self.sc.ns:
                r = harness.run(args)
            self.assertEqual(r.returncode, 0, "%s: %s" % (args, r.stdout + r.stderr))
        self.assertEqual(self.reloads(), before + 1)
        # The verdict may be "not yet" (exit 1) on an idle proxy; 2 means it could not ask.
        with self.sc.ns:
            r = harness.run(["check", "enforce-incoming", "--admin", ADMIN])
        self.assertIn(r.returncode, (0, 1), r.stdout + r.stderr)
        self.assertIn("enforce-incoming", r.stdout + r.stderr)

    def test_metrics_listener_is_read_only(self):
        before = self.reloads()
        self.assertEqual(self.sc.request(METRICS, "POST", "/reload", {"X-Sidecrypt": "1"})[0], 405)
        for path in ("/members", "/peers", "/status", "/reload"):
            self.assertEqual(self.sc.request(METRICS, "GET", path)[0], 404, path)
        self.assertIn(self.sc.request(METRICS, "GET", "/ready")[0], (200, 503))
        status, body = self.sc.request(METRICS, "GET", "/metrics", {"Host": "10.0.0.7:9921"})
        self.assertEqual(status, 200)
        self.assertIn("# TYPE sidecrypt_up gauge", body)
        self.assertEqual(self.reloads(), before)


if __name__ == "__main__":
    harness.main()
