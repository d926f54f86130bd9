"""Claim: the privilege model of the container image and the Kubernetes manifest works, emulated
with setpriv on the built binary (no container engine here): with CAP_NET_RAW as a permitted-only
file capability (docker/Dockerfile), (1) the rules init container's shape, root with a bounding
set of NET_ADMIN only and no_new_privs, can execute the binary and install the rules, which an
effective-bit (`+ep`) file capability would forbid; (2) the sidecar's shape, uid 1337 with a
bounding set of NET_RAW only, no ambient capabilities and no_new_privs
(allowPrivilegeEscalation: false), starts, has exactly CAP_NET_RAW effective and becomes ready,
and the startup probe's command (`doctor --only admin.ready`, same identity) passes; (3) without
the file capability the same identity is refused with the reason.
"""
import os
import shutil
import signal
import subprocess
import unittest

import harness

UID = 1337
ADMIN = "127.0.0.1:19951"


class ContainerPrivileges(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.require_root("namespaces, setpriv, setcap")
        harness.require_commands("setcap", "setpriv", why="file capabilities (libcap2-bin)")

    def setUp(self):
        self.w = harness.Workdir()
        self.addCleanup(self.w.cleanup)
        os.chmod(self.w.path, 0o755)
        self.ns = "sc%dk" % (os.getpid() % 100000)
        harness.sh("ip", "netns", "add", self.ns)
        self.addCleanup(harness.sh, "ip", "netns", "del", self.ns, check=False)
        harness.sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        self.bin = {}
        for caps in ("p", "ep", "none"):
            d = os.path.join(self.w.path, caps)
            os.makedirs(d)
            os.chmod(d, 0o755)
            path = os.path.join(d, "sidecrypt")
            shutil.copy(harness.binary(), path)
            os.chmod(path, 0o755)
            if caps != "none":
                harness.sh("setcap", "cap_net_raw+" + caps, path)
            self.bin[caps] = path
        key = harness.run(["keygen"], check=True).stdout.strip()
        data = os.path.join(self.w.path, "data")
        os.makedirs(data)
        os.chown(data, UID, UID)
        self.cfg = self.w.file("proxy.toml", "\n".join([
            "[agent]", 'profile = "consul"', 'data_dir = "%s"' % data,
            "[gossip]", 'encrypt = "%s"' % key,
            "[intercept]", "install_rules = false", 'drain_time = "0s"',
            "[admin]", 'listen = "%s"' % ADMIN, ""]), mode=0o644)
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            harness.stop_process(p)
            p.log_file.close()
        for pid in harness.sh("ip", "netns", "pids", self.ns, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def init_container(self):  # root, capabilities: drop ALL, add NET_ADMIN; no_new_privs
        return ["ip", "netns", "exec", self.ns, "setpriv", "--no-new-privs",
                "--bounding-set=-all,+net_admin", "--inh-caps=-all"]

    def sidecar(self):  # uid 1337, capabilities: drop ALL, add NET_RAW; no_new_privs
        return ["ip", "netns", "exec", self.ns, "setpriv", "--reuid=%d" % UID,
                "--regid=%d" % UID, "--clear-groups", "--no-new-privs",
                "--bounding-set=-all,+net_raw", "--inh-caps=-all"]

    def run_cmd(self, argv, timeout=60):
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def test_image_privilege_model(self):
        # (1) The rules step with the image's binary; an +ep file could not even be executed.
        r = self.run_cmd(self.init_container() + [self.bin["ep"], "version"])
        self.assertNotEqual(r.returncode, 0, "+ep unexpectedly executable without NET_RAW")
        r = self.run_cmd(self.init_container() + [self.bin["p"], "rules", "install", "--config",
                                                  self.cfg])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("rules installed", r.stdout)

        # (3) Without the file capability, the sidecar identity cannot run the data path.
        r = self.run_cmd(self.sidecar() + [self.bin["none"], "run", "--config", self.cfg],
                         timeout=30)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("needs CAP_NET_RAW", r.stdout + r.stderr)

        # (2) The sidecar with the image's binary.
        log = open(os.path.join(self.w.path, "sidecar.log"), "w")
        p = subprocess.Popen(self.sidecar() + [self.bin["p"], "run", "--config", self.cfg],
                             stdout=log, stderr=subprocess.STDOUT)
        p.log_file, p.log_path = log, log.name
        self.procs.append(p)
        probe = self.sidecar() + [self.bin["p"], "doctor", "--config", self.cfg, "--only",
                                  "admin.ready"]
        harness.wait_for(lambda: self.run_cmd(probe, 20).returncode == 0, 20, interval=0.5,
                         what="the startup probe's command to pass")
        r = self.run_cmd(probe)
        self.assertIn("[  ok  ] admin.ready: http://%s/ready: rules installed, listeners bound"
                      % ADMIN, r.stdout)
        with open("/proc/%d/status" % p.pid) as f:
            status = dict(l.split(":\t", 1) for l in f.read().splitlines() if ":\t" in l)
        self.assertEqual(status["Uid"].split()[0], str(UID))
        self.assertEqual(int(status["CapEff"], 16), 1 << 13, status["CapEff"])
        self.assertEqual(int(status["CapAmb"], 16), 0)
        self.assertEqual(status["NoNewPrivs"].strip(), "1")


if __name__ == "__main__":
    harness.main()
