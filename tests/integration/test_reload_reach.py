"""Claim: a reload's reach is explicit. [log] level and format changes apply at once; a change
that needs a restart ([admin] listen, [intercept] member_ports) fails the reload, naming the file,
line and key, keeps the running state (the admin endpoint still answers at its old address) and
is counted; putting the value back reloads cleanly."""
import json
import signal
import subprocess
import unittest

import harness

BASE = ["[agent]", 'profile = "serf"', 'data_dir = "%(dir)s"', "[gossip]", 'encrypt = "%(key)s"',
        "[admin]", 'listen = "127.0.0.1:9920"', "[log]"]


class ReloadReach(unittest.TestCase):
    def setUp(self):
        harness.require_root("sidecrypt run opens transparent capture sockets in a namespace")
        self.w = harness.Workdir()
        self.key = harness.run(["keygen"], check=True).stdout.strip()

    def tearDown(self):
        self.w.cleanup()

    def write(self, base=BASE, extra=()):
        body = [line % {"dir": self.w.path, "key": self.key} for line in base] + list(extra)
        return self.w.file("proxy.toml", "\n".join(body) + "\n")

    def reload_via(self, proxy, admin):
        """`sidecrypt reload` against the admin address inside the proxy's namespace."""
        return subprocess.run(["ip", "netns", "exec", proxy.ns, harness.binary(), "reload",
                               "--admin", admin], capture_output=True, text=True, timeout=30)

    def test_log_applies_restart_keys_are_refused(self):
        cfg = self.write(extra=['level = "info"'])
        proxy = harness.Proxy(cfg)
        try:
            proxy.wait_log("started")
            # Debug lines appear only once the reload applied level = "debug".
            proxy.signal(signal.SIGUSR1)
            proxy.wait_log("state:")
            self.assertNotIn("[debug] intercept serf port 7946", proxy.output())
            self.write(extra=['level = "debug"'])
            proxy.signal(signal.SIGHUP)
            proxy.wait_log("reload complete")
            proxy.signal(signal.SIGUSR1)
            proxy.wait_log("state:", count=2)
            proxy.wait_log("[debug] intercept serf port 7946")
            self.assertIn("log changed: level info -> debug", proxy.output())

            # admin.listen is bound at start: refused, naming file, line and key.
            moved = list(BASE)
            moved[moved.index('listen = "127.0.0.1:9920"')] = 'listen = "127.0.0.1:9930"'
            self.write(base=moved, extra=['level = "debug"'])
            r = self.reload_via(proxy, "127.0.0.1:9920")  # the old address still answers
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn('%s:7:1: admin.listen: changed from "127.0.0.1:9920" to '
                          '"127.0.0.1:9930", which needs a restart' % cfg, r.stdout + r.stderr)
            proxy.wait_log("reload failed, keeping the running configuration")

            # An [intercept] key, with a change a reload applies in the same file: the whole
            # reload fails, so the applied-looking change does not apply either.
            self.write(extra=['level = "info"', "[intercept]", "member_ports = [7946, 7947]"])
            proxy.signal(signal.SIGHUP)
            proxy.wait_log("reload failed", count=2)
            proxy.wait_log("%s:11:1: intercept.member_ports: changed from [7946] to [7946, 7947]"
                           % cfg)
            proxy.signal(signal.SIGUSR1)
            proxy.wait_log("(failed 2)")
            self.assertNotIn("log changed: level debug -> info", proxy.output())

            # Values put back, format switched to JSON: applies, and the next lines are JSON.
            self.write(extra=['level = "info"', 'format = "json"'])
            proxy.signal(signal.SIGHUP)
            proxy.wait_log('"msg":"reload complete"')
            tail = proxy.output().split("log changed: level debug -> info, format text -> json")
            self.assertEqual(len(tail), 2, "the log change is logged once")
            json_lines = [l for l in tail[1].splitlines() if l.strip()]
            self.assertTrue(json_lines)
            for line in json_lines:
                json.loads(line)
            self.assertIsNone(proxy.proc.poll())
        finally:
            self.assertEqual(proxy.stop(), 0)


if __name__ == "__main__":
    harness.main()
