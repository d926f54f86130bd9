"""Claim: sidecrypt speaks systemd's notification protocol on its own (no libsystemd), as a
Type=notify unit needs it. Against a test NOTIFY_SOCKET (a unix datagram socket bound by the
test, by path and in the abstract namespace): READY=1 is sent only once /ready says ready, i.e.
not while the rules are missing, and right after `sidecrypt rules install` they appear; STATUS=
says what it waits for; WATCHDOG=1 comes every half WATCHDOG_USEC (when WATCHDOG_PID is unset or
is sidecrypt's pid, never when it names another process); SIGHUP, `sidecrypt reload` and a
failing reload each give RELOADING=1 with MONOTONIC_USEC= and then READY=1; SIGTERM gives
STOPPING=1 and nothing after it claims readiness. As a plain uid with only CAP_NET_RAW (setpriv;
rules installed by a privileged step first) it still becomes ready, reading the policy routes
itself. setpriv applies no seccomp filter or other systemd sandboxing, so this proves nothing
about the unit: tests/engines/test_systemd_nspawn.py runs the unit under a booted systemd.
"""
import os
import signal
import socket
import subprocess
import threading
import time
import unittest
import urllib.error
import urllib.request

import harness

ADMIN = "127.0.0.1:19941"
UID = 1337


