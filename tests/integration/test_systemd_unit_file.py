"""Claim (about the files only): packaging/systemd holds a unit and drop-in that systemd's own
checker accepts and that spell out the deployment rules. `systemd-analyze verify` passes with no
warning (ExecStart pointing at the built binary); the agent's drop-in is accepted beside the unit
and makes the agent Want= and start After= sidecrypt and refuse to start unless sidecrypt is
active (no Requires=/BindsTo=/PartOf=/Requisite=, which pass sidecrypt's automatic restarts on to
the agent on systemd < 254); `systemd-analyze security --offline` rates the unit's exposure at
most 2.0; the unit is Type=notify with a watchdog, reloads through `sidecrypt reload`, installs
the rules in a privileged ExecStartPre and never removes them on stop (fail closed), runs as the
sidecrypt user with CAP_NET_RAW only, NoNewPrivileges, ProtectSystem=strict, the system call
filter without @privileged, and generous LimitNOFILE. The sysusers and tmpfiles files create the
user and /etc/sidecrypt (as root; skipped otherwise). Needs no namespace and proves nothing about
a live systemd: tests/engines/test_systemd_nspawn.py boots one and checks the behaviour.
"""
import grp
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import harness

UNIT_DIR = os.path.join(harness.REPO_ROOT, "packaging", "systemd")


def parse_unit(path):
    """{section: {key: [values]}} (keys may repeat; an empty assignment resets the list)."""
    out, section = {}, None
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = out.setdefault(line[1:-1], {})
                continue
            key, _, value = line.partition("=")
            values = section.setdefault(key.strip(), [])
            if value.strip() == "":
                values.clear()
            else:
                values.append(value.strip())
    return out


