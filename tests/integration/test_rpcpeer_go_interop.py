"""Claim: the Go RPC test peers behave like Consul's RPC port and connection pool.

tests/peers/rpcpeer is built offline from Debian's Go packages and talks Go client <-> Go server
over loopback, with certificates from certs-example/make-certs.sh: plaintext, TLS with chain-only
verification, TLS with verify_server_hostname succeed (RPC over yamux, snapshot half-close, raft
echo); the wrong datacenter, plaintext under verify_incoming, TLS-in-TLS and a client
certificate on raft are refused as Consul refuses them. This proves the peers before the proxy
sits between them. Needs Go (golang-go); outside CI it skips when Go is missing.
"""
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEER = None   # path of the built rpcpeer
CERTS = None  # make-certs.sh output directory
_scratch = []


def parse_line(line):
    """'RESULT ok a=1 b="x y"' -> ('RESULT ok', {'a': '1', 'b': 'x y'})."""
    words, fields = [], {}
    for token in shlex.split(line):
        if "=" in token:
            key, value = token.split("=", 1)
            fields[key] = value
        else:
            words.append(token)
    return " ".join(words), fields


def rpc_proxy_file(path, data_dir, server, tls):
    """Writes a sidecrypt config that intercepts RPC (8300) with `tls`; returns its path."""
    with open(path, "w") as f:
        f.write(harness.rpc_proxy_toml(data_dir=data_dir, server=server, tls=tls,
                                       ports=[(8300, "rpc")]))
    return path


def open_lab(cls, hosts, why="network namespaces and netfilter"):
    """The RPC tests' common set-up: root, the Go peer and fresh certificates, then cls.peer,
    cls.certs, cls.w (work directory) and cls.lab (the hosts). Tear down with
    harness.cleanup(cls.lab, cls.w)."""
    harness.require_root(why)
    build_peer_and_certs()
    cls.peer, cls.certs = PEER, CERTS
    cls.w = harness.Workdir()
    cls.lab = harness.Lab(hosts)