class Receiver:
    """The service manager's end: collects (monotonic time, {key: value}) per datagram."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        if not address.startswith("@"):
            os.chmod(address, 0o777)
        self.sock.settimeout(0.1)
        self.messages = []
        self.lock = threading.Lock()
        self.done = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.done:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = {}
            for line in data.decode().split("\n"):
                if "=" in line:
                    k, v = line.split("=", 1)
                    fields[k] = v
            with self.lock:
                self.messages.append((time.monotonic(), fields))

    def snapshot(self):
        with self.lock:
            return list(self.messages)

    def wait(self, key, value=None, start=0, timeout=15.0):
        """Index of the first message at or after `start` with key (=value)."""
        found = []

        def seen():
            for i, (_, m) in enumerate(self.snapshot()[start:], start):
                if key in m and (value is None or m[key] == value):
                    found.append(i)
                    return True
            return False
        harness.wait_for(seen, timeout, interval=0.05, what="%s=%s from sidecrypt (after #%d)"
                         % (key, value or "*", start))
        return found[0]

    def count(self, key, start=0):
        return sum(1 for _, m in self.snapshot()[start:] if key in m)

    def close(self):
        self.done = True
        self.thread.join(2)
        self.sock.close()


def ready():
    try:
        with urllib.request.urlopen("http://%s/ready" % ADMIN, timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


class SystemdNotify(unittest.TestCase):
    count = 0

    @classmethod
    def setUpClass(cls):
        harness.require_root("sidecrypt run opens transparent sockets in a namespace")
        harness.require_commands("setpriv", why="the unprivileged identity")

    def setUp(self):
        self.w = harness.Workdir()
        os.chmod(self.w.path, 0o755)
        self.addCleanup(self.w.cleanup)
        SystemdNotify.count += 1
        self.ns = harness.Netns("sc%dn%d" % (os.getpid() % 100000, SystemdNotify.count),
                                lo_up=True)
        self.addCleanup(self.ns.delete)
        self.key = harness.run(["keygen"], check=True).stdout.strip()
        self.data = os.path.join(self.w.path, "data")
        os.makedirs(self.data)
        self.proc = None
        self.rx = None

    def tearDown(self):
        if self.proc is not None:
            harness.stop_process(self.proc)
            self.proc.log_file.close()
        if self.rx is not None:
            self.rx.close()

    def config(self, install_rules, extra=""):
        body = "\n".join([
            "[agent]", 'profile = "serf"', 'data_dir = "%s"' % self.data,
            "[gossip]", 'encrypt = "%s"' % self.key, extra,
            "[intercept]", "install_rules = %s" % ("true" if install_rules else "false"),
            'drain_time = "1s"', "[admin]", 'listen = "%s"' % ADMIN, ""])
        return self.w.file("proxy.toml", body, mode=0o644), body

    def spawn(self, argv, env):
        log = open(os.path.join(self.w.path, "sidecrypt.log"), "w")
        with self.ns:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         env=dict(os.environ, **env))
        self.proc.log_file = log
        self.proc.log_path = log.name

    def in_ns(self, fn, *args):
        with self.ns:
            return fn(*args)

    def sidecrypt(self, *args):
        with self.ns:
            return subprocess.run([harness.binary()] + list(args), capture_output=True,
                                  text=True, timeout=60)

    def test_ready_watchdog_reload_stopping(self):
        cfg, body = self.config(install_rules=False)
        sock = os.path.join(self.w.path, "notify.sock")
        self.rx = Receiver(sock)
        # WATCHDOG_PID names sidecrypt itself: `exec` keeps the shell's pid.
        self.spawn(["sh", "-c", 'WATCHDOG_PID=$$ exec "$0" run --config "$1"',
                    harness.binary(), cfg], {"NOTIFY_SOCKET": sock, "WATCHDOG_USEC": "400000"})

        # No rules yet: sidecrypt runs, says what it waits for, and is not ready.
        i = self.rx.wait("STATUS", "waiting: netfilter rules: nft table inet sidecrypt is missing")
        for _ in range(3):
            status, text = self.in_ns(ready)
            self.assertEqual(status, 503, text)
            time.sleep(0.5)
        self.assertEqual(self.rx.count("READY"), 0, self.rx.snapshot())
        self.assertGreaterEqual(self.rx.count("WATCHDOG"), 3, "pings before READY")

        # The rules appear (as from an ExecStartPre=+ or init container): READY=1 follows, and
        # /ready agrees at that moment.
        t_rules = time.monotonic()
        r = self.sidecrypt("rules", "install", "--config", cfg)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        i = self.rx.wait("READY", "1", timeout=20)
        t_ready, msg = self.rx.snapshot()[i]
        self.assertGreater(t_ready, t_rules)
        self.assertEqual(msg.get("STATUS"), "ready: rules installed, listeners bound")
        status, text = self.in_ns(ready)
        self.assertEqual(status, 200, text)
        self.assertEqual(self.rx.count("READY"), 1)

        # Watchdog every 200 ms (half of 400 ms), from the loop, after READY too.
        n = len(self.rx.snapshot())
        time.sleep(1.5)
        self.assertGreaterEqual(self.rx.count("WATCHDOG", n), 4)
        self.assertLessEqual(self.rx.count("WATCHDOG", n), 12)

        def reload_cycle(trigger):
            start = len(self.rx.snapshot())
            before_us = int(time.monotonic() * 1e6)
            result = trigger()
            if isinstance(result, subprocess.CompletedProcess) and result.returncode not in (0, 1):
                self.fail("reload: %r" % result)
            try:
                j = self.rx.wait("RELOADING", "1", start=start)
            except AssertionError:
                raise AssertionError("%r; log:\n%s" % (result, harness.read_log(self.proc)))
            t_reload, m = self.rx.snapshot()[j]
            usec = int(m["MONOTONIC_USEC"])  # CLOCK_MONOTONIC, like time.monotonic()
            self.assertGreaterEqual(usec, before_us - 1000)
            self.assertLessEqual(usec, int(t_reload * 1e6) + 1000)
            k = self.rx.wait("READY", "1", start=j + 1)
            return result, self.rx.snapshot()[k][1]

        _, m = reload_cycle(lambda: self.proc.send_signal(signal.SIGHUP))
        self.assertEqual(m.get("STATUS"), "ready: reloaded")
        r, m = reload_cycle(lambda: self.sidecrypt("reload", "--config", cfg))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(m.get("STATUS"), "ready: reloaded")
        # A reload that fails keeps the running state: still READY=1 afterwards, and says why.
        # (--admin: with a broken file the CLI cannot read admin.listen from it.)
        self.w.file("proxy.toml", body + "[bogus]\n", mode=0o644)
        r, m = reload_cycle(lambda: self.sidecrypt("reload", "--admin", ADMIN))
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("ready: reload failed, running configuration kept:", m.get("STATUS", ""))
        self.assertIn("bogus", m["STATUS"])
        self.w.file("proxy.toml", body, mode=0o644)

        # SIGTERM: STOPPING=1 at the start of the drain, then a clean exit; no READY after it.
        start = len(self.rx.snapshot())
        self.proc.send_signal(signal.SIGTERM)
        j = self.rx.wait("STOPPING", "1", start=start)
        self.assertEqual(self.rx.snapshot()[j][1].get("STATUS"), "stopping: draining for 1000 ms")
        # A reload during the drain still reloads, but announces neither RELOADING nor READY.
        self.proc.send_signal(signal.SIGHUP)
        harness.wait_for(lambda: harness.read_log(self.proc).count("SIGHUP: reloading") == 2, 5,
                         what="the reload during the drain")
        self.assertEqual(self.proc.wait(10), 0)
        after = [m for _, m in self.rx.snapshot()[j + 1:]]
        self.assertEqual([m for m in after if "READY" in m or "RELOADING" in m], [], after)

    def test_plain_uid_net_raw_abstract_socket_foreign_watchdog(self):
        # Rules by a privileged step, the proxy as a plain uid with CAP_NET_RAW only (which
        # cannot read nftables: readiness checks the policy routes, over netlink). Not the
        # unit's sandbox: no seccomp filter here.
        cfg, _ = self.config(install_rules=False)
        os.chown(self.data, UID, UID)
        r = self.sidecrypt("rules", "install", "--config", cfg)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        address = "@sidecrypt-notify-test-%d" % os.getpid()
        self.rx = self.in_ns(Receiver, address)
        setpriv = ["setpriv", "--reuid=%d" % UID, "--regid=%d" % UID, "--clear-groups",
                   "--inh-caps=-all,+net_raw", "--ambient-caps=-all,+net_raw",
                   "--bounding-set=-all,+net_raw"]
        # WATCHDOG_PID names another process (pid 1): the watchdog is not ours to feed.
        self.spawn(setpriv + [harness.binary(), "run", "--config", cfg],
                   {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
        i = self.rx.wait("READY", "1", timeout=20)
        self.assertIn("netfilter rules not readable without CAP_NET_ADMIN",
                      self.rx.snapshot()[i][1].get("STATUS", ""))
        status, text = self.in_ns(ready)
        self.assertEqual(status, 200, text)
        time.sleep(1.0)
        self.assertEqual(self.rx.count("WATCHDOG"), 0)
        with open("/proc/%d/status" % self.proc.pid) as f:
            caps = [l for l in f.read().splitlines() if l.startswith("CapEff:")][0]
        self.assertEqual(int(caps.split()[1], 16), 1 << 13, caps)
        # The routes go away: the next start waits instead of claiming readiness.
        start = len(self.rx.snapshot())
        self.proc.send_signal(signal.SIGTERM)
        self.rx.wait("STOPPING", "1", start=start)
        self.assertEqual(self.proc.wait(10), 0)
        r = self.sidecrypt("rules", "remove", "--config", cfg)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.proc.log_file.close()
        start = len(self.rx.snapshot())
        self.spawn(setpriv + [harness.binary(), "run", "--config", cfg],
                   {"NOTIFY_SOCKET": address})
        self.rx.wait("STATUS", "waiting: netfilter rules: policy rule ip -4 pref 100 fwmark "
                     "0x539 lookup 133 is missing", start=start)
        time.sleep(1.0)
        self.assertEqual(self.rx.count("READY", start), 0)


if __name__ == "__main__":
    harness.main()