class SystemdUnit(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_commands("systemd-analyze", why="unit verification (Debian: systemd)")
        cls.unit = parse_unit(os.path.join(UNIT_DIR, "sidecrypt.service"))

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sidecrypt-unit-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def copy_unit(self):
        """The shipped unit with /usr/bin/sidecrypt replaced by the binary under test (verify
        checks that every Exec*= command exists and is executable)."""
        with open(os.path.join(UNIT_DIR, "sidecrypt.service")) as f:
            text = f.read()
        self.assertIn("/usr/bin/sidecrypt ", text)
        path = os.path.join(self.tmp, "sidecrypt.service")
        with open(path, "w") as f:
            f.write(text.replace("/usr/bin/sidecrypt ", harness.binary() + " "))
        return path

    def verify(self, *units):
        return subprocess.run(["systemd-analyze", "verify", "--man=no"] + list(units),
                              capture_output=True, text=True, timeout=60, cwd=self.tmp)

    def test_verify_clean(self):
        r = self.verify(self.copy_unit())
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual((r.stdout + r.stderr).strip(), "", "verify printed warnings")

    def test_agent_drop_in_waits_for_sidecrypt(self):
        with open(os.path.join(self.tmp, "consul.service"), "w") as f:
            f.write("[Unit]\nDescription=Consul agent (stand-in)\n[Service]\n"
                    "ExecStart=/bin/sleep infinity\n")
        os.makedirs(os.path.join(self.tmp, "consul.service.d"))
        shutil.copy(os.path.join(UNIT_DIR, "consul.service.d", "10-sidecrypt.conf"),
                    os.path.join(self.tmp, "consul.service.d"))
        self.copy_unit()
        r = self.verify("consul.service", "sidecrypt.service")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual((r.stdout + r.stderr).strip(), "")
        drop = parse_unit(os.path.join(self.tmp, "consul.service.d", "10-sidecrypt.conf"))
        self.assertEqual(drop["Unit"]["Wants"], ["sidecrypt.service"])
        self.assertEqual(drop["Unit"]["After"], ["sidecrypt.service"])
        for key in ("Requires", "BindsTo", "PartOf", "Requisite", "StopPropagatedFrom"):
            self.assertNotIn(key, drop["Unit"], key)
        # The start gate runs with full privileges ('+'), whatever the agent's own sandbox.
        self.assertEqual(drop["Service"]["ExecStartPre"],
                         ["+/usr/bin/systemctl is-active --quiet sidecrypt.service"])
        self.assertIn("consul.service", " ".join(self.unit["Unit"]["Before"]))

    def test_security_exposure(self):
        r = subprocess.run(["systemd-analyze", "security", "--offline=yes", self.copy_unit()],
                           capture_output=True, text=True, timeout=60, cwd=self.tmp)
        m = re.search(r"Overall exposure level for sidecrypt\.service: ([0-9.]+)", r.stdout)
        self.assertIsNotNone(m, r.stdout + r.stderr)
        self.assertLessEqual(float(m.group(1)), 2.0, r.stdout)

    def test_deployment_rules(self):
        s = self.unit["Service"]
        self.assertEqual(s["Type"], ["notify"])
        self.assertEqual(s["NotifyAccess"], ["main"])
        self.assertTrue(s["WatchdogSec"] and s["WatchdogSec"][0] not in ("0", "infinity"))
        self.assertEqual(s["ExecStart"],
                         ["/usr/bin/sidecrypt run --config /etc/sidecrypt/proxy.toml"])
        self.assertEqual(s["ExecReload"],
                         ["/usr/bin/sidecrypt reload --config /etc/sidecrypt/proxy.toml"])
        # Rules: installed with full privileges before start; never removed on stop.
        self.assertEqual(s["ExecStartPre"],
                         ["+/usr/bin/sidecrypt rules install --config /etc/sidecrypt/proxy.toml"])
        for key in ("ExecStop", "ExecStopPost"):
            self.assertNotIn(key, s)
        self.assertEqual(s["Restart"], ["on-failure"])
        # Least privilege.
        self.assertEqual(s["User"], ["sidecrypt"])
        self.assertEqual(s["AmbientCapabilities"], ["CAP_NET_RAW"])
        self.assertEqual(s["CapabilityBoundingSet"], ["CAP_NET_RAW"])
        for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                           ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                           ("PrivateDevices", "yes"), ("ProtectKernelModules", "yes"),
                           ("ProtectKernelTunables", "yes"), ("RestrictNamespaces", "yes"),
                           ("MemoryDenyWriteExecute", "yes"), ("StateDirectory", "sidecrypt")):
            self.assertEqual(s.get(key), [value], key)
        # @privileged (capset among it) stays denied: the proxy execs no `ip` to need it.
        self.assertEqual(s["SystemCallFilter"], ["@system-service", "~@privileged @resources"])
        self.assertGreaterEqual(int(s["LimitNOFILE"][0]), 524288)
        self.assertNotIn("PrivateNetwork", s)  # the host's namespace is the point
        self.assertNotIn("DynamicUser", s)

    @unittest.skipUnless(os.geteuid() == 0, "systemd-sysusers/-tmpfiles --root chown as root")
    def test_sysusers_and_tmpfiles(self):
        root = os.path.join(self.tmp, "root")
        os.makedirs(os.path.join(root, "etc"))
        for kind, name in (("sysusers.d", "sidecrypt.sysusers"),
                           ("tmpfiles.d", "sidecrypt.tmpfiles")):
            d = os.path.join(root, "usr", "lib", kind)
            os.makedirs(d)
            shutil.copy(os.path.join(UNIT_DIR, name), os.path.join(d, "sidecrypt.conf"))
        r = subprocess.run(["systemd-sysusers", "--root=" + root], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(os.path.join(root, "etc", "passwd")) as f:
            user = [l for l in f.read().splitlines() if l.startswith("sidecrypt:")]
        self.assertEqual(len(user), 1)
        fields = user[0].split(":")
        self.assertLess(int(fields[2]), 1000, "a system user")
        self.assertEqual(fields[5:], ["/var/lib/sidecrypt", "/usr/sbin/nologin"])
        r = subprocess.run(["systemd-tmpfiles", "--root=" + root, "--create"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        st = os.stat(os.path.join(root, "etc", "sidecrypt"))
        self.assertEqual(st.st_mode & 0o777, 0o750)
        self.assertEqual((st.st_uid, st.st_gid), (0, int(fields[3])))


if __name__ == "__main__":
    harness.main()
