"""Claim: `sidecrypt rules install` / `rules remove` are idempotent and touch only sidecrypt's own
state, for each backend (nft, iptables-nft, iptables-legacy): in a fresh namespace holding
foreign rules (iptables mangle rules, a native nft table, `ip rule`s at pref 1000 and at
sidecrypt's own pref 100), installing twice gives an identical ruleset dump, foreign rules
survive install unchanged, removing twice succeeds and leaves exactly the foreign state, and
`rules print` prints the plan without changing anything.

The dump: `nft list ruleset`, `ip[6]tables-{nft,legacy}-save` (comment lines dropped, packet
counters zeroed), `ip -4/-6 rule`, `ip -4/-6 route show table 133`.
"""
import os
import re
import subprocess
import unittest

import harness

TABLE = "133"


class RulesInstallRemove(unittest.TestCase):
    BACKENDS = ["nft", "iptables-nft", "iptables-legacy"]

    @classmethod
    def setUpClass(cls):
        harness.require_root("network namespaces and netfilter")
        harness.require_commands("nft", "iptables-nft", "iptables-legacy", "ip6tables-nft",
                                 "ip6tables-legacy", why="every rules backend")
        cls.w = harness.Workdir()
        cls.key = harness.run(["keygen"], check=True).stdout.strip()
        cls.ns = None

    @classmethod
    def tearDownClass(cls):
        cls.w.cleanup()

    def setUp(self):
        self.ns = "sc%dr%d" % (os.getpid() % 100000, self.BACKENDS.index(self.backend_name()))
        harness.sh("ip", "netns", "add", self.ns)
        self.addCleanup(self.drop_namespace)
        # IPv6 local routes (route replace local ::/0 dev lo) need lo up.
        self.sh("ip", "link", "set", "lo", "up")

    def backend_name(self):
        return self._testMethodName[len("test_backend_"):].replace("_", "-")

    def drop_namespace(self):
        for pid in harness.sh("ip", "netns", "pids", self.ns, check=False).stdout.split():
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        harness.sh("ip", "netns", "del", self.ns, check=False)

    def sh(self, *args, check=True, input=None):
        return subprocess.run(["ip", "netns", "exec", self.ns] + list(args), capture_output=True,
                              text=True, check=check, timeout=30, input=input)

    def sidecrypt(self, *args):
        return self.sh(harness.binary(), *args, check=False)

    def config(self, backend):
        path = os.path.join(self.w.path, "%s.toml" % backend)
        with open(path, "w") as f:
            f.write("\n".join([
                "[agent]", 'profile = "serf"', 'data_dir = "%s"' % os.path.join(self.w.path, "d"),
                "[gossip]", 'encrypt = "%s"' % self.key,
                "[intercept]", 'backend = "%s"' % backend, ""]))
        return path

    def dump(self):
        out = {}
        r = self.sh("nft", "list", "ruleset", check=False)
        out["nft"] = re.sub(r"counter packets \d+ bytes \d+", "counter", r.stdout)
        for tool in ("iptables-nft-save", "ip6tables-nft-save", "iptables-legacy-save",
                     "ip6tables-legacy-save"):
            r = self.sh(tool, check=False)
            lines = [re.sub(r"\[\d+:\d+\]", "[0:0]", l) for l in r.stdout.splitlines()
                     if not l.startswith("#")]
            out[tool] = "\n".join(lines)
        for fam in ("-4", "-6"):
            out["rule" + fam] = self.sh("ip", fam, "rule", "list", check=False).stdout
            out["route" + fam] = self.sh("ip", fam, "route", "show", "table", TABLE,
                                         check=False).stdout
        return out

    def add_foreign_state(self, backend):
        ipt = "iptables-legacy" if backend == "iptables-legacy" else "iptables-nft"
        for bin in (ipt, ipt.replace("iptables", "ip6tables")):
            self.sh(bin, "-t", "mangle", "-A", "OUTPUT", "-p", "udp", "--dport", "53",
                    "-j", "ACCEPT")
            self.sh(bin, "-t", "mangle", "-A", "PREROUTING", "-p", "tcp", "--dport", "22",
                    "-j", "ACCEPT")
        self.sh(ipt, "-t", "mangle", "-A", "OUTPUT", "-p", "icmp", "-j", "ACCEPT")
        self.sh("nft", "-f", "-", input="table inet foreign {\n chain out {\n"
                "  type filter hook output priority 0; policy accept;\n"
                "  tcp dport 7946 counter accept\n }\n}\n")
        self.sh("ip", "-4", "rule", "add", "pref", "1000", "fwmark", "0x99", "lookup", "200")
        self.sh("ip", "-6", "rule", "add", "pref", "1000", "fwmark", "0x99", "lookup", "200")
        # Same preference as sidecrypt's own rule: remove must match the whole rule, not pref.
        self.sh("ip", "-4", "rule", "add", "pref", "100", "from", "10.250.0.9", "lookup", "main")

    def assert_no_residue(self, dump, when):
        for k, text in dump.items():
            for word in ("sidecrypt", "SIDECRYPT", "0x539", "lookup 133", "15001", "15006"):
                self.assertNotIn(word, text, "%s: %s still mentions %s:\n%s"
                                 % (when, k, word, text))
        self.assertEqual(dump["route-4"] + dump["route-6"], "", when)

    def check_backend(self, backend):
        cfg = self.config(backend)
        # A clean namespace: install then remove leaves nothing of sidecrypt's (iptables keeps
        # the empty built-in mangle chains it created, as any iptables command would).
        for op in ("install", "remove"):
            r = self.sidecrypt("rules", op, "-c", cfg)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assert_no_residue(self.dump(), "clean namespace after install+remove")
        self.add_foreign_state(backend)
        foreign = self.dump()

        r = self.sidecrypt("rules", "print", "-c", cfg)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("# backend: " + backend, r.stdout)
        self.assertIn("ip -4 rule add pref 100 fwmark 0x539 lookup 133", r.stdout)
        self.assertIn("ip -6 route replace local ::/0 dev lo table 133", r.stdout)
        if backend == "nft":
            self.assertIn("nft -f -", r.stdout)
            self.assertIn("table inet sidecrypt {", r.stdout)
        else:
            self.assertIn("%s-restore --noflush" % backend, r.stdout)
            self.assertIn("-j SIDECRYPT_PRE", r.stdout)
        self.assertEqual(self.dump(), foreign, "rules print changed the namespace")

        r = self.sidecrypt("rules", "install", "-c", cfg)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("rules installed (%s" % backend, r.stdout)
        first = self.dump()
        r = self.sidecrypt("rules", "install", "-c", cfg)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        second = self.dump()
        for k in first:
            self.assertEqual(second[k], first[k], "second install changed %s" % k)
        # Something was installed, in the right place.
        self.assertRegex(first["rule-4"], r"100:\s+from all fwmark 0x539 lookup 133")
        self.assertEqual(first["rule-4"].count("fwmark 0x539 lookup 133"), 1)
        self.assertEqual(first["rule-6"].count("fwmark 0x539 lookup 133"), 1)
        self.assertIn("local default dev lo", first["route-4"])
        self.assertIn("local default dev lo", first["route-6"])
        if backend == "nft":
            self.assertIn("table inet sidecrypt", first["nft"])
        else:
            self.assertIn(":SIDECRYPT_PRE", first[backend + "-save"])
            self.assertIn(":SIDECRYPT_PRE", first[backend.replace("iptables", "ip6tables") +
                                                   "-save"])
            self.assertRegex(first[backend + "-save"],
                             r"\*mangle\n(:.*\n)*-A PREROUTING -j SIDECRYPT_PRE\n")
        # Every foreign line is still there.
        for k, text in foreign.items():
            for line in text.splitlines():
                self.assertIn(line, first[k].splitlines(), "install lost foreign %s: %r"
                              % (k, line))

        for attempt in ("first", "second"):
            r = self.sidecrypt("rules", "remove", "-c", cfg)
            self.assertEqual(r.returncode, 0, "%s remove: %s" % (attempt, r.stdout + r.stderr))
            self.assertIn("rules removed (%s" % backend, r.stdout)
            after = self.dump()
            for k in foreign:
                self.assertEqual(after[k], foreign[k],
                                 "after the %s remove, %s is not the foreign state" % (attempt, k))
            self.assert_no_residue(after, "after the %s remove" % attempt)

    def test_backend_nft(self):
        self.check_backend("nft")

    def test_backend_iptables_nft(self):
        self.check_backend("iptables-nft")

    def test_backend_iptables_legacy(self):
        self.check_backend("iptables-legacy")


if __name__ == "__main__":
    harness.main()
