"""Helpers shared by the admin-endpoint and metrics-listener tests: a sidecrypt in a namespace of
its own (no rules, nothing intercepted) and raw HTTP/1.1 requests sent from inside it."""
import os
import re
import socket
import subprocess

import harness


class SidecryptInNetns:
    def __init__(self, tag, workdir, extra_toml=(), config_dir=None):
        self.ns = harness.Netns("sc%d%s" % (os.getpid() % 100000, tag), lo_up=True)
        self.workdir = workdir
        key = harness.run(["keygen"], check=True).stdout.strip()
        self.config = os.path.join(config_dir or workdir.path, "proxy.toml")
        text = "\n".join([
            "[agent]", 'profile = "serf"', 'data_dir = "%s"' % os.path.join(workdir.path, "d"),
            "[gossip]", 'encrypt = "%s"' % key,
            "[intercept]", "install_rules = false", 'drain_time = "0s"',
            "[admin]", 'listen = "127.0.0.1:9920"'] + list(extra_toml) + [
            "[log]", 'level = "info"', ""])
        with open(self.config, "w") as f:
            f.write(text)
        os.chmod(self.config, 0o644)
        self.log_path = os.path.join(workdir.path, "sidecrypt.log")
        self.log = open(self.log_path, "w")
        self.proc = None

    def start(self, admin="127.0.0.1:9920"):
        with self.ns:
            self.proc = subprocess.Popen([harness.binary(), "run", "--config", self.config],
                                         stdout=self.log, stderr=subprocess.STDOUT)
        self.admin = admin
        harness.wait_for(lambda: self.try_status(admin, "/live") == 200 or self.proc.poll()
                         is not None, timeout=15, what="sidecrypt's /live")
        if self.proc.poll() is not None:
            raise AssertionError("sidecrypt exited:\n" + self.output())

    def output(self):
        self.log.flush()
        return harness.read(self.log_path)

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))

    def request(self, addr, method, path, headers=None, timeout=5.0):
        """(status, body); headers maps a name to a value, or to None to leave it out."""
        h = {"Host": addr, "Connection": "close", "Content-Length": "0"}
        h.update(headers or {})
        text = "%s %s HTTP/1.1\r\n" % (method, path) + "".join(
            "%s: %s\r\n" % (k, v) for k, v in h.items() if v is not None) + "\r\n"
        host, port = addr.rsplit(":", 1)
        with self.ns:
            s = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        with s:
            s.sendall(text.encode())
            raw = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                raw += chunk
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body.decode(errors="replace")

    def try_status(self, addr, path):
        try:
            return self.request(addr, "GET", path, timeout=2)[0]
        except (OSError, IndexError, ValueError):
            return 0

    def metric(self, name_and_labels, addr=None):
        _, body = self.request(addr or self.admin, "GET", "/metrics")
        m = re.search(r"^%s (\d+)$" % re.escape(name_and_labels), body, re.M)
        if not m:
            raise AssertionError("%s not in /metrics:\n%s" % (name_and_labels, body))
        return int(m.group(1))

    def stop(self):
        if self.proc is not None:
            harness.stop_process(self.proc)
        self.log.close()
        self.ns.delete()
