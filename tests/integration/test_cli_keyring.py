"""Claim: the keygen and keyring commands follow Consul's rules and never damage a keyring."""
import base64
import json
import os
import stat
import unittest

import harness


class KeyringCli(unittest.TestCase):
    def setUp(self):
        self.w = harness.Workdir()
        self.file = self.w.file("serf/local.keyring")

    def tearDown(self):
        self.w.cleanup()

    def keygen(self):
        r = harness.run(["keygen"], check=True)
        return r.stdout.strip()

    def test_keygen_prints_base64_of_32_random_bytes(self):
        a, b = self.keygen(), self.keygen()
        self.assertEqual(len(a), 44)
        self.assertEqual(len(base64.b64decode(a, validate=True)), 32)
        self.assertNotEqual(a, b)

    def test_install_use_remove_list(self):
        k1, k2 = self.keygen(), self.keygen()
        r = harness.run(["keyring", "install", k1, "--file", self.file])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(self.file).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(self.file)).st_mode), 0o700)
        # Key from stdin, so it never shows in the process list.
        r = harness.run(["keyring", "install", "-", "--file", self.file], input=k2 + "\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(self.file) as f:
            self.assertEqual(json.load(f), [k1, k2])
        r = harness.run(["keyring", "remove", k1, "--file", self.file])
        self.assertEqual(r.returncode, 1)
        self.assertIn("removing the primary key is not allowed", r.stderr)
        r = harness.run(["keyring", "use", harness.run(["keygen"]).stdout.strip(), "--file",
                         self.file])
        self.assertEqual(r.returncode, 1)
        self.assertIn("requested key is not in the keyring", r.stderr)
        r = harness.run(["keyring", "use", k2, "--file", self.file])
        self.assertEqual(r.returncode, 0, r.stderr)
        r = harness.run(["keyring", "remove", k1, "--file", self.file])
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(self.file) as f:
            self.assertEqual(json.load(f), [k2])
        listing = harness.run(["keyring", "list", "--file", self.file], check=True).stdout
        self.assertIn("(1 key)", listing)
        self.assertIn("primary", listing)
        for form in harness.key_forms(k2):
            self.assertNotIn(form, listing)

    def test_use_and_remove_by_fingerprint(self):
        k1, k2 = self.keygen(), self.keygen()
        harness.run(["keyring", "install", k1, "--file", self.file], check=True)
        out = harness.run(["keyring", "install", k2, "--file", self.file], check=True).stdout
        fp2 = out.strip().splitlines()[-1].split()[1]
        harness.run(["keyring", "use", fp2, "--file", self.file], check=True)
        with open(self.file) as f:
            self.assertEqual(json.load(f), [k2, k1])

    def test_corrupt_keyring_is_never_overwritten(self):
        body = '["%s", "trunc' % self.keygen()
        self.w.file("serf/local.keyring", body)
        r = harness.run(["keyring", "install", self.keygen(), "--file", self.file])
        self.assertEqual(r.returncode, 1)
        self.assertIn("corrupt keyring file", r.stderr)
        with open(self.file) as f:
            self.assertEqual(f.read(), body)

    def test_open_permissions_are_refused(self):
        k = self.keygen()
        self.w.file("serf/local.keyring", '["%s"]' % k, mode=0o644)
        r = harness.run(["keyring", "list", "--file", self.file])
        self.assertEqual(r.returncode, 1)
        self.assertIn("permissions 0644 are too open", r.stderr)

    def test_bad_key_lengths(self):
        r = harness.run(["keyring", "install", base64.b64encode(b"x" * 31).decode(), "--file",
                         self.file])
        self.assertEqual(r.returncode, 1)
        self.assertIn("key must be 16, 24 or 32 bytes of base64, got 31", r.stderr)
        self.assertFalse(os.path.exists(self.file))

    def test_url_safe_keys_are_written_back_in_consuls_form(self):
        # `nomad operator gossip keyring generate` prints URL-safe base64; pick bytes whose
        # standard form has both '+' and '/' so the alphabets really differ.
        raw = bytes([0x10, 0x20, 0x30] + [0xfb, 0xff, 0xbf] * 9 + [0x01, 0x02])
        std = base64.b64encode(raw).decode()
        self.assertIn("+", std)
        self.assertIn("/", std)
        url = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        r = harness.run(["keyring", "install", url, "--file", self.file])
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(self.file) as f:
            self.assertEqual(json.load(f), [std])
        # use/remove take either form of the same key.
        r = harness.run(["keyring", "use", url + "=", "--file", self.file])
        self.assertEqual(r.returncode, 0, r.stderr)
        # A URL-safe key may start with '-': after '--', or from stdin.
        raw2 = bytes([0xfb, 0xff, 0xbf] * 10 + [0x01, 0x02])
        url2 = base64.urlsafe_b64encode(raw2).decode()
        self.assertTrue(url2.startswith("-"))
        r = harness.run(["keyring", "install", "--file", self.file, "--", url2])
        self.assertEqual(r.returncode, 0, r.stderr)
        r = harness.run(["keyring", "remove", "-", "--file", self.file], input=url2 + "\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        # A key mixing the alphabets is refused, without quoting it, and the file is unchanged.
        mixed = std[:-4] + "_" + std[-3:]
        r = harness.run(["keyring", "install", mixed, "--file", self.file])
        self.assertEqual(r.returncode, 1)
        self.assertIn("mixes the standard", r.stderr)
        self.assertNotIn(mixed, r.stderr + r.stdout)
        with open(self.file) as f:
            self.assertEqual(json.load(f), [std])


if __name__ == "__main__":
    harness.main()
