"""The reconnect-storm lab of issue 18 item 5, shared by tests/bench/rpc_storm.py (the full-size
benchmark) and tests/integration/test_rpc_reconnect_storm.py (the CI-sized claim).

Two hosts in network namespaces on one bridge (harness.Lab):

  host c: the client agents, one source address each (10.250.<subnet>.100 and up on its veth),
          all driven by one `tlspeer storm` process (tests/peers/tlspeer)
  host s: sidecrypt in the server role (relay B: verify_incoming, client certificates required,
          TPROXY capture of port 8300, plaintext to the agent) and the "agent": `tlspeer agent`,
          a plaintext Consul-server stand-in on s:8300 that echoes after the type byte

One run (StormLab.run): prime N connections (each a 0x03 + mutual-TLS handshake + inner type
byte 0x00 + a 32-byte request echoed back through sidecrypt), hold them, then restart one
server-side component:

  restart="sidecrypt": sidecrypt is stopped (SIGTERM: its sessions close) and started again;
      its session-ticket keys die with it, so clients that cached a session must fall back to a
      full handshake;
  restart="agent": the agent behind sidecrypt is stopped and started again (a Consul server
      restart or upgrade) while sidecrypt keeps running; clients with a session cache resume.

Every client redials as soon as its connection drops (retries with a jittered backoff of 50 ms
doubling up to 1 s). Measured: time from the first drop, and from the restarted component being
ready, until every connection was served again; attempts and client-side failures by kind;
resumed vs full handshakes (the client's DidResume and sidecrypt's inbound_handshakes_*
counters); sidecrypt's refusals by reason (its counters over the storm); peak RSS (sampled every
20 ms) and CPU of sidecrypt; the client's CPU. Every wait is bounded; the lab removes its
namespaces and sidecrypt's rules.
"""
import json
import os
import queue
import resource
import signal
import subprocess
import threading
import time

import harness
import test_rpcpeer_go_interop as peers

# sidecrypt counters that are never a right answer to a client that is within its limits while
# sidecrypt and the agent are up: per-client limit, shed at the descriptor limit, deadlines, the
# preamble budget, TLS failures, refused bytes.
WRONG_TCP = ("rpc_conn_limited", "accept_shed", "accept_errors", "deadline_closed",
             "preamble_budget_closed")
WRONG_CLOSED = ("refused", "ready_deadline", "preamble_budget", "descriptor_limit",
                "socket_error")
# Closes the client caused (it gave up: its connect or I/O bound passed) - reported, not sidecrypt's
# refusal.
CLIENT_GAVE_UP_CLOSED = ("preamble_cut", "truncated")
WRONG_RPC = ("handshakes_failed", "plaintext_refused", "tls_in_tls_refused",
             "unrecognized_byte_refused", "no_certificate_refused", "alpn_unsupported")
# Right refusals while the agent restarts: sidecrypt could not reach it.
AGENT_DOWN_CLOSED = ("connect_failed", "connect_timeout")

AGENT_PORT = 8300


def proc_cpu_s(pid):
    """utime + stime of a live process, in seconds (0 if it is gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_kb(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """Peak VmRSS and the open descriptors of one process, sampled every 20 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.stop_ev = pid, threading.Event()
        self.peak_rss = self.peak_fds = 0

    def run(self):
        while not self.stop_ev.is_set():
            self.peak_rss = max(self.peak_rss, proc_kb(self.pid, "VmRSS"))
            try:
                self.peak_fds = max(self.peak_fds, len(os.listdir("/proc/%d/fd" % self.pid)))
            except OSError:
                return
            self.stop_ev.wait(0.02)

    def stop(self):
        self.stop_ev.set()
        self.join(5)


