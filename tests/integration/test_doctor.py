"""Claim: `sidecrypt doctor` tells a broken interception setup from a working one and prints a
fix that repairs it. In a fresh namespace (lo, plus a veth with 10.250.93.1/24 whose far end has
no address, so nothing routed there can leave): before any rule exists it fails (exit 1) with
`sidecrypt rules install --config ...` as the fix and skips the probes; once a running sidecrypt
installed its rules it passes every check (exit 0), including a TCP connect through each
intercepted port that sidecrypt's own counters confirm it accepted; tampering (a deleted nft
rule, a missing or foreign policy rule, a foreign route in its table, a foreign ACCEPT ahead of
its iptables jump, stale rules of another backend) fails the right check, and running the printed
fix verbatim makes it pass again; `--json` carries the same verdicts; a kernel without TPROXY
(simulated by an nft that refuses it) is diagnosed with `modprobe nft_tproxy`. Stopped, sidecrypt
leaves its rules (fail closed): doctor then fails only on /ready.
"""
import json
import os
import subprocess
import time
import unittest
import urllib.error
import urllib.request

import harness

PROBE = "10.250.93.2"
ADMIN = "127.0.0.1:19931"
METRICS = "127.0.0.1:19932"


def ready_status():
    try:
        with urllib.request.urlopen("http://%s/ready" % ADMIN, timeout=3) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


