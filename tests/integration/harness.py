"""Shared helpers for sidecrypt's integration tests.

Each test file makes one claim and runs as its own ctest test. Tests that need root or network
namespaces call require_root(); outside CI they then exit 77 (ctest reports "skipped" with the
reason), and in CI (CI=true) they fail instead, because CI must run them.
"""
import base64
import ctypes
import json
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
    """A running `sidecrypt run` in a namespace of its own (its data path binds the capture
    ports and needs CAP_NET_RAW), with its combined output collected in a file."""

    def __init__(self, config):
        self.log_path = config + ".log"
        self.log = open(self.log_path, "w")
        self.ns = "scp%d-%d" % (os.getpid() % 100000, id(self) % 10000)
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True)
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, binary(), "run",
                                      "--config", config], stdout=self.log,
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
        subprocess.run(["ip", "netns", "del", self.ns], check=False)
        return self.proc.returncode


def main():
    unittest.main(verbosity=2)


# --- network lab: hosts in namespaces on one bridge -------------------------------------------

def sh(*args, check=True, timeout=30, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, check=check,
                          timeout=timeout, **kw)


class Lab:
    """Hosts in network namespaces joined by a bridge (in its own namespace).

    Addresses come from 10.250.<subnet>.0/24 and fd00:250::<subnet>:<host>/64 (only what the
    test creates); names carry the pid so parallel runs do not collide. cleanup() stops every
    process inside and deletes the namespaces (deleting a namespace removes its veths).
    """

    def __init__(self, hosts, ipv6=False):
        self.prefix = "sc%d" % (os.getpid() % 100000)
        self.subnet = 10 + os.getpid() % 200
        self.hosts = {}
        self.procs = []
        self.ipv6 = ipv6
        self.sw = self.prefix + "sw"
        try:
            sh("ip", "netns", "add", self.sw)
            sh("ip", "-n", self.sw, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", self.sw, "link", "set", "br0", "up")
            for i, name in enumerate(hosts, start=1):
                self._add_host(i, name)
        except BaseException:
            self.cleanup()
            raise

    def _add_host(self, i, name):
        ns = "%s%s" % (self.prefix, name)
        v, p = "%sv%d" % (self.prefix, i), "%sp%d" % (self.prefix, i)
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", v, "type", "veth", "peer", "name", p)
        sh("ip", "link", "set", v, "netns", ns)
        sh("ip", "link", "set", p, "netns", self.sw)
        sh("ip", "-n", self.sw, "link", "set", p, "master", "br0")
        sh("ip", "-n", self.sw, "link", "set", p, "up")
        ip4 = "10.250.%d.%d" % (self.subnet, i)
        ip6 = "fd00:250::%x:%x" % (self.subnet, i)
        sh("ip", "-n", ns, "addr", "add", ip4 + "/24", "dev", v)
        if self.ipv6:
            sh("ip", "-n", ns, "addr", "add", ip6 + "/64", "dev", v, "nodad")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "set", v, "up")
        self.hosts[name] = {"ns": ns, "ip": ip4, "ip6": ip6, "veth": v}

    def ns(self, host):
        return self.hosts[host]["ns"]

    def ip(self, host, v6=False):
        return self.hosts[host]["ip6" if v6 else "ip"]

    def run(self, host, *args, check=True, timeout=30):
        return sh("ip", "netns", "exec", self.ns(host), *args, check=check, timeout=timeout)

    def spawn(self, host, args, log_path):
        log = open(log_path, "w")
        p = subprocess.Popen(["ip", "netns", "exec", self.ns(host)] + list(args), stdout=log,
                             stderr=subprocess.STDOUT)
        p.log_path = log_path
        p.log_file = log
        self.procs.append(p)
        return p

    def capture(self, pcap_path, bpf):
        """tcpdump on the bridge: every frame between hosts."""
        p = subprocess.Popen(["ip", "netns", "exec", self.sw, "tcpdump", "-i", "br0", "-U", "-s",
                              "0", "-w", pcap_path, bpf], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        self.procs.append(p)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not os.path.exists(pcap_path):
            time.sleep(0.05)
        time.sleep(0.3)
        return p

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            if hasattr(p, "log_file"):
                p.log_file.close()
        for h in list(self.hosts.values()) + [{"ns": self.sw}]:
            pids = sh("ip", "netns", "pids", h["ns"], check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", h["ns"], check=False)


CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class Netns:
    """A namespace the test owns; `with ns:` runs the calling thread (and what it spawns) in it.
    lo_up=True also brings its loopback up (e.g. abstract unix sockets belong to a network
    namespace, so a receiver made inside needs nothing else). delete() kills what is left inside
    and removes it."""

    def __init__(self, name, lo_up=False):
        self.name = name
        sh("ip", "netns", "add", name)
        if lo_up:
            sh("ip", "-n", name, "link", "set", "lo", "up")
        self._saved = []

    def __enter__(self):
        self._saved.append(os.open("/proc/self/ns/net", os.O_RDONLY))
        fd = os.open("/run/netns/" + self.name, os.O_RDONLY)
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns " + self.name)
        finally:
            os.close(fd)
        return self

    def __exit__(self, *exc):
        fd = self._saved.pop()
        try:
            _libc.setns(fd, CLONE_NEWNET)
        finally:
            os.close(fd)

    def delete(self):
        for pid in sh("ip", "netns", "pids", self.name, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        sh("ip", "netns", "del", self.name, check=False)


def cleanup(lab, workdir):
    """Removes the lab (if one was made) and the work directory; with SIDECRYPT_KEEP_LOGS set the
    directory stays (logs, configs, captures) and its path is printed."""
    if lab is not None:
        lab.cleanup()
    if os.environ.get("SIDECRYPT_KEEP_LOGS"):
        print("logs kept in", workdir.path)
    else:
        workdir.cleanup()


def serf_members(lab, host, rpc="127.0.0.1:7373"):
    """{name: status} as `serf members` in the host's namespace reports it."""
    r = lab.run(host, "serf", "members", "-rpc-addr", rpc, check=False, timeout=10)
    out = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            out[parts[0]] = parts[2]
    return out


def wait_members_alive(lab, hosts, names, timeout=30.0):
    def ok():
        for h in hosts:
            m = serf_members(lab, h)
            if any(m.get(n) != "alive" for n in names):
                return False
        return True
    wait_for(ok, timeout, interval=0.5, what="all of %s alive on %s" % (names, hosts))


def proxy_config(path, data_dir, key=None, profile="serf", extra=""):
    body = ["[agent]", 'profile = "%s"' % profile, 'data_dir = "%s"' % data_dir, "[gossip]"]
    if key:
        body.append('encrypt = "%s"' % key)
    body += [extra, "[intercept]", "install_rules = true", 'drain_time = "0s"', "[log]",
             'level = "debug"', ""]
    with open(path, "w") as f:
        f.write("\n".join(body))
    return path


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[%s]" % ", ".join(_toml_value(x) for x in v)
    return '"%s"' % v


def _toml_table(header, keys):
    """`[header]` (or a given `[[...]]` line) and `key = value` lines; a value that is a list of
    dicts becomes `[[header.key]]` tables after the plain keys."""
    lines = [header if header.startswith("[") else "[%s]" % header]
    subtables = []
    for k, v in keys.items():
        if isinstance(v, (list, tuple)) and v and all(isinstance(x, dict) for x in v):
            subtables += [(k, x) for x in v]
        else:
            lines.append("%s = %s" % (k, _toml_value(v)))
    for k, x in subtables:
        lines += _toml_table("[[%s.%s]]" % (header.strip("[]"), k), x)
    return lines


def rpc_proxy_toml(*, data_dir, server, tls, ports=(), listeners=(), gossip=None,
                   log_level="debug", loops=None):
    """Text of a proxy.toml for RPC TLS tests (profile "custom"):

    [agent] server/data_dir; [gossip] with `gossip` ({key: value}) if given; [tls] with `tls`
    ({key: value}; a list of dicts, e.g. datacenter=[{"name": "dc2", ...}], becomes
    [[tls.datacenter]] tables); then either `ports` ([(port, protocol)]: [intercept] with
    install_rules = true, drain_time = "0s" and one [[intercept.port]] each) or `listeners`
    ([{"listen": ..., "upstream": ..., "direction": ...}]: [intercept] install_rules = false and
    one [[listener]] each); [log] level; [runtime] loops = `loops`, or SIDECRYPT_TEST_LOOPS from
    the environment when `loops` is None (scripts/tsan.sh runs tests with 2 loops so). Python
    bools, ints, strings and lists map to TOML."""
    if bool(ports) == bool(listeners):
        raise ValueError("rpc_proxy_toml: give either ports or listeners")
    body = _toml_table("agent", {"profile": "custom", "server": bool(server),
                                 "data_dir": data_dir})
    if gossip is not None:
        body += _toml_table("gossip", gossip)
    body += _toml_table("tls", tls)
    if ports:
        body += _toml_table("intercept", {"install_rules": True, "drain_time": "0s"})
        for port, protocol in ports:
            body += _toml_table("[[intercept.port]]", {"port": port, "protocol": protocol})
    else:
        body += _toml_table("intercept", {"install_rules": False})
        for listener in listeners:
            body += _toml_table("[[listener]]", listener)
    body += _toml_table("log", {"level": log_level})
    if loops is None and os.environ.get("SIDECRYPT_TEST_LOOPS"):
        loops = int(os.environ["SIDECRYPT_TEST_LOOPS"])
    if loops is not None:
        body += _toml_table("runtime", {"loops": loops})
    return "\n".join(body + [""])


def start_serf(lab, host, node, bind, log_path, extra=()):
    """In `host` of `lab`: a serf agent `node` bound to `bind` (RPC 127.0.0.1:7373) with `extra`
    arguments (e.g. -encrypt KEY, -log-level debug, -join ADDR); waits until it runs and returns
    it as Lab.spawn does."""
    args = ["serf", "agent", "-node", node, "-bind", bind, "-rpc-addr", "127.0.0.1:7373"]
    agent = lab.spawn(host, args + list(extra), log_path)
    wait_for(lambda: "Serf agent running" in read_log(agent), 15, what="serf agent " + node)
    return agent


def start_proxied_serf(lab, host, node, config, log_dir, join=None):
    """In `host` of `lab`: starts `sidecrypt run --config config` and waits for its `started:`,
    then a plaintext serf agent `node` bound to the host's address:7946 (RPC 127.0.0.1:7373,
    debug log, `-join join` if given) and waits until it runs. Logs go to
    log_dir/sidecrypt-<node>-<time>.log and log_dir/<node>-<time>.log, so a restart gets fresh
    files. Returns (proxy, agent), both as Lab.spawn returns them."""
    stamp = int(time.time())
    proxy = lab.spawn(host, [binary(), "run", "--config", config],
                      os.path.join(log_dir, "sidecrypt-%s-%d.log" % (node, stamp)))
    wait_for(lambda: "started:" in read_log(proxy), 15, what="sidecrypt of " + node)
    agent = start_serf(lab, host, node, "%s:7946" % lab.ip(host),
                       os.path.join(log_dir, "%s-%d.log" % (node, stamp)),
                       ["-log-level", "debug"] + (["-join", join] if join else []))
    return proxy, agent


def start_proxied_and_native(lab, w, config, key, timeout=30.0):
    """The smallest mixed cluster, in hosts h1 and h2 of `lab`: sidecrypt with `config` and a
    plaintext serf agent p1 behind it in h1 (start_proxied_serf), and a serf agent n2 in h2 that
    encrypts natively with the keyring file n2.keyring = [key] in Workdir `w`. n2 joins p1; both
    are waited for alive for up to `timeout` seconds. Logs go to w.path. Returns (proxy, p1, n2),
    as Lab.spawn returns them."""
    proxy, p1 = start_proxied_serf(lab, "h1", "p1", config, w.path)
    keyring = w.file("n2.keyring", json.dumps([key]))
    n2 = start_serf(lab, "h2", "n2", "%s:7946" % lab.ip("h2"), os.path.join(w.path, "n2.log"),
                    ["-keyring-file", keyring])
    lab.run("h2", "serf", "join", "%s:7946" % lab.ip("h1"), timeout=20)
    wait_members_alive(lab, ["h1", "h2"], ["p1", "n2"], timeout=timeout)
    return proxy, p1, n2


class StallFs:
    """A directory whose file operations can be made to hang, as on a slow NFS mount or a
    failing disk: tools/stall_fs.py mounts `backing` (Workdir w/backing) at `mnt` (w/mnt) with
    FUSE; while stalled, the named operations wait (at most 30 s) until release(). Call
    StallFs.require() in setUpClass first (skips without fusermount or python3-fusepy)."""

    TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools", "stall_fs.py")

    @staticmethod
    def require():
        require_commands("fusermount", why="the stalling FUSE filesystem")
        try:
            import fusepy  # noqa: F401
        except ImportError:
            skip_or_fail("python3-fusepy is not installed (scripts/install-deps.sh)")

    def __init__(self, w):
        self.backing = os.path.join(w.path, "backing")
        self.mnt = os.path.join(w.path, "mnt")
        self.gate = os.path.join(w.path, "stall")
        os.makedirs(self.backing)
        os.makedirs(self.mnt)
        self.proc = subprocess.Popen(["/usr/bin/python3", self.TOOL, self.backing, self.mnt,
                                      self.gate],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: os.path.ismount(self.mnt), 10, what="FUSE mount")
        except BaseException:
            self.close()
            raise

    def stall(self, *ops):
        """From now on, the operations `ops` ("open", "read", "write", "fsync", "create",
        "rename") wait."""
        with open(self.gate, "w") as f:
            f.write("\n".join(ops))

    def release(self):
        if os.path.exists(self.gate):
            os.unlink(self.gate)

    def close(self):
        """Releases what waits, unmounts (lazily) and stops the FUSE process."""
        self.release()
        subprocess.run(["fusermount", "-u", "-z", self.mnt], check=False)
        stop_process(self.proc)


def read_pcap_payloads(path):
    """[(proto, payload)] of every UDP datagram and TCP segment with data in a pcap."""
    return [(f[0], f[5]) for f in read_pcap_frames(path) if f[5]]


def read(path):
    with open(path) as f:
        return f.read()


# --- real gossip peers, sidecrypt counters and member health (appended for the gossip
# --- rollout / garbage / fail-closed tests) -----------------------------------------------------

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def skip_or_fail(reason):
    """A missing prerequisite: skip (exit 77) outside CI, fail in CI (which must run the test)."""
    msg = "%s: %s" % (os.path.basename(sys.argv[0]), reason)
    if in_ci():
        print("FAIL in CI: " + msg, file=sys.stderr)
        sys.exit(1)
    print("SKIP: " + msg, file=sys.stderr)
    sys.exit(SKIP)


def require_commands(*names, why=""):
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        skip_or_fail("needs %s%s" % (", ".join(missing), " (%s)" % why if why else ""))


def build_gossippeer(outdir):
    """Builds tests/peers/gossippeer offline into outdir (tests/peers/build-gossippeer.sh) and
    returns the binary's path. No Go or no packaged sources: skip outside CI, fail in CI."""
    script = os.path.join(REPO_ROOT, "tests", "peers", "build-gossippeer.sh")
    if shutil.which("go") is None:
        skip_or_fail("needs 'go' to build the Go gossip peer (Debian package golang-go)")
    r = subprocess.run(["bash", script, outdir], capture_output=True, text=True, timeout=240)
    if r.returncode == 3:
        skip_or_fail(r.stderr.strip())
    if r.returncode != 0 or not r.stdout.strip():
        raise AssertionError("building the Go gossip peer failed (exit %d):\n%s"
                             % (r.returncode, r.stderr[-4000:]))
    return r.stdout.strip().splitlines()[-1]


def sighup_reload(proc, timeout=10.0, what="reload"):
    """SIGHUP a running sidecrypt and wait until its log shows one more "reload complete"."""
    before = read(proc.log_path).count("reload complete")
    proc.send_signal(signal.SIGHUP)
    wait_for(lambda: read(proc.log_path).count("reload complete") > before, timeout, what=what)


def start_prometheus(lab, host, port, workdir, targets, rules):
    """Debian's prometheus in `host`, scraping `targets` ("ip:port" strings) every second as job
    "sidecrypt" with the recording rules file `rules`. Waits (at most 60 s) for /-/ready;
    returns (process, base URL)."""
    d = os.path.join(workdir, "prom")
    os.makedirs(d)
    cfg = os.path.join(d, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write("\n".join([
            "global:", "  scrape_interval: 1s", "  scrape_timeout: 1s",
            "  evaluation_interval: 1s", "rule_files:", "  - '%s'" % rules,
            "scrape_configs:", "  - job_name: sidecrypt", "    static_configs:",
            "      - targets: [%s]" % ", ".join("'%s'" % t for t in targets), ""]))
    os.chmod(cfg, 0o644)
    check = subprocess.run(["promtool", "check", "config", cfg], capture_output=True, text=True,
                           timeout=60)
    if check.returncode != 0:
        raise AssertionError("promtool check config: " + check.stdout + check.stderr)
    url = "http://%s:%d" % (lab.ip(host), port)
    proc = lab.spawn(host, ["prometheus", "--config.file=" + cfg,
                            "--storage.tsdb.path=" + os.path.join(d, "data"),
                            "--web.listen-address=%s:%d" % (lab.ip(host), port),
                            "--log.level=warn"], os.path.join(d, "prometheus.log"))

    def ready():  # asked from inside `host`: the test's own namespace may have no route there
        return lab.run(host, "python3", "-c", "import urllib.request; urllib.request.urlopen("
                       "'%s/-/ready', timeout=3)" % url, check=False).returncode == 0

    wait_for(lambda: proc.poll() is not None or ready(), 60, interval=0.5,
             what="prometheus /-/ready")
    if proc.poll() is not None:
        raise AssertionError("prometheus exited:\n" + read(proc.log_path))
    return proc, url


def read_log(proc_or_path):
    """Text of a log file, given its path or a process started by Lab.spawn."""
    path = getattr(proc_or_path, "log_path", proc_or_path)
    with open(path, errors="replace") as f:
        return f.read()


def parse_counters(line):
    """One sidecrypt `counters:` log line as {section: {name: value}}, e.g.
    c["lan streams peer->agent"]["plaintext_refused"]. Sections that appear more than once (one
    UDP relay per address family) are summed."""
    out = {}
    body = line.split("counters:", 1)[1]
    for seg in body.split(";"):
        words = seg.split()
        label = " ".join(w for w in words if "=" not in w)
        if not label:
            continue
        d = out.setdefault(label, {})
        for w in words:
            if "=" in w:
                k, v = w.split("=", 1)
                try:
                    d[k] = d.get(k, 0) + int(v)
                except ValueError:
                    pass
    return out


def counter(counters, section, name):
    return counters.get(section, {}).get(name, 0)


def dump_counters(proxy_proc, timeout=10.0):
    """Sends SIGUSR1 to a sidecrypt started by Lab.spawn and returns its parsed counters."""
    before = read_log(proxy_proc).count("counters:")
    proxy_proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: read_log(proxy_proc).count("counters:") > before, timeout,
             what="sidecrypt's counter dump (SIGUSR1)")
    line = [l for l in read_log(proxy_proc).splitlines() if "counters:" in l][-1]
    return parse_counters(line)


def peer_members(proc_or_path):
    """{name: status} from the latest `MEMBER name addr status` line per name of a gossippeer."""
    out = {}
    for line in read_log(proc_or_path).splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "MEMBER":
            out[parts[1]] = parts[3]
    return out


def failure_lines(text, names):
    """Log lines (serf agent, memberlist, gossippeer) that report one of `names` as suspect or
    failed: memberlist "Suspect X has failed" / "Marking X as failed", Serf
    "EventMemberFailed: X", gossippeer "EVENT member-failed ... X"."""
    import re
    bad = []
    for n in names:
        e = re.escape(n)
        pat = re.compile(r"Suspect %s has failed|Marking %s as failed|EventMemberFailed: %s\b|"
                         r"EVENT member-failed\b.*(?<![\w-])%s(?![\w-])" % (e, e, e, e))
        bad += [l for l in text.splitlines() if pat.search(l)]
    return bad


def stop_process(proc, sig=signal.SIGTERM, timeout=15.0):
    """Signals a process we started and waits for it (SIGKILL after `timeout`); returns its exit
    status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if getattr(proc, "log_file", None) is not None and not proc.log_file.closed:
        proc.log_file.flush()
    return proc.returncode


def read_pcap_frames(path):
    """[(proto, src_ip, sport, dst_ip, dport, payload)] of every IPv4/IPv6 UDP datagram and TCP
    segment in a pcap (Ethernet link type); payload may be empty (e.g. a TCP SYN)."""
    import ipaddress
    import struct
    out = []
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return out
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xa1b2c3d4, 0xa1b23c4d) else ">"
    pos = 24
    while pos + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[pos:pos + 16])
        frame = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        if len(frame) < 14:
            continue
        ethertype = struct.unpack(">H", frame[12:14])[0]
        ip = frame[14:]
        if ethertype == 0x0800 and len(ip) >= 20:
            ihl = (ip[0] & 0x0f) * 4
            proto, total = ip[9], struct.unpack(">H", ip[2:4])[0]
            src, dst = ipaddress.ip_address(ip[12:16]), ipaddress.ip_address(ip[16:20])
            if struct.unpack(">H", ip[6:8])[0] & 0x1fff:
                continue  # a non-first fragment has no L4 header
            l4 = ip[ihl:total]
        elif ethertype == 0x86dd and len(ip) >= 40:
            proto, plen = ip[6], struct.unpack(">H", ip[4:6])[0]
            src, dst = ipaddress.ip_address(ip[8:24]), ipaddress.ip_address(ip[24:40])
            l4 = ip[40:40 + plen]
        else:
            continue
        if proto == 17 and len(l4) >= 8:
            sport, dport = struct.unpack(">HH", l4[:4])
            out.append(("udp", str(src), sport, str(dst), dport, l4[8:]))
        elif proto == 6 and len(l4) >= 20:
            sport, dport = struct.unpack(">HH", l4[:4])
            off = (l4[12] >> 4) * 4
            out.append(("tcp", str(src), sport, str(dst), dport, l4[off:]))
    return out