class LineReader:
    """Reads a child's stdout lines on a thread; next(prefix, timeout) waits (bounded) for the
    first line starting with prefix."""

    def __init__(self, proc):
        self.proc, self.q, self.lines = proc, queue.Queue(), []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.q.put(line.rstrip("\n"))
        self.q.put(None)

    def next(self, prefix, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.q.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                raise AssertionError("storm client exited before %s; output:\n%s" % (
                    prefix, "\n".join(self.lines[-20:])))
            self.lines.append(line)
            if line.startswith(prefix):
                return line[len(prefix):].strip()
        raise AssertionError("no %s line from the storm client within %.0f s" % (prefix, timeout))


def raise_nofile(need=65536):
    """Soft RLIMIT_NOFILE up to `need` (the hard limit may be lower: a container without
    CAP_SYS_RESOURCE); the children inherit it. Returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return max(soft, want)


class StormLab:
    """One lab (hosts c and s, certificates, tlspeer); run() measures one configuration."""

    def __init__(self, sources, log_level="info", client_ports="32768 60999", server_ports=None):
        self.nofile = raise_nofile()
        peers.build_peer_and_certs()
        self.tlspeer = os.path.join(os.path.dirname(peers.PEER), "tlspeer")
        self.certs = peers.CERTS
        self.log_level = log_level
        self.w = harness.Workdir()
        self.lab = None
        self.seq = 0
        self.loops_supported = None
        try:
            self.lab = harness.Lab(["c", "s"])
            veth = self.lab.hosts["c"]["veth"]
            if not 1 <= sources <= 150:
                raise ValueError("sources must be 1..150")
            self.sources = ["10.250.%d.%d" % (self.lab.subnet, 100 + i) for i in range(sources)]
            for ip in self.sources:
                self.lab.run("c", "ip", "addr", "add", ip + "/24", "dev", veth)
            # The clients' ephemeral ports, and (server_ports) the ports sidecrypt's upstream
            # sockets take on s when TPROXY dials the agent from the client's own address.
            self.lab.run("c", "sysctl", "-qw", "net.ipv4.ip_local_port_range=" + client_ports)
            if server_ports:
                self.lab.run("s", "sysctl", "-qw", "net.ipv4.ip_local_port_range=" + server_ports)
        except BaseException:
            self.cleanup()
            raise

    def cert(self, name):
        return os.path.join(self.certs, name)

    def log(self, name):
        self.seq += 1
        return os.path.join(self.w.path, "%02d-%s.log" % (self.seq, name))

    def sysctls(self):
        out = {}
        for k in ("net.ipv4.ip_local_port_range", "net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_syncookies"):
            r = self.lab.run("s", "sysctl", "-n", k, check=False)
            out[k] = r.stdout.strip()
        return out

    # -- sidecrypt ---------------------------------------------------------------------------

    def config(self, loops, resumption, name):
        tls = {"ca_file": self.cert("consul-agent-ca.pem"),
               "cert_file": self.cert("dc1-server-consul-0.pem"),
               "key_file": self.cert("dc1-server-consul-0-key.pem"),
               "verify_incoming": True, "verify_outgoing": True,
               "verify_server_hostname": True, "session_resumption": bool(resumption),
               "rpc_max_conns_per_client": 100}
        body = harness.rpc_proxy_toml(data_dir=os.path.join(self.w.path, "ds"), server=True,
                                      tls=tls, ports=[(AGENT_PORT, "rpc")],
                                      log_level=self.log_level, loops=loops)
        return self.w.file(name, body)

    def supports_loops(self):
        """Whether this sidecrypt knows [runtime] loops (check-config accepts it)."""
        if self.loops_supported is None:
            cfg = self.config(2, True, "probe-loops.toml")
            r = harness.run(["check-config", cfg], timeout=30)
            self.loops_supported = r.returncode == 0
        return self.loops_supported

    def start_sidecrypt(self, cfg):
        p = self.lab.spawn("s", [harness.binary(), "run", "-c", cfg], self.log("sidecrypt"))
        harness.wait_for(lambda: "started:" in harness.read(p.log_path) or p.poll() is not None,
                         20, what="sidecrypt started")
        if p.poll() is not None:
            raise AssertionError("sidecrypt exited:\n" + harness.read(p.log_path)[-3000:])
        return p

    def start_agent(self):
        p = self.lab.spawn("s", [self.tlspeer, "agent", "-listen", "%s:%d" % (
            self.lab.ip("s"), AGENT_PORT), "-lifetime", "1800s"], self.log("agent"))
        harness.wait_for(lambda: "LISTENING" in harness.read(p.log_path) or
                         p.poll() is not None, 15, what="agent listening")
        if p.poll() is not None:
            raise AssertionError("agent exited:\n" + harness.read(p.log_path))
        return p

    # -- one configuration -------------------------------------------------------------------

    def run(self, conns, restart, loops=None, resumption=True, client_cache=None, timeout=120):
        """Primes `conns` connections, restarts `restart` ("sidecrypt" or "agent"), and returns
        the measurements (a dict). loops=None leaves [runtime] out of the config (the build's
        default); client_cache defaults to `resumption`."""
        if client_cache is None:
            client_cache = resumption
        cfg = self.config(loops, resumption, "sidecrypt-%d.toml" % (self.seq + 1))
        res = {"conns": conns, "sources": len(self.sources), "restart": restart, "loops": loops,
               "session_resumption": bool(resumption), "client_session_cache": client_cache,
               "loadavg_before": os.getloadavg()}
        procs = []
        client = None
        try:
            sc = self.start_sidecrypt(cfg)
            procs.append(sc)
            agent = self.start_agent()
            procs.append(agent)
            argv = [self.tlspeer, "storm", "-addr", "%s:%d" % (self.lab.ip("s"), AGENT_PORT),
                    "-sources", ",".join(self.sources), "-conns", str(conns),
                    "-ca", self.cert("consul-agent-ca.pem"),
                    "-cert", self.cert("dc1-client-consul-0.pem"),
                    "-key", self.cert("dc1-client-consul-0-key.pem"),
                    "-timeout", "%ds" % timeout, "-hold", "%ds" % (timeout + 60),
                    "-dial-timeout", "10s"]  # Consul's pool dials with a 10 s timeout
            if client_cache:
                argv.append("-session-cache")
            errf = open(self.log("storm-client"), "w")
            client = subprocess.Popen(["ip", "netns", "exec", self.lab.ns("c")] + argv,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=errf, text=True)
            client.log_file = errf
            self.lab.procs.append(client)
            lines = LineReader(client)
            res["prime"] = json.loads(lines.next("PRIMED", timeout + 30))
            time.sleep(1.0)
            res["rss_kb_held"] = proc_kb(sc.pid, "VmRSS")
            res["hwm_kb_before_restart"] = proc_kb(sc.pid, "VmHWM")
            res["shared_tuples_held"] = self.shared_tuples()
            before = harness.dump_counters(sc)
            kernel0 = self.nstat()
            client_cpu0 = proc_cpu_s(client.pid)
            t0 = time.time()
            if restart == "sidecrypt":
                harness.stop_process(sc, timeout=15)
                res["stopped_s"] = round(time.time() - t0, 3)
                sc = self.start_sidecrypt(cfg)
                procs.append(sc)
                before = None  # a new process: its counters start at zero
                cpu0 = 0.0
            elif restart == "agent":
                cpu0 = proc_cpu_s(sc.pid)
                harness.stop_process(agent, timeout=15)
                res["stopped_s"] = round(time.time() - t0, 3)
                agent = self.start_agent()
                procs.append(agent)
            else:
                raise ValueError("restart must be sidecrypt or agent")
            t_ready = time.time()
            sampler = Sampler(sc.pid)
            sampler.start()
            try:
                storm = json.loads(lines.next("STORM", timeout + 30))
            finally:
                sampler.stop()
            res["sidecrypt_cpu_s"] = round(proc_cpu_s(sc.pid) - cpu0, 3)
            res["client_cpu_s"] = round(proc_cpu_s(client.pid) - client_cpu0, 3)
            res["restart_wall"], res["ready_wall"] = t0, t_ready
            res["ready_after_s"] = round(t_ready - t0, 3)
            res["storm"] = storm
            last = storm["last_served_wall"]
            res["all_served"] = storm["not_served"] == 0
            res["served_after_restart_s"] = round(last - t0, 3) if last else None
            res["served_after_ready_s"] = round(last - t_ready, 3) if last else None
            stuck = [p.split()[-1] for p in storm["problems"] or [] if p.startswith("never dropped")]
            if stuck:  # what both kernels hold for them (for the report)
                res["stuck_sockets"] = {h: [l for l in self.lab.run(
                    h, "ss", "-tanpi", check=False).stdout.splitlines()
                    if any(a in l for a in stuck)] for h in ("c", "s")}
            res["peak_rss_kb"] = sampler.peak_rss
            res["peak_fds"] = sampler.peak_fds
            res["hwm_kb"] = proc_kb(sc.pid, "VmHWM")
            res["rss_kb_after"] = proc_kb(sc.pid, "VmRSS")
            after = harness.dump_counters(sc)
            kernel1 = self.nstat()
            res["kernel_tcp"] = {k: v - kernel0.get(k, 0) for k, v in kernel1.items()
                                 if v - kernel0.get(k, 0)}
            res["counters"] = self.diff(before, after)
            res["wrong_refusals"] = self.wrong(res["counters"])
            res["loadavg_after"] = os.getloadavg()
            client.stdin.close()
            lines.next("DONE", 60)
            client.wait(30)
            res["log_errors"] = [l for l in harness.read(sc.log_path).splitlines()
                                 if "[error]" in l or "[critical]" in l][:20]
        finally:
            if client is not None:
                if client.poll() is None:
                    client.kill()
                    client.wait(5)
                client.stdout.close()
                client.log_file.close()
            for p in procs:
                harness.stop_process(p, timeout=15)
            self.lab.run("s", harness.binary(), "rules", "remove", "-c", cfg, check=False,
                         timeout=30)
        return res

    NSTAT = ("TcpExtSyncookiesSent", "TcpExtSyncookiesRecv", "TcpExtSyncookiesFailed",
             "TcpExtListenOverflows", "TcpExtListenDrops", "TcpExtTCPReqQFullDoCookies",
             "TcpExtTCPReqQFullDrop", "TcpExtTCPChallengeACK", "TcpExtTWKilled",
             "TcpAttemptFails", "TcpEstabResets", "TcpOutRsts")

    def nstat(self):
        """The kernel's TCP counters in s that explain a storm's stalls (listen queue overflows,
        SYN cookies, challenge ACKs), absolute."""
        out = {}
        r = self.lab.run("s", "nstat", "-asz", check=False)
        for line in r.stdout.splitlines():
            w = line.split()
            if len(w) >= 2 and w[0] in self.NSTAT:
                out[w[0]] = int(w[1])
        return out

    def shared_tuples(self):
        """4-tuples that two sockets on s hold at once (sidecrypt's accepted socket of a client
        connection and the agent's socket of sidecrypt's upstream connection, which TPROXY dials
        from the client's own address); returns up to 10 of them, with their states."""
        seen = {}
        for line in self.lab.run("s", "ss", "-Htan", check=False).stdout.splitlines():
            w = line.split()
            if len(w) >= 5:
                seen.setdefault((w[3], w[4]), []).append(w[0])
        shared = {"%s %s" % k: v for k, v in seen.items() if len(v) > 1}
        return {"count": len(shared), "examples": dict(list(shared.items())[:10])}

    @staticmethod
    def diff(before, after):
        out = {}
        for section in ("tcp", "tcp closed", "rpc"):
            a = after.get(section, {})
            b = (before or {}).get(section, {})
            out[section] = {k: v - b.get(k, 0) for k, v in a.items() if v - b.get(k, 0)}
        return out

    @staticmethod
    def wrong(c):
        out = {}
        for k in WRONG_TCP:
            if c["tcp"].get(k):
                out["tcp." + k] = c["tcp"][k]
        for k in WRONG_CLOSED:
            if c["tcp closed"].get(k):
                out["closed." + k] = c["tcp closed"][k]
        for k in WRONG_RPC:
            if c["rpc"].get(k):
                out["rpc." + k] = c["rpc"][k]
        return out

    def cleanup(self):
        harness.cleanup(self.lab, self.w)
        for d in peers._scratch:
            import shutil
            shutil.rmtree(d, ignore_errors=True)
