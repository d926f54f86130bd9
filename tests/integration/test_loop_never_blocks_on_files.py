"""Claim: nothing slow on a file stops the proxy (issue 15, item 7).

sidecrypt's config and keyring live on a FUSE filesystem (tests/integration/tools/stall_fs.py)
whose operations can be made to hang, as a slow NFS mount or a failing disk would. A plaintext
serf agent p1 behind sidecrypt and a natively encrypting serf agent n2 form one cluster.

1. A reload whose config read hangs for 6 s: meanwhile /live answers every 0.1 s poll within a
   second, and n2 never sees p1 as anything but alive (gossip keeps flowing); once the read is
   released the reload completes.
2. A key rotation (`serf keys -install` from n2) whose keyring fsync hangs for 2 s: /live keeps
   answering and p1 stays alive; the agent's answer waits for the write and then reports
   success (sealed, so n2 counts it), and the keyring file holds the new key.
3. A reload pointed at a FIFO (config path replaced by one) fails at once with a clear error and
   the running configuration stays.
Before the change (file work on the loop thread) step 1 and 2 freeze /live and the data path,
and step 3 hangs the process until something writes to the FIFO."""
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import unittest

import harness

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools")


class LoopNeverBlocksOnFiles(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_root("network namespaces, netfilter, FUSE and serf agents")
        harness.require_commands("serf", why="serf agents")
        harness.StallFs.require()
        cls.w = harness.Workdir()
        cls.lab = None
        cls.fs = None
        try:
            cls.fs = harness.StallFs(cls.w)
            cls.mnt, cls.backing = cls.fs.mnt, cls.fs.backing
            cls.lab = harness.Lab(["h1", "h2"])
            cls.k1 = harness.run(["keygen"], check=True).stdout.strip()
            cls.cfg = harness.proxy_config(os.path.join(cls.mnt, "proxy.toml"),
                                           os.path.join(cls.mnt, "data"), cls.k1)
            cls.proxy, cls.p1, cls.n2 = harness.start_proxied_and_native(
                cls.lab, cls.w, cls.cfg, cls.k1, timeout=40)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.fs is not None:
            cls.fs.release()
        if cls.lab is not None:
            cls.lab.cleanup()
            cls.lab = None
        if cls.fs is not None:
            cls.fs.close()
        harness.cleanup(None, cls.w)

    # ---- helpers ---------------------------------------------------------------------------

    def poll_live(self, seconds):
        """Starts /live polling in h1 for `seconds`; returns a function that waits and returns
        the poller's result."""
        out = os.path.join(self.w.path, "poll-%d.json" % time.time())
        p = self.lab.spawn("h1", ["/usr/bin/python3", os.path.join(TOOLS, "poll_live.py"),
                                  "http://127.0.0.1:9920/live", str(seconds), out],
                           out + ".log")

        def result():
            p.wait(timeout=seconds + 30)
            with open(out) as f:
                return json.load(f)
        return result

    def watch_members(self):
        """Polls n2's member list until stopped; returns (stop, sightings of p1 not alive)."""
        seen, stop = [], threading.Event()

        def loop():
            while not stop.is_set():
                status = harness.serf_members(self.lab, "h2").get("p1")
                if status != "alive":
                    seen.append(status)
                stop.wait(0.3)
        t = threading.Thread(target=loop, daemon=True)
        t.start()
        return lambda: (stop.set(), t.join(10), seen)[2]

    def assert_live_throughout(self, polled):
        self.assertGreater(polled["count"], 10, polled)
        self.assertEqual(polled["failures"], 0, polled)
        self.assertLess(polled["max_ms"], 1000, polled)

    # ---- tests ------------------------------------------------------------------------------

    def test_1_stalled_reload_read(self):
        log = harness.read_log(self.proxy)
        before = log.count("reload complete")
        self.fs.stall("open", "read")
        try:
            polled = self.poll_live(6)
            members = self.watch_members()
            self.proxy.send_signal(signal.SIGHUP)
            time.sleep(6)
            # The build is still waiting on the file: nothing applied yet.
            self.assertEqual(harness.read_log(self.proxy).count("reload complete"), before)
        finally:
            self.fs.release()
        harness.wait_for(lambda: harness.read_log(self.proxy).count("reload complete") > before,
                         10, what="the reload to complete once the read is released")
        self.assert_live_throughout(polled())
        self.assertEqual(members(), [], "n2 saw p1 not alive while the reload read was stalled")

    def test_2_stalled_keyring_commit(self):
        k2 = harness.run(["keygen"], check=True).stdout.strip()
        self.fs.stall("fsync")
        try:
            polled = self.poll_live(4)
            members = self.watch_members()
            install = subprocess.Popen(
                ["ip", "netns", "exec", self.lab.ns("h2"), "serf", "keys", "-install", k2],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            # The write has reached its fsync (the temporary file exists) and hangs there.
            serf_dir = os.path.join(self.backing, "data", "serf")
            harness.wait_for(lambda: any(n.startswith(".local.keyring.tmp")
                                         for n in os.listdir(serf_dir)), 3,
                             what="the keyring write to start")
            time.sleep(2)
            self.assertNotIn("applied and persisted", harness.read_log(self.proxy))
        finally:
            self.fs.release()
        out, _ = install.communicate(timeout=30)
        self.assertEqual(install.returncode, 0, out)
        self.assertIn("Successfully installed key", out)
        self.assertNotRegex(out, re.compile(r"p1.*(fail|error)", re.I))
        harness.wait_for(lambda: "applied and persisted" in harness.read_log(self.proxy), 10,
                         what="the keyring commit")
        with open(os.path.join(self.backing, "data", "serf", "local.keyring")) as f:
            self.assertIn(k2, json.load(f))
        self.assert_live_throughout(polled())
        self.assertEqual(members(), [], "n2 saw p1 not alive while the keyring write was stalled")

    def test_3_fifo_config_refused_at_once(self):
        saved = os.path.join(self.w.path, "proxy.toml.saved")
        shutil.copy(os.path.join(self.backing, "proxy.toml"), saved)
        fifo = os.path.join(self.backing, "proxy.toml")
        os.unlink(fifo)
        os.mkfifo(fifo, 0o600)
        try:
            failed = harness.read_log(self.proxy).count("reload failed")
            t0 = time.monotonic()
            self.proxy.send_signal(signal.SIGHUP)
            harness.wait_for(
                lambda: harness.read_log(self.proxy).count("reload failed") > failed, 5,
                what="the FIFO reload to fail")
            self.assertLess(time.monotonic() - t0, 5)
            self.assertIn("is a FIFO, not a regular file", harness.read_log(self.proxy))
            self.assertIsNone(self.proxy.poll())
        finally:
            os.unlink(fifo)
            shutil.copy(saved, fifo)


if __name__ == "__main__":
    harness.main()
