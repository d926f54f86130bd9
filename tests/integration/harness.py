"""Shared helpers for sidecrypt's integration tests.

Each test file makes one claim and runs as its own ctest test. Tests that need root or network
namespaces call require_root(); outside CI they then exit 77 (ctest reports "skipped" with the
reason), and in CI (CI=true) they fail instead, because CI must run them.
"""
import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

SKIP = 77


def binary():
    path = os.environ.get("SIDECRYPT_BIN")
    if not path or not os.access(path, os.X_OK):
        raise SystemExit("SIDECRYPT_BIN is not set to the built sidecrypt binary")
    return path


def in_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_root(why):
    """Skip (outside CI) or fail (in CI) when not root or namespaces are unavailable."""
    problem = None
    if os.geteuid() != 0:
        problem = "needs root"
    elif shutil.which("ip") is None:
        problem = "needs iproute2 (ip)"
    else:
        name = "sc-probe-%d" % os.getpid()
        r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        if r.returncode != 0:
            problem = "cannot create network namespaces: " + r.stderr.strip()
    if problem:
        msg = "%s: %s (%s)" % (os.path.basename(sys.argv[0]), problem, why)
        if in_ci():
            print("FAIL in CI: " + msg, file=sys.stderr)
            sys.exit(1)
        print("SKIP: " + msg, file=sys.stderr)
        sys.exit(SKIP)


def run(args, check=False, input=None, timeout=30):
    return subprocess.run([binary()] + args, capture_output=True, text=True, input=input,
                          timeout=timeout, check=check)


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


def key_forms(b64):
    """Every textual form of a key that must never appear in output."""
    raw = base64.b64decode(b64)
    return [b64, b64.rstrip("="), raw.hex(), raw.hex().upper(),
            base64.urlsafe_b64encode(raw).decode()]


class Workdir:
    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="sidecrypt-it-")

    def file(self, name, body=None, mode=0o600):
        p = os.path.join(self.path, name)
        if body is not None:
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "w") as f:
                f.write(body)
            os.chmod(p, mode)
        return p

    def cleanup(self):
        shutil.rmtree(self.path, ignore_errors=True)


class Proxy:
    """A running `sidecrypt run`, with its combined output collected in a file."""

    def __init__(self, config):
        self.log_path = config + ".log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([binary(), "run", "--config", config], stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def output(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_log(self, needle, timeout=10.0, count=1):
        wait_for(lambda: self.output().count(needle) >= count, timeout,
                 what="%r in the proxy log" % needle)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=10.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        return self.proc.returncode


def main():
    unittest.main(verbosity=2)
