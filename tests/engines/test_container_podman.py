"""Claim: the image docker/Dockerfile builds runs sidecrypt exactly as docs/deployment.md and
deploy/kubernetes/consul-client.yaml describe, under a real container engine (Debian's podman
with runc):

- the rules step (`sidecrypt rules install`) runs as root with only NET_ADMIN, read-only root,
  no-new-privileges, the config mounted read-only, and exits 0;
- the proxy runs as uid 1337 with only NET_RAW (a permitted file capability it raises itself),
  read-only root, no-new-privileges, the config read-only and only its state dir writable; the
  manifest's startup probe (`sidecrypt doctor --only admin.ready`, run in the container) passes;
- beside it a plaintext serf agent and, in another namespace, a natively encrypting one
  (`serf agent -encrypt`) see each other alive; every gossip payload on the link decodes as
  sealed (`sidecrypt decode`);
- `sidecrypt reload` in the container works;
- `[runtime] loops = "auto"` (the default) gives as many event loops as the container may use
  CPUs: `--cpus 1` gives 1, `--cpuset-cpus 0` gives 1 (cgroup quota and affinity);
- the agent's leave, sent while the proxy still runs, reaches the native agent (so it was
  sealed), and `podman stop` drains (intercept.drain_time) and the proxy exits 0; the rules
  stay (fail closed).

Nothing comes from a registry: the base images debian:bookworm and debian:bookworm-slim are
made here with mmdebstrap from Debian's mirror. podman gets its settings from a containers.conf
and a storage root in the test's own directory (docs/building.md, "Container image"), so host
configuration does not matter and cleanup removes every container and image the test made.

The image build takes minutes, so this runs in its own CI stage (.ci/run), not in
scripts/test.sh; outside CI it skips unless SIDECRYPT_ENGINE_TESTS=1. SIDECRYPT_DOCKERFILE
builds another Dockerfile instead (e.g. an older one, to see it fail). With SIDECRYPT_KEEP_LOGS
the work directory and image stay, and SIDECRYPT_PODMAN_DIR=<that dir>/podman reruns the test
against that image without building.
"""
import atexit
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402

ROOT = harness.REPO_ROOT
IMAGE = "sidecrypt:0.1.0"
MIRROR = "http://deb.debian.org/debian"
# The official images' apt sources (bookworm, bookworm-updates, bookworm-security).
SOURCES = ["deb %s bookworm main" % MIRROR, "deb %s bookworm-updates main" % MIRROR,
           "deb http://deb.debian.org/debian-security bookworm-security main"]
# What a container host like the CI machine needs (docs/building.md explains each line).
CONTAINERS_CONF = """\
[containers]
log_driver = "k8s-file"
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{tmp}"
"""
CONF_IN = "/etc/sidecrypt/proxy.toml"
# deploy/kubernetes/consul-client.yaml, the sidecrypt containers' securityContext.
RULES_STEP = ["--user", "0:0", "--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "--read-only",
              "--read-only-tmpfs=false", "--security-opt", "no-new-privileges"]
PROXY = ["--user", "1337:1337", "--cap-drop", "ALL", "--cap-add", "NET_RAW", "--read-only",
         "--read-only-tmpfs=false", "--security-opt", "no-new-privileges"]
PROBE = ["/usr/bin/sidecrypt", "doctor", "--config", CONF_IN, "--only", "admin.ready"]


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