class Doctor(unittest.TestCase):
    count = 0

    @classmethod
    def setUpClass(cls):
        harness.require_root("network namespaces, netfilter rules, transparent sockets")
        harness.require_commands("nft", "iptables-legacy", "ip6tables-legacy", "unshare",
                                 why="rules backends and the doctor's scratch namespace")

    def setUp(self):
        self.w = harness.Workdir()
        self.addCleanup(self.w.cleanup)
        Doctor.count += 1
        self.ns = harness.Netns("sc%dd%d" % (os.getpid() % 100000, Doctor.count))
        self.addCleanup(self.ns.delete)
        with self.ns:
            harness.sh("ip", "link", "set", "lo", "up")
            harness.sh("ip", "link", "add", "sc93a", "type", "veth", "peer", "name", "sc93b")
            harness.sh("ip", "addr", "add", "10.250.93.1/24", "dev", "sc93a")
            harness.sh("ip", "link", "set", "sc93a", "up")
            harness.sh("ip", "link", "set", "sc93b", "up")
        self.key = harness.run(["keygen"], check=True).stdout.strip()
        self.proc = None

    def tearDown(self):
        if self.proc is not None and self.proc.poll() is None:
            harness.stop_process(self.proc)
        if self.proc is not None:
            self.proc.log_file.close()

    def config(self, name, backend="auto", install_rules=True):
        return self.w.file(name, "\n".join([
            "[agent]", 'profile = "consul"', 'data_dir = "%s"' % os.path.join(self.w.path, "d"),
            "[gossip]", 'encrypt = "%s"' % self.key,
            "[intercept]", 'backend = "%s"' % backend,
            "install_rules = %s" % ("true" if install_rules else "false"), 'drain_time = "0s"',
            "[admin]", 'listen = "%s"' % ADMIN, "[metrics]", 'listen = "%s"' % METRICS, ""]))

    def doctor(self, cfg, *extra, env=None):
        with self.ns:
            r = subprocess.run([harness.binary(), "doctor", "--config", cfg, "--probe-addr",
                                PROBE] + list(extra), capture_output=True, text=True,
                               timeout=120, env=env)
        return r

    def doctor_json(self, cfg, env=None):
        r = self.doctor(cfg, "--json", env=env)
        self.assertIn(r.returncode, (0, 1), r.stdout + r.stderr)
        doc = json.loads(r.stdout)
        self.assertEqual(doc["ok"], r.returncode == 0, r.stdout)
        return {c["name"]: c for c in doc["checks"]}, r

    def sh_ns(self, *args, check=True, input=None):
        with self.ns:
            return subprocess.run(list(args), capture_output=True, text=True, check=check,
                                  timeout=60, input=input)

    def run_fix(self, fix):
        """Runs a printed fix verbatim (it is shell: commands, heredocs, # comments), with
        `sidecrypt` meaning the binary under test."""
        shim = os.path.join(self.w.path, "bin")
        os.makedirs(shim, exist_ok=True)
        link = os.path.join(shim, "sidecrypt")
        if not os.path.exists(link):
            os.symlink(harness.binary(), link)
        env = dict(os.environ, PATH=shim + ":" + os.environ.get("PATH", "/usr/sbin:/usr/bin"))
        with self.ns:
            r = subprocess.run(["sh", "-e", "-c", fix], capture_output=True, text=True,
                               timeout=60, env=env)
        self.assertEqual(r.returncode, 0, "fix failed:\n%s\n%s" % (fix, r.stdout + r.stderr))

    def start_proxy(self, cfg):
        log = open(os.path.join(self.w.path, "sidecrypt.log"), "w")
        with self.ns:
            self.proc = subprocess.Popen([harness.binary(), "run", "--config", cfg], stdout=log,
                                         stderr=subprocess.STDOUT)
        self.proc.log_file = log
        self.proc.log_path = log.name
        with self.ns:
            harness.wait_for(lambda: ready_status() == 200, 20, interval=0.2,
                             what="/ready of the running sidecrypt")

    def assert_fails_with_fix(self, checks, name, detail_part, fix_part):
        self.assertIn(name, checks)
        c = checks[name]
        self.assertEqual(c["status"], "fail", c)
        self.assertIn(detail_part, c["detail"])
        self.assertIn(fix_part, c["fix"])

    def assert_all_pass(self, cfg):
        r = self.doctor(cfg)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("FAIL", r.stdout)
        self.assertIn("checks passed", r.stdout)
        return r

    def test_listening_ports_inside_the_ephemeral_range_get_the_reserve_fix(self):
        cfg = self.config("ports.toml")

        def ports_check(name="sysctl.ports"):
            r = self.doctor(cfg, "--json", "--only", "sysctl")
            return {c["name"]: c for c in json.loads(r.stdout)["checks"]}[name]
        # A fresh namespace has Linux's default range (32768-60999): nothing of ours is in it,
        # and intercept.tproxy_source_ports (16384-32767) is clear of it.
        self.assertEqual(ports_check()["status"], "ok")
        self.assertEqual(ports_check("sysctl.tproxy_ports")["status"], "ok")
        self.sh_ns("sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 65000")
        t = ports_check("sysctl.tproxy_ports")
        self.assertEqual(t["status"], "warn", t)
        self.assertIn("intercept.tproxy_source_ports=16384-32767 overlaps", t["detail"])
        c = ports_check()
        self.assertEqual(c["status"], "warn", c)
        for port in ("15001", "15006", ADMIN.rsplit(":", 1)[1]):
            self.assertIn(port, c["detail"])
        self.assertIn("metrics.listen " + METRICS.rsplit(":", 1)[1], c["detail"])
        self.assertIn("net.ipv4.ip_local_reserved_ports=", c["fix"])
        self.run_fix(c["fix"])  # the printed fix, verbatim
        self.assertEqual(ports_check()["status"], "ok")

    def test_nft_before_and_after_rules_and_repairs(self):
        cfg = self.config("nft.toml", backend="nft")
        install_fix = "sidecrypt rules install --config " + cfg

        # 1. Nothing installed, nothing running.
        r = self.doctor(cfg)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("[ FAIL ] rules.netfilter: nft table inet sidecrypt is missing", r.stdout)
        self.assertIn("fix: " + install_fix, r.stdout)
        self.assertIn("[ FAIL ] admin.ready: sidecrypt is not running here", r.stdout)
        self.assertIn("fix: systemctl start sidecrypt", r.stdout)
        self.assertIn("[ skip ] probe.tcp.%s:8300" % PROBE, r.stdout)
        self.assertRegex(r.stdout, r"\[  ok  \] kernel: TPROXY mode: sidecrypt's whole ruleset "
                                   r"\(nft\) loads in a scratch network namespace")
        checks, _ = self.doctor_json(cfg)
        self.assert_fails_with_fix(checks, "rules.policy",
                                   "ip -4 rule pref 100 fwmark 0x539 lookup 133 is missing",
                                   install_fix)
        for c in checks.values():
            if c["status"] == "fail":
                self.assertTrue(c["fix"].strip(), c)
        # The doctor changed nothing: no table, no rule appeared (its trial ran elsewhere).
        self.assertNotEqual(self.sh_ns("nft", "list", "table", "inet", "sidecrypt",
                                       check=False).returncode, 0)
        self.assertNotIn("lookup 133", self.sh_ns("ip", "rule").stdout)

        # 2. A running sidecrypt installs its rules: everything passes, probes included.
        self.start_proxy(cfg)
        r = self.assert_all_pass(cfg)
        for port in (8300, 8301):
            self.assertIn("[  ok  ] probe.tcp.%s:%d: a connection to %s:%d was taken over by "
                          "sidecrypt" % (PROBE, port, PROBE, port), r.stdout)
        self.assertIn("[  ok  ] rules.netfilter: nft table inet sidecrypt present and intact",
                      r.stdout)
        self.assertRegex(r.stdout, r"capabilities.proxy: sidecrypt run \(pid %d\) has "
                                   r"CAP_NET_RAW" % self.proc.pid)
        checks, _ = self.doctor_json(cfg)
        self.assertTrue(all(c["status"] in ("ok", "info") for c in checks.values()), checks)

        # 3. One nft rule deleted: not intact, the line is named, the fix repairs it.
        listing = self.sh_ns("nft", "-a", "list", "chain", "inet", "sidecrypt", "output").stdout
        handle = [l for l in listing.splitlines() if "udp sport" in l][0].split("handle ")[1]
        self.sh_ns("nft", "delete", "rule", "inet", "sidecrypt", "output", "handle", handle)
        checks, r = self.doctor_json(cfg)
        self.assertEqual(r.returncode, 1)
        self.assert_fails_with_fix(checks, "rules.netfilter",
                                   "missing:    udp sport 8301 meta mark set 0x00000539",
                                   install_fix)
        self.assertEqual(checks["probe.tcp.%s:8300" % PROBE]["status"], "skip")
        self.run_fix(checks["rules.netfilter"]["fix"])
        self.assert_all_pass(cfg)

        # 4. Policy routing: IPv6 rule gone, our mark under a foreign preference, a foreign
        #    route in our table.
        self.sh_ns("ip", "-6", "rule", "del", "pref", "100", "fwmark", "0x539", "lookup", "133")
        self.sh_ns("ip", "-4", "rule", "add", "pref", "300", "fwmark", "0x539", "lookup", "133")
        self.sh_ns("ip", "-4", "route", "add", "local", "10.250.94.0/24", "dev", "lo", "table",
                   "133")
        checks, r = self.doctor_json(cfg)
        self.assertEqual(r.returncode, 1)
        c = checks["rules.policy"]
        self.assertEqual(c["status"], "fail")
        self.assertIn("ip -6 rule pref 100 fwmark 0x539 lookup 133 is missing", c["detail"])
        self.assertIn("unexpected '300:\tfrom all fwmark 0x539 lookup 133'", c["detail"])
        self.assertIn("unexpected: local 10.250.94.0/24 dev lo", c["detail"])
        self.assertIn("ip -4 rule del pref 300 from all fwmark 0x539 lookup 133", c["fix"])
        self.assertIn("ip -4 route flush table 133", c["fix"])
        self.run_fix(c["fix"])
        self.assert_all_pass(cfg)

        # 5. Stale rules of another backend (an old install with iptables-legacy): doctor sees
        #    both and its fix leaves exactly one set.
        legacy = self.config("legacy.toml", backend="iptables-legacy")
        self.sh_ns(harness.binary(), "rules", "install", "--config", legacy)
        checks, r = self.doctor_json(cfg)
        self.assertEqual(r.returncode, 1)
        c = checks["rules.stale"]
        self.assertEqual(c["status"], "fail")
        self.assertIn("traffic would be intercepted twice", c["detail"])
        self.run_fix(c["fix"])
        self.assertNotIn("SIDECRYPT", self.sh_ns("iptables-legacy-save").stdout +
                         self.sh_ns("ip6tables-legacy-save").stdout)
        self.assert_all_pass(cfg)

        # 6. Stopped: the rules stay (fail closed); only /ready fails, the probes are skipped.
        self.assertEqual(harness.stop_process(self.proc), 0)
        r = self.doctor(cfg)
        self.assertEqual(r.returncode, 1)
        self.assertIn("[  ok  ] rules.netfilter", r.stdout)
        self.assertIn("[  ok  ] rules.policy", r.stdout)
        self.assertIn("[ FAIL ] admin.ready", r.stdout)
        self.assertIn("[ skip ] probe.tcp.%s:8301: not run: sidecrypt is not ready" % PROBE,
                      r.stdout)
        self.assertEqual(r.stdout.count("[ FAIL ]"), 1, r.stdout)

    def test_iptables_legacy_jump_order_and_contents(self):
        cfg = self.config("legacy.toml", backend="iptables-legacy")
        install_fix = "sidecrypt rules install --config " + cfg
        checks, r = self.doctor_json(cfg)
        self.assert_fails_with_fix(checks, "rules.netfilter", "sidecrypt's chains are missing",
                                   install_fix)
        self.start_proxy(cfg)
        r = self.assert_all_pass(cfg)
        self.assertIn("iptables-legacy: sidecrypt's chains and jumps present and intact",
                      r.stdout)
        # A foreign ACCEPT ahead of sidecrypt's jump, a rule removed from its chain, one added.
        self.sh_ns("iptables-legacy", "-t", "mangle", "-I", "PREROUTING", "1", "-p", "tcp",
                   "--dport", "22", "-j", "ACCEPT")
        self.sh_ns("iptables-legacy", "-t", "mangle", "-D", "SIDECRYPT_OUT", "-p", "udp", "-m",
                   "multiport", "--sports", "8301", "-j", "MARK", "--set-mark", "0x539")
        self.sh_ns("ip6tables-legacy", "-t", "mangle", "-A", "SIDECRYPT_PRE", "-p", "tcp", "-j",
                   "ACCEPT")
        checks, r = self.doctor_json(cfg)
        c = checks["rules.netfilter"]
        self.assertEqual(c["status"], "fail", c)
        self.assertIn("a foreign rule ends PREROUTING before sidecrypt's jump: -A PREROUTING -p "
                      "tcp -m tcp --dport 22 -j ACCEPT", c["detail"])
        self.assertIn("missing:    -A SIDECRYPT_OUT -p udp -m multiport --sports 8301", c["detail"])
        self.assertIn("unexpected: -A SIDECRYPT_PRE -p tcp -j ACCEPT", c["detail"])
        self.assertEqual(c["fix"], install_fix)
        self.run_fix(c["fix"])
        self.assert_all_pass(cfg)
        # The foreign rule is still there, now behind sidecrypt's jump.
        pre = [l for l in self.sh_ns("iptables-legacy-save", "-t", "mangle").stdout.splitlines()
               if l.startswith("-A PREROUTING")]
        self.assertEqual(pre[0], "-A PREROUTING -j SIDECRYPT_PRE")
        self.assertIn("-A PREROUTING -p tcp -m tcp --dport 22 -j ACCEPT", pre)

    def test_kernel_without_tproxy_is_diagnosed(self):
        # An nft that refuses any ruleset using tproxy stands in for a kernel without
        # nft_tproxy (module loading is global, so the real thing cannot be removed here).
        shim = os.path.join(self.w.path, "fakebin")
        os.makedirs(shim)
        real_nft = harness.sh("sh", "-c", "command -v nft").stdout.strip()
        with open(os.path.join(shim, "nft"), "w") as f:
            f.write("#!/bin/sh\n"
                    "if [ \"$1\" = -f ]; then\n"
                    "  in=$(cat); case \"$in\" in *tproxy*)\n"
                    "    echo 'Error: Could not process rule: No such file or directory' >&2;"
                    " exit 1;; esac\n"
                    "  printf '%%s\\n' \"$in\" | exec %s \"$@\"\n"
                    "fi\nexec %s \"$@\"\n" % (real_nft, real_nft))
        os.chmod(os.path.join(shim, "nft"), 0o755)
        env = dict(os.environ, PATH=shim + ":" + os.environ.get("PATH", "/usr/sbin:/usr/bin"))
        cfg = self.config("nft.toml", backend="nft")
        checks, r = self.doctor_json(cfg, env=env)
        c = checks["kernel"]
        self.assertEqual(c["status"], "fail", c)
        self.assertIn("the kernel lacks nft tproxy", c["detail"])
        self.assertNotIn("socket match", c["detail"])
        self.assertTrue(c["fix"].startswith("modprobe nft_tproxy"), c["fix"])


if __name__ == "__main__":
    harness.main()
