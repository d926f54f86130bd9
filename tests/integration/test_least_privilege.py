"""Claim: the data path runs as an unprivileged user with only CAP_NET_RAW (TPROXY mode) while a
privileged step installs the rules; without the capability it refuses to start and says why."""
import os
import unittest

import harness

UID = 1337
CAP_NET_RAW_MASK = 1 << 13


def setpriv(caps):
    base = ["setpriv", "--reuid=%d" % UID, "--regid=%d" % UID, "--clear-groups"]
    if caps:
        return base + ["--inh-caps=-all,+net_raw", "--ambient-caps=-all,+net_raw",
                       "--bounding-set=-all,+net_raw"]
    return base + ["--inh-caps=-all", "--bounding-set=-all"]


class LeastPrivilege(unittest.TestCase):
    def setUp(self):
        harness.require_root("namespaces, setpriv to an unprivileged uid")
        self.w = harness.Workdir()
        os.chmod(self.w.path, 0o755)
        self.lab = harness.Lab(["h1", "h2"])
        self.key = harness.run(["keygen"], check=True).stdout.strip()
        data = os.path.join(self.w.path, "data")
        os.makedirs(data)
        os.chown(data, UID, UID)
        self.cfg = harness.proxy_config(os.path.join(self.w.path, "p.toml"), data, self.key)
        with open(self.cfg) as f:
            body = f.read().replace("install_rules = true", "install_rules = false")
        with open(self.cfg, "w") as f:
            f.write(body)
        os.chmod(self.cfg, 0o644)

    def tearDown(self):
        self.lab.cleanup()
        self.w.cleanup()

    def test_runs_with_only_cap_net_raw(self):
        lab = self.lab
        lab.run("h1", harness.binary(), "rules", "install", "-c", self.cfg)  # privileged step
        proxy = lab.spawn("h1", setpriv(True) + [harness.binary(), "run", "-c", self.cfg],
                          os.path.join(self.w.path, "sidecrypt.log"))
        harness.wait_for(lambda: "started:" in harness.read(proxy.log_path), 10,
                         what="sidecrypt started as uid %d" % UID)
        pid = int(lab.run("h1", "pgrep", "-u", str(UID), "-f", "sidecrypt run").stdout.split()[0])
        with open("/proc/%d/status" % pid) as f:
            status = dict(l.split(":\t", 1) for l in f.read().splitlines() if ":\t" in l)
        self.assertEqual(int(status["CapEff"], 16), CAP_NET_RAW_MASK, status["CapEff"])
        self.assertEqual(status["Uid"].split()[0], str(UID))
        n1 = lab.spawn("h1", ["serf", "agent", "-node", "n1", "-bind", lab.ip("h1") + ":7946"],
                       os.path.join(self.w.path, "n1.log"))
        n2 = lab.spawn("h2", ["serf", "agent", "-node", "n2", "-bind", lab.ip("h2") + ":7946",
                              "-encrypt", self.key], os.path.join(self.w.path, "n2.log"))
        for p in (n1, n2):
            harness.wait_for(lambda p=p: "Serf agent running" in harness.read(p.log_path), 15,
                             what="serf agent")
        lab.run("h2", "serf", "join", lab.ip("h1") + ":7946")
        harness.wait_members_alive(lab, ["h1", "h2"], ["n1", "n2"])
        lab.run("h2", "serf", "event", "unprivileged-ok", "x")
        harness.wait_for(lambda: "user-event: unprivileged-ok" in harness.read(n1.log_path), 15,
                         what="event through the unprivileged proxy")

    def test_refuses_without_the_capability(self):
        r = self.lab.run("h1", *setpriv(False), harness.binary(), "run", "-c", self.cfg,
                         check=False, timeout=20)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        out = r.stdout + r.stderr
        self.assertIn("cannot start the data path", out)
        self.assertIn("needs CAP_NET_RAW", out)


if __name__ == "__main__":
    harness.main()
