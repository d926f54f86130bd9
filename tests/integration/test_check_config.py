"""Claim: check-config reports every error at once with file:line:column: key, and exits
non-zero; a valid file is accepted without creating anything."""
import os
import unittest

import harness


class CheckConfig(unittest.TestCase):
    def setUp(self):
        self.w = harness.Workdir()

    def tearDown(self):
        self.w.cleanup()

    def test_all_errors_at_once(self):
        cfg = self.w.file("proxy.toml", "\n".join([
            "[gossip]",
            'encrypt = "%s"' % ("A" * 42 + "=="),
            "encrypt_verify_incomming = false",
            "[admin]",
            'listen = "0.0.0.0:1"',
            "",
        ]))
        r = harness.run(["check-config", cfg])
        self.assertEqual(r.returncode, 2)
        lines = r.stderr.splitlines()
        self.assertIn(cfg + ":2:11: gossip.encrypt: key must be 16, 24 or 32 bytes of base64, "
                      "got 31", lines)
        self.assertIn(cfg + ":3:1: gossip.encrypt_verify_incomming: unknown key; did you mean "
                      "'encrypt_verify_incoming'?", lines)
        self.assertTrue(any(l.startswith(cfg + ":5:10: admin.listen: 0.0.0.0 is not a loopback")
                            for l in lines), lines)
        self.assertEqual(lines[-1], "3 errors")

    def test_valid_config_creates_nothing(self):
        key = harness.run(["keygen"], check=True).stdout.strip()
        data = os.path.join(self.w.path, "data")
        cfg = self.w.file("proxy.toml", '[agent]\nprofile = "serf"\ndata_dir = "%s"\n'
                          '[gossip]\nencrypt = "%s"\n' % (data, key))
        r = harness.run(["check-config", cfg])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("configuration ok", r.stdout)
        self.assertIn("intercept serf: port 7946 udp+tcp (gossip)", r.stdout)
        self.assertFalse(os.path.exists(data))

    def test_missing_key_is_explained(self):
        cfg = self.w.file("proxy.toml", '[agent]\nprofile = "serf"\ndata_dir = "%s"\n'
                          % self.w.path)
        r = harness.run(["check-config", cfg])
        self.assertEqual(r.returncode, 2)
        self.assertIn("no gossip key: set gossip.encrypt", r.stderr)

    def test_shipped_example_is_valid_apart_from_the_key(self):
        src = os.path.join(os.path.dirname(__file__), "..", "..", "proxy.toml")
        with open(src) as f:
            body = f.read()
        body = body.replace('/var/lib/sidecrypt', self.w.path)
        key = harness.run(["keygen"], check=True).stdout.strip()
        body = body.replace('# encrypt = ""', 'encrypt = "%s"' % key)
        cfg = self.w.file("proxy.toml", body)
        r = harness.run(["check-config", cfg])
        self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    harness.main()
