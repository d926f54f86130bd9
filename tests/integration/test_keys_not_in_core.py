"""Claim (issue 15, item 8): gossip keys never sit in memory a core dump contains.

A plaintext serf agent behind sidecrypt (p1, key K1 from `encrypt`) and a natively encrypting
serf agent (n2, keyring file [K1]) form a cluster. From n2, Serf's own tooling rotates the keys
through the running proxy: `serf keys -install K2`, `-use K2`, `-remove K1`, `-install K3`,
`-remove K3`, `-list`; then `sidecrypt reload` re-reads the keyring file. Each step must report
success from both members. Then, as root, `gcore` (gdb, which leaves out MADV_DONTDUMP pages as
the kernel does) writes a core of the running proxy, and the core is searched for every key ever
used - the primary K2 and the removed K1 and K3 - in raw and in base64 form. None may be found:
key bytes live only in libsodium's locked, don't-dump pages and every temporary is wiped.

The process also sets RLIMIT_CORE to 0 (soft and hard; checked in /proc/<pid>/limits) and makes
itself non-dumpable (prctl PR_SET_DUMPABLE 0; unit-tested, and logged at start). Root can still
attach a debugger to a non-dumpable process, which is why the core search above is the real
check.
"""
import base64
import os
import re
import unittest

import harness

HOSTS = {"p1": "h1", "n2": "h2"}


class KeysNotInCore(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_root("network namespaces, netfilter, serf agents and gcore")
        harness.require_commands("serf", "gcore", why="serf agents and a core of the proxy")
        cls.w = harness.Workdir()
        cls.lab = None
        try:
            cls.lab = harness.Lab(["h1", "h2"])
            cls.k1, cls.k2, cls.k3 = (harness.run(["keygen"], check=True).stdout.strip()
                                      for _ in range(3))
            cls.cfg = harness.proxy_config(os.path.join(cls.w.path, "p1.toml"),
                                           os.path.join(cls.w.path, "data-p1"), cls.k1)
            cls.proxy, cls.agent, cls.native = harness.start_proxied_and_native(
                cls.lab, cls.w, cls.cfg, cls.k1, timeout=30)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        harness.cleanup(cls.lab, cls.w)

    def keys(self, *args):
        r = self.lab.run("h2", "serf", "keys", *args, check=False, timeout=30)
        self.assertEqual(r.returncode, 0, "serf keys %s:\n%s%s" % (args, r.stdout, r.stderr))
        return r.stdout

    def test_1_rotation_then_core_holds_no_key(self):
        self.keys("-install", self.k2)
        self.keys("-use", self.k2)
        self.keys("-remove", self.k1)
        self.keys("-install", self.k3)
        self.keys("-remove", self.k3)
        listed = self.keys("-list")
        self.assertIn(self.k2, listed)
        self.assertNotIn(self.k1, listed)
        r = self.lab.run("h1", harness.binary(), "reload", "-c", self.cfg, check=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        harness.wait_members_alive(self.lab, ["h1", "h2"], ["p1", "n2"], timeout=20)
        self.assertIsNone(self.proxy.poll(), harness.read_log(self.proxy)[-2000:])

        core = os.path.join(self.w.path, "core")
        r = harness.sh("gcore", "-o", core, str(self.proxy.pid), check=False, timeout=120)
        path = "%s.%d" % (core, self.proxy.pid)
        self.assertTrue(os.path.exists(path), "gcore wrote no core:\n%s%s" % (r.stdout, r.stderr))
        with open(path, "rb") as f:
            data = f.read()
        if not os.environ.get("SIDECRYPT_KEEP_LOGS"):
            os.unlink(path)
        self.assertGreater(len(data), 1 << 20, "the core is implausibly small")
        self.assertIsNone(self.proxy.poll(), "gcore stopped the proxy")
        found = []
        for name, key in (("K1 (removed, was the config's encrypt)", self.k1),
                          ("K2 (primary)", self.k2), ("K3 (installed, removed)", self.k3)):
            raw = base64.b64decode(key)
            for form, needle in (("raw", raw), ("base64", key.encode()),
                                 ("base64 without padding", key.rstrip("=").encode())):
                at = [m.start() for m in re.finditer(re.escape(needle), data)]
                if at:
                    found.append("%s in %s form: %d time(s) at core offsets %s"
                                 % (name, form, len(at), ",".join(hex(x) for x in at[:20])))
        self.assertEqual(found, [], "keys in the core of the running proxy (%d bytes)" % len(data))

    def test_2_not_dumpable_no_core_limit(self):
        pid = self.proxy.pid
        with open("/proc/%d/limits" % pid) as f:
            limits = f.read()
        core = re.search(r"^Max core file size\s+(\S+)\s+(\S+)", limits, re.M)
        self.assertEqual(core.groups(), ("0", "0"), limits)
        self.assertIn("core dumps off", harness.read_log(self.proxy))


if __name__ == "__main__":
    harness.main()