def build_peer_and_certs():
    global PEER, CERTS
    if shutil.which("go") is None:
        msg = "%s: Go is not installed (apt-get install golang-go)" % os.path.basename(sys.argv[0])
        if harness.in_ci():
            print("FAIL in CI: " + msg, file=sys.stderr)
            sys.exit(1)
        print("SKIP: " + msg, file=sys.stderr)
        sys.exit(harness.SKIP)
    sidecrypt_bin = os.environ.get("SIDECRYPT_BIN")
    if sidecrypt_bin:  # keep the peer and Go's build cache next to the build, reused across runs
        out = os.path.join(os.path.dirname(os.path.abspath(sidecrypt_bin)), "peers")
    else:
        out = tempfile.mkdtemp(prefix="sidecrypt-peers-")
        _scratch.append(out)
    r = subprocess.run(["bash", os.path.join(ROOT, "tests/peers/build.sh"), out],
                       capture_output=True, text=True, timeout=240)
    if r.returncode != 0:
        raise SystemExit("building rpcpeer failed:\n" + r.stdout + r.stderr)
    PEER = os.path.join(out, "rpcpeer")
    CERTS = tempfile.mkdtemp(prefix="sidecrypt-certs-")
    _scratch.append(CERTS)
    r = subprocess.run(["bash", os.path.join(ROOT, "certs-example/make-certs.sh"), CERTS,
                        "dc1", "consul", "--negatives"], capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        raise SystemExit("make-certs.sh failed:\n" + r.stdout + r.stderr)


def cert(name):
    return os.path.join(CERTS, name)


CA = ["-ca", "consul-agent-ca.pem"]
SERVER_CERT = ["-cert", "dc1-server-consul-0.pem", "-key", "dc1-server-consul-0-key.pem"]
CLIENT_CERT = ["-cert", "dc1-client-consul-0.pem", "-key", "dc1-client-consul-0-key.pem"]


def with_paths(args):
    """Prefix the values of file flags with the certificate directory."""
    out = list(args)
    for i, a in enumerate(out[:-1]):
        if a in ("-ca", "-cert", "-key"):
            out[i + 1] = cert(out[i + 1])
    return out


class Server:
    """A running `rpcpeer server`; collects its output lines."""

    def __init__(self, *args):
        self.lines = []
        self.lock = threading.Lock()
        self.proc = subprocess.Popen([PEER, "server", "-lifetime", "120s"] + with_paths(args),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        harness.wait_for(lambda: self._addr() is not None, timeout=10,
                         what="rpcpeer server to listen")
        self.addr = self._addr()

    def _read(self):
        for line in self.proc.stdout:
            with self.lock:
                self.lines.append(line.rstrip("\n"))

    def _addr(self):
        with self.lock:
            for line in self.lines:
                word, fields = parse_line(line)
                if word == "LISTENING":
                    return fields["addr"]
        if self.proc.poll() is not None:
            raise AssertionError("rpcpeer server exited: %s" % "\n".join(self.lines))
        return None

    def events(self):
        with self.lock:
            return [parse_line(l)[1] for l in self.lines if l.startswith("EVENT ")]

    def wait_event(self, count=1):
        harness.wait_for(lambda: len(self.events()) >= count, timeout=10,
                         what="%d EVENT line(s) from rpcpeer server" % count)
        return self.events()[count - 1]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.reader.join(5)
        self.proc.stdout.close()


def client(server, *args):
    r = subprocess.run([PEER, "client", "-addr", server.addr, "-timeout", "20s"] +
                       with_paths(args), capture_output=True, text=True, timeout=60)
    lines = [l for l in r.stdout.splitlines() if l.startswith("RESULT ")]
    if len(lines) != 1:
        raise AssertionError("no RESULT line (rc=%d): %s %s" % (r.returncode, r.stdout, r.stderr))
    word, fields = parse_line(lines[0])
    ok = word == "RESULT ok"
    if ok != (r.returncode == 0):
        raise AssertionError("RESULT and exit code disagree: %s rc=%d" % (lines[0], r.returncode))
    return ok, fields


class GoRpcPeers(unittest.TestCase):
    def setUp(self):
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.stop()

    def server(self, *args):
        s = Server(*args)
        self.servers.append(s)
        return s

    def assertOk(self, result):
        ok, fields = result
        self.assertTrue(ok, fields)
        return fields

    def assertFails(self, result, needle):
        ok, fields = result
        self.assertFalse(ok, fields)
        self.assertIn(needle, fields.get("error", ""))
        return fields

    def test_plaintext_rpc_snapshot_and_raft(self):
        s = self.server(*CA, *SERVER_CERT)  # TLS-capable, verify_incoming off: accepts both
        f = self.assertOk(client(s, "-mode", "rpc", "-n", "20", "-streams", "3"))
        self.assertEqual(f["server_tls"], "false")
        self.assertEqual(f["calls"], "20")
        f = self.assertOk(client(s, "-mode", "snapshot", "-size", "200000"))
        self.assertEqual(f["bytes_down"], "600000")  # read after the client's TCP half-close
        self.assertOk(client(s, "-mode", "raft", "-size", "100000"))
        self.assertOk(client(s, "-mode", "rpc-single"))
        self.assertEqual(s.wait_event(4)["tls"], "false")

    def test_tls_chain_only(self):
        s = self.server(*CA, *SERVER_CERT, "-verify-incoming")
        f = self.assertOk(client(s, "-tls", *CA, *CLIENT_CERT))
        self.assertEqual(f["server_tls"], "true")
        self.assertEqual(f["server_inner"], "4")
        self.assertEqual(f["server_sni"], "")  # docs/spec/consul-rpc-tls.md §2.3: no ServerName, so no SNI
        self.assertEqual(f["server_peer_cn"], "client.dc1.consul")

    def test_tls_verify_server_hostname(self):
        s = self.server(*CA, *SERVER_CERT, "-verify-incoming", "-verify-server-hostname")
        vsh = ["-tls", "-verify-server-hostname", *CA, *CLIENT_CERT]
        f = self.assertOk(client(s, *vsh))
        self.assertEqual(f["server_sni"], "server.dc1.consul")
        self.assertEqual(f["version"], "TLSv1.3")
        f = self.assertOk(client(s, *vsh, "-tls-max", "1.2"))
        self.assertEqual(f["version"], "TLSv1.2")
        # Snapshot over TLS: the client's CloseWrite is a close_notify; the reply still arrives.
        f = self.assertOk(client(s, *vsh, "-mode", "snapshot", "-size", "200000"))
        self.assertEqual(f["bytes_down"], "600000")
        # Native TLS with ALPN, no prefix byte (docs/spec/consul-rpc-tls.md §1.4).
        f = self.assertOk(client(s, "-alpn", "consul/rpc-multi", "-verify-server-hostname", *CA,
                                 *CLIENT_CERT))
        self.assertEqual(f["alpn"], "consul/rpc-multi")

    def test_wrong_datacenter_fails(self):
        s = self.server(*CA, *SERVER_CERT, "-verify-incoming")
        self.assertFails(client(s, "-tls", "-verify-server-hostname", "-dc", "dc2", *CA,
                                *CLIENT_CERT), "not server.dc2.consul")
        wrong = self.server(*CA, "-cert", "negative/wrong-dc-server.pem", "-key",
                            "negative/wrong-dc-server-key.pem")
        self.assertFails(client(wrong, "-tls", "-verify-server-hostname", *CA, *CLIENT_CERT),
                         "not server.dc1.consul")
        # Chain-only verification does not look at names (Consul without the hostname check).
        self.assertOk(client(wrong, "-tls", *CA, *CLIENT_CERT))

    def test_refusals_match_consul(self):
        s = self.server(*CA, *SERVER_CERT, "-verify-incoming", "-verify-server-hostname")
        self.assertFalse(client(s, "-mode", "rpc")[0])
        self.assertEqual(s.wait_event(1)["reason"],
                         "Non-TLS connection attempted with VerifyIncoming set")
        self.assertFalse(client(s, "-tls", "-type", "3", *CA, *CLIENT_CERT)[0])
        self.assertEqual(s.wait_event(2)["reason"],
                         "TLS connection attempting to establish inner TLS connection")
        self.assertFalse(client(s, "-tls", "-mode", "raft", *CA, *CLIENT_CERT)[0])
        self.assertIn("server identity check failed", s.wait_event(3)["reason"])
        self.assertOk(client(s, "-tls", "-mode", "raft", *CA, *SERVER_CERT))
        # RPCTLSInsecure stays allowed with verify_incoming, without a client certificate.
        f = self.assertOk(client(s, "-tls", "-mode", "insecure", "-verify-server-hostname", *CA))
        self.assertEqual(f["server_peer_cn"], "")
        self.assertFails(client(s, "-tls", "-tls-min", "1.1", "-tls-max", "1.1", *CA,
                                *CLIENT_CERT), "protocol version not supported")


if __name__ == "__main__":
    build_peer_and_certs()
    try:
        harness.main()
    finally:
        for d in _scratch:
            shutil.rmtree(d, ignore_errors=True)
