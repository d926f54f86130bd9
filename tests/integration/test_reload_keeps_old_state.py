"""Claim: a reload that fails (corrupt keyring, bad config) keeps the running state, says why,
counts the failure, and never touches the corrupt file; the next good reload applies."""
import signal
import unittest

import harness


class ReloadKeepsOldState(unittest.TestCase):
    def setUp(self):
        harness.require_root("sidecrypt run opens transparent capture sockets in a namespace")
        self.w = harness.Workdir()

    def tearDown(self):
        self.w.cleanup()

    def test_reload(self):
        k1 = harness.run(["keygen"], check=True).stdout.strip()
        body = "\n".join(["[agent]", 'profile = "serf"', 'data_dir = "%s"' % self.w.path,
                          "[gossip]", 'encrypt = "%s"' % k1, ""])
        cfg = self.w.file("proxy.toml", body)
        proxy = harness.Proxy(cfg)
        try:
            proxy.wait_log("started")
            ring = self.w.file("serf/local.keyring")
            corrupt = '["%s", ' % k1
            self.w.file("serf/local.keyring", corrupt)
            proxy.signal(signal.SIGHUP)
            proxy.wait_log("reload failed, keeping the running configuration")
            self.assertIn("corrupt keyring file", proxy.output())
            with open(ring) as f:
                self.assertEqual(f.read(), corrupt)
            # Stage change plus a broken config: still refused as a whole.
            self.w.file("proxy.toml", body + "[tls]\nverify_outgoing = true\n")
            proxy.signal(signal.SIGHUP)
            proxy.wait_log("reload failed", count=2)
            proxy.signal(signal.SIGUSR1)
            proxy.wait_log("(failed 2)")
            self.assertIn("encrypt_verify_outgoing=true", proxy.output())
            # Repair both; the change applies and is logged.
            self.w.file("serf/local.keyring", '["%s"]' % k1)
            self.w.file("proxy.toml", body + "encrypt_verify_outgoing = false\n")
            proxy.signal(signal.SIGHUP)
            proxy.wait_log("reload complete")
            self.assertIn("stage changed: gossip.encrypt_verify_outgoing true -> false",
                          proxy.output())
            self.assertIsNone(proxy.proc.poll())
        finally:
            self.assertEqual(proxy.stop(), 0)


if __name__ == "__main__":
    harness.main()
