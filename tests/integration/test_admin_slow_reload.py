"""Claim: the admin endpoint's per-connection deadline (5 s) bounds the client, not sidecrypt's
own work: a POST /reload whose build waits on a stalled file for 7 s is still answered (the
deadline is suspended while the reload builds, then restarts for the write), and a slowloris
connection opened during the stall is still closed by its deadline.

sidecrypt runs in a namespace with its proxy.toml on tests/integration/tools/stall_fs.py (a FUSE
passthrough whose open/read wait while a gate file exists). With reads stalled,
`sidecrypt reload --admin ...` is started; after 7 s the gate is removed; the CLI prints
"reloaded", exits 0, and took more than 7 s; the reload counter moved by one.
"""
import os
import socket
import subprocess
import time
import unittest

import admin_http
import harness

ADMIN = "127.0.0.1:9920"


class AdminSlowReload(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_root("network namespaces, FUSE")
        harness.StallFs.require()
        cls.w = harness.Workdir()
        cls.fs = None
        cls.sc = None
        try:
            cls.fs = harness.StallFs(cls.w)
            cls.sc = admin_http.SidecryptInNetns("sr", cls.w, config_dir=cls.fs.mnt)
            cls.sc.start(ADMIN)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.fs is not None:
            cls.fs.release()
        if cls.sc is not None:
            cls.sc.stop()
        if cls.fs is not None:
            cls.fs.close()
        cls.w.cleanup()

    def test_slow_reload_is_answered_after_the_deadline(self):
        before = self.sc.metric('sidecrypt_reloads_total{result="ok"}')
        self.fs.stall("open", "read")
        t0 = time.monotonic()
        try:
            with self.sc.ns:
                cli = subprocess.Popen([harness.binary(), "reload", "--admin", ADMIN],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True)
                idle = socket.create_connection(("127.0.0.1", 9920), timeout=5)
            with idle:
                idle.sendall(b"GET /live HTTP/1.1\r\n")
                idle.settimeout(10)
                self.assertEqual(idle.recv(1), b"", "the idle connection outlived its deadline")
            closed_after = time.monotonic() - t0
            time.sleep(max(0.0, 7.0 - (time.monotonic() - t0)))
            self.assertIsNone(cli.poll(), "the CLI finished while the reload was stalled")
        finally:
            self.fs.release()
        out, _ = cli.communicate(timeout=30)
        took = time.monotonic() - t0
        self.assertEqual(cli.returncode, 0, out)
        self.assertIn("reloaded", out)
        self.assertGreater(took, 7.0)
        self.assertLess(closed_after, 7.0)
        self.assertEqual(self.sc.metric('sidecrypt_reloads_total{result="ok"}'), before + 1)
        print("reload answered after %.1fs; idle connection closed after %.1fs"
              % (took, closed_after))


if __name__ == "__main__":
    harness.main()
