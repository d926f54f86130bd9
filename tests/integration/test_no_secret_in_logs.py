"""Claim: at the most verbose log level, in text and JSON, through start, state dump, reload
(including a key change) and shutdown, no form of any key ever appears in sidecrypt's output;
keys show only as fingerprints."""
import json
import signal
import subprocess
import unittest

import harness


class NoSecretInLogs(unittest.TestCase):
    def setUp(self):
        harness.require_root("sidecrypt run opens transparent capture sockets in a namespace")
        self.w = harness.Workdir()

    def tearDown(self):
        self.w.cleanup()

    def exercise(self, fmt):
        k1 = harness.run(["keygen"], check=True).stdout.strip()
        k2 = harness.run(["keygen"], check=True).stdout.strip()
        cfg = self.w.file(fmt + ".toml", "\n".join([
            "[agent]", 'profile = "consul"', "server = true",
            'data_dir = "%s/%s"' % (self.w.path, fmt),
            "[gossip]", 'encrypt = "%s"' % k1,
            "[log]", 'level = "trace"', 'format = "%s"' % fmt, ""]))
        outputs = []
        outputs.append(harness.run(["check-config", cfg]).stdout)
        proxy = harness.Proxy(cfg)
        try:
            proxy.wait_log("started")
            proxy.signal(signal.SIGUSR1)
            proxy.wait_log("state:")
            lan = "%s/%s/serf/local.keyring" % (self.w.path, fmt)
            r = harness.run(["keyring", "install", k2, "--file", lan], check=True)
            outputs.append(r.stdout + r.stderr)
            r = harness.run(["keyring", "use", k2, "--file", lan], check=True)
            outputs.append(r.stdout + r.stderr)
            proxy.signal(signal.SIGHUP)
            proxy.wait_log("reload complete")
        finally:
            self.assertEqual(proxy.stop(), 0)
        log = proxy.output()
        outputs.append(log)
        everything = "\n".join(outputs)
        for key in (k1, k2):
            for form in harness.key_forms(key):
                self.assertNotIn(form, everything)
        # The log does say which keys are in use, by fingerprint, and what changed.
        self.assertIn("keyring changed: lan", log)
        self.assertIn("(primary)", log)
        return log

    def test_text(self):
        log = self.exercise("text")
        self.assertIn("[debug] intercept serf_lan port 8301", log)

    def test_json_lines_parse(self):
        log = self.exercise("json")
        lines = [l for l in log.splitlines() if l.strip()]
        self.assertTrue(lines)
        for line in lines:
            obj = json.loads(line)
            self.assertIn("msg", obj)
            self.assertIn("level", obj)


if __name__ == "__main__":
    harness.main()