class PodmanImage(unittest.TestCase):
    lab = None
    w = None
    proxy_name = None
    cleaned = False

    @classmethod
    def podman(cls, *args, check=True, timeout=60):
        r = subprocess.run(cls.pm + list(args), capture_output=True, text=True, timeout=timeout,
                           env=cls.env)
        if check and r.returncode != 0:
            raise AssertionError("podman %s: exit %d\n%s%s" % (" ".join(args), r.returncode,
                                                              r.stdout[-3000:], r.stderr[-3000:]))
        return r

    @classmethod
    def setUpClass(cls):
        if not harness.in_ci() and not os.environ.get("SIDECRYPT_ENGINE_TESTS"):
            print("SKIP: builds the container image (minutes); runs in CI's own stage, or set "
                  "SIDECRYPT_ENGINE_TESTS=1", file=sys.stderr)
            sys.exit(harness.SKIP)
        harness.require_root("podman as root, network namespaces")
        harness.require_commands("podman", "runc", "mmdebstrap", "serf", "tcpdump",
                                 why="container engine, base images, serf agents, capture")
        harness.binary()
        cls.w = harness.Workdir()
        atexit.register(cls.cleanup)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        # SIDECRYPT_PODMAN_DIR: podman's directories from an earlier run (SIDECRYPT_KEEP_LOGS)
        # whose store holds sidecrypt:0.1.0: no build, and only this run's containers go.
        cls.own_store = not os.environ.get("SIDECRYPT_PODMAN_DIR")
        pdir = os.environ.get("SIDECRYPT_PODMAN_DIR") or os.path.join(cls.w.path, "podman")
        tmp = os.path.join(pdir, "tmp")
        os.makedirs(tmp, exist_ok=True)
        # podman asks runc for nofile = nr_open and nproc = its own maximum unless told;
        # without CAP_SYS_RESOURCE (an outer container) no more than the hard limits podman
        # itself runs with can be set.
        nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536)
        nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        nproc = 4096 if nproc == resource.RLIM_INFINITY else min(nproc, 4096)
        conf = cls.w.file("containers.conf",
                          CONTAINERS_CONF.format(tmp=tmp, nofile=nofile, nproc=nproc), 0o644)
        cls.env = dict(os.environ, CONTAINERS_CONF=conf)
        cls.pm = ["podman", "--root", os.path.join(pdir, "storage"),
                  "--runroot", os.path.join(pdir, "run"), "--storage-driver", "overlay"]
        cls.label = "sidecrypt-test=%d" % os.getpid()
        try:
            if cls.own_store:
                cls.build_image()
            cls.start()
        except BaseException:
            cls.cleanup()
            raise

    @classmethod
    def build_image(cls):
        t0 = time.monotonic()
        base = os.path.join(cls.w.path, "base.tar")
        r = subprocess.run(["mmdebstrap", "--variant=minbase", "--mode=root", "--quiet",
                            "bookworm", base] + SOURCES,
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise AssertionError("mmdebstrap: " + r.stderr[-3000:])
        cls.podman("import", base, "debian:bookworm", timeout=300)
        cls.podman("tag", "debian:bookworm", "debian:bookworm-slim")
        os.unlink(base)
        t1 = time.monotonic()
        log("base images made in %.0fs" % (t1 - t0))
        dockerfile = os.environ.get("SIDECRYPT_DOCKERFILE",
                                    os.path.join(ROOT, "docker", "Dockerfile"))
        # apt inside the build needs the host network (no CNI network is set up for builds).
        r = cls.podman("build", "--pull=never", "--network", "host", "-f", dockerfile,
                       "-t", IMAGE, ROOT, check=False, timeout=1800)
        cls.build_log = r.stdout + r.stderr
        with open(os.path.join(cls.w.path, "build.log"), "w") as f:
            f.write(cls.build_log)
        if r.returncode != 0:
            raise AssertionError("podman build failed:\n" + cls.build_log[-4000:])
        log("image built in %.0fs" % (time.monotonic() - t1))

    @classmethod
    def write_config(cls, level):
        with open(os.path.join(ROOT, "deploy", "kubernetes", "proxy.toml")) as f:
            text = f.read()
        # The manifest's proxy.toml, for serf agents instead of Consul ones, with the key.
        text = text.replace('profile = "consul"', 'profile = "serf"')
        text = re.sub(r'^(server|datacenter|domain) = .*$', "", text, flags=re.M)
        text = re.sub(r"^# encrypt = .*$", 'encrypt = "%s"' % cls.key, text, flags=re.M)
        text = text.replace('level = "info"', 'level = "%s"' % level)
        path = os.path.join(cls.cfg, "proxy.toml")
        with open(path, "w") as f:
            f.write(text)
        # A Secret volume: mode 0440, group 1337 (fsGroup).
        os.chown(path, 0, 1337)
        os.chmod(path, 0o440)

    @classmethod
    def start(cls):
        cls.key = harness.run(["keygen"], check=True).stdout.strip()
        cls.ring = cls.w.file("local.keyring", json.dumps([cls.key]), 0o600)
        cls.cfg = os.path.join(cls.w.path, "sidecrypt-config")
        os.makedirs(cls.cfg)
        os.chown(cls.cfg, 0, 1337)
        os.chmod(cls.cfg, 0o750)
        cls.write_config("info")
        cls.state = os.path.join(cls.w.path, "sidecrypt-data")  # the emptyDir
        os.makedirs(cls.state)
        os.chown(cls.state, 1337, 1337)
        os.chmod(cls.state, 0o700)
        cls.lab = harness.Lab(["h1", "h2"])
        cls.pcap = os.path.join(cls.w.path, "wire.pcap")
        cls.lab.capture(cls.pcap, "port 7946")
        netns = "ns:/run/netns/" + cls.lab.ns("h1")
        mounts = ["-v", cls.cfg + ":/etc/sidecrypt:ro"]
        # 1. the init container sidecrypt-rules.
        r = cls.podman("run", "--rm", "--label", cls.label, "--network", netns, *RULES_STEP,
                       *mounts, "--entrypoint", "/usr/bin/sidecrypt", IMAGE,
                       "rules", "install", "--config", CONF_IN, check=False, timeout=60)
        cls.rules_step = r
        if r.returncode != 0:
            raise AssertionError("rules step exited %d:\n%s%s" % (r.returncode, r.stdout,
                                                                  r.stderr))
        # 2. the native sidecar sidecrypt, and its startup probe (period 1 s, 60 tries).
        cls.proxy_name = "sc-proxy-%d" % os.getpid()
        cls.podman("run", "-d", "--label", cls.label, "--name", cls.proxy_name, "--network",
                   netns, *PROXY, *mounts, "-v", cls.state + ":/var/lib/sidecrypt", IMAGE,
                   "run", "--config", CONF_IN)
        cls.probe = None
        for _ in range(60):
            cls.probe = cls.podman("exec", cls.proxy_name, *PROBE, check=False, timeout=5)
            if cls.probe.returncode == 0:
                break
            time.sleep(1)
        if cls.probe.returncode != 0:
            raise AssertionError("startup probe failed 60 times:\n%s%s\nproxy log:\n%s" % (
                cls.probe.stdout, cls.probe.stderr, cls.proxy_log()[-4000:]))
        # 3. the unmodified plaintext agent, and a natively encrypting one elsewhere.
        cls.agents = {}
        for name, host, extra in (("p1", "h1", []), ("nat", "h2", ["-encrypt", cls.key])):
            cls.agents[name] = cls.lab.spawn(
                host, ["serf", "agent", "-node", name, "-bind", cls.lab.ip(host) + ":7946",
                       "-rpc-addr", "127.0.0.1:7373", "-log-level", "debug"] + extra,
                os.path.join(cls.w.path, name + ".log"))
        for name, p in cls.agents.items():
            harness.wait_for(lambda p=p: "Serf agent running" in harness.read_log(p), 15,
                             what="serf agent " + name)
        cls.lab.run("h2", "serf", "join", cls.lab.ip("h1") + ":7946", timeout=20)
        harness.wait_members_alive(cls.lab, ["h1", "h2"], ["p1", "nat"], timeout=30)

    @classmethod
    def proxy_log(cls):
        r = cls.podman("logs", cls.proxy_name, check=False)
        return r.stdout + r.stderr

    @classmethod
    def cleanup(cls):
        if cls.cleaned or cls.w is None:
            return
        cls.cleaned = True
        try:
            ids = cls.podman("ps", "-a", "-q", "--filter", "label=" + cls.label,
                             check=False).stdout.split()
            if ids:
                cls.podman("rm", "-f", "-t", "0", *ids, check=False, timeout=120)
            if cls.own_store and os.environ.get("SIDECRYPT_KEEP_LOGS"):
                log("image kept: SIDECRYPT_PODMAN_DIR=%s reruns without building"
                    % os.path.join(cls.w.path, "podman"))
            elif cls.own_store:
                cls.podman("rmi", "-a", "-f", check=False, timeout=300)
        except Exception as e:  # noqa: BLE001 - the rest must still be removed
            log("podman cleanup: %s" % e)
        # Overlay mounts left in the private storage root would keep rm -rf from finishing.
        with open("/proc/self/mounts") as f:
            mounts = [l.split()[1] for l in f if l.split()[1].startswith(cls.w.path)]
        for m in reversed(mounts):
            subprocess.run(["umount", "-l", m], capture_output=True)
        harness.cleanup(cls.lab, cls.w)

    @classmethod
    def tearDownClass(cls):
        cls.cleanup()

    def test_1_image_has_the_tools_the_rules_step_and_ready_need(self):
        r = self.podman("run", "--rm", "--label", self.label, "--network", "none",
                        "--entrypoint", "/bin/sh", IMAGE, "-c",
                        "ip -V && nft --version && iptables --version && "
                        "iptables-legacy --version && id -u && /usr/bin/sidecrypt version")
        self.assertIn("iproute2", r.stdout)
        self.assertIn("nftables", r.stdout)
        self.assertIn("1337", r.stdout.split())
        r = self.podman("run", "--rm", "--label", self.label, "--network", "none", "--user", "0",
                        "--entrypoint", "/bin/sh", IMAGE, "-c", "getcap /usr/bin/sidecrypt")
        self.assertIn("cap_net_raw=p", r.stdout)

    def test_2_rules_step_installed_the_policy_routes(self):
        self.assertEqual(self.rules_step.returncode, 0)
        rules = self.lab.run("h1", "ip", "rule").stdout
        self.assertRegex(rules, r"fwmark .* lookup")

    def test_3_proxy_runs_unprivileged_and_is_ready(self):
        self.assertEqual(self.probe.returncode, 0, self.probe.stdout + self.probe.stderr)
        r = self.podman("exec", self.proxy_name, "/bin/sh", "-c",
                        "grep -E '^(Uid|Cap(Prm|Eff|Bnd)|NoNewPrivs)' /proc/1/status")
        st = dict(l.split(":", 1) for l in r.stdout.splitlines())
        self.assertEqual(st["Uid"].split()[:2], ["1337", "1337"], st)
        net_raw = 1 << 13
        for k in ("CapPrm", "CapEff", "CapBnd"):
            self.assertEqual(int(st[k], 16), net_raw, (k, st))
        self.assertEqual(st["NoNewPrivs"].strip(), "1")
        # Read-only root (no tmpfs on /tmp either) and config; the state dir holds the keyring.
        r = self.podman("exec", self.proxy_name, "/bin/sh", "-c",
                        "touch /tmp/x 2>&1; touch /etc/sidecrypt/x 2>&1", check=False)
        self.assertEqual(r.stdout.count("Read-only file system"), 2, r.stdout)
        written = [f for _, _, files in os.walk(self.state) for f in files]
        self.assertIn("local.keyring", written)

    def test_4_plaintext_and_native_agents_alive_in_each_other(self):
        for host in ("h1", "h2"):
            self.assertEqual(harness.serf_members(self.lab, host),
                             {"p1": "alive", "nat": "alive"}, host)

    def test_5_reload_in_the_container(self):
        self.write_config("debug")  # a Secret update
        r = self.podman("exec", self.proxy_name, "/usr/bin/sidecrypt", "reload", "--config",
                        CONF_IN, check=False, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        harness.wait_for(lambda: "reload complete" in self.proxy_log(), 10, what="reload")
        harness.wait_members_alive(self.lab, ["h1", "h2"], ["p1", "nat"], timeout=30)
        r = self.podman("exec", self.proxy_name, *PROBE, check=False, timeout=5)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_6_leave_is_sealed_and_stop_drains(self):
        # The agent stops first (the native sidecar outlives it): its leave must reach the
        # native agent, which accepts sealed gossip only.
        agent = self.agents["p1"]
        agent.send_signal(signal.SIGINT)  # serf's graceful leave
        harness.wait_for(lambda: harness.serf_members(self.lab, "h2").get("p1") == "left",
                         20, interval=0.3, what="p1 left, as the native agent sees it")
        harness.stop_process(agent, timeout=15)
        t0 = time.monotonic()
        r = self.podman("stop", "-t", "30", self.proxy_name, check=False, timeout=60)
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 0, r.stderr)
        code = self.podman("inspect", "--format", "{{.State.ExitCode}}",
                           self.proxy_name).stdout.strip()
        text = self.proxy_log()
        self.assertEqual(code, "0", text[-3000:])
        self.assertIn("forwarding for 2000 ms more", text)
        self.assertIn('"stopped"', text)
        self.assertGreaterEqual(took, 1.5, "stopped before the drain time")
        # Fail closed: the policy routes stay after the proxy has gone.
        self.assertRegex(self.lab.run("h1", "ip", "rule").stdout, r"fwmark .* lookup")

    def test_7_every_gossip_payload_on_the_link_is_sealed(self):
        time.sleep(0.5)  # the capture's last packets
        frames = harness.read_pcap_payloads(self.pcap)
        udp = [p for proto, p in frames if proto == "udp"]
        self.assertGreater(len(udp), 10)
        self.assertTrue(any(proto == "tcp" for proto, _ in frames), "no push/pull stream")
        for proto, payload in frames:
            for name in ("p1", "nat"):
                self.assertNotIn(bytes([0xa0 + len(name)]) + name.encode(), payload,
                                 "plaintext node name on the wire (%s)" % proto)
        r = harness.run(["decode", "--json", "--keyring", self.ring, self.pcap], timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        items = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
        self.assertEqual(len([i for i in items if i["transport"] == "udp"]), len(udp))
        self.assertTrue(any(i["transport"] == "tcp" for i in items))
        for i in items:
            self.assertTrue(i["encrypted"], i)
            self.assertIsNone(i["error"], i)
        log("capture: %d UDP datagrams, %d TCP segments with data; decode: %d items, all "
            "sealed and opened" % (len(udp), len(frames) - len(udp), len(items)))

    def test_8_auto_loops_follow_the_container_cpu_limit(self):
        # runtime.loops "auto" (the default) counts the CPUs the container may use: its cpuset
        # and its CPU quota (--cpus), as the runtime set them up in its cgroup.
        host = len(os.sched_getaffinity(0))
        cases = [(["--cpus", "1"], 1), (["--cpus", "1.5"], min(2, host)),
                 (["--cpuset-cpus", "0"], 1), ([], min(host, 64))]
        for opts, want in cases:
            r = self.podman("run", "--rm", "--label", self.label, "--network", "none", *opts,
                            "-v", self.cfg + ":/etc/sidecrypt:ro", "-v",
                            self.state + ":/var/lib/sidecrypt", "--entrypoint",
                            "/usr/bin/sidecrypt", IMAGE, "check-config", CONF_IN, check=False,
                            timeout=60)
            m = re.search(r"event loops: (\d+)", r.stdout)
            self.assertIsNotNone(m, (opts, r.stdout, r.stderr))
            self.assertEqual(int(m.group(1)), want, (opts, r.stdout))
            log("podman run %s: %s event loop(s)" % (" ".join(opts) or "(no limit)", m.group(1)))


if __name__ == "__main__":
    harness.main()
