"""Claim: sidecrypt speaks Consul's RPC TLS to Go crypto/tls peers shaped like Consul, both ways,
in network namespaces: a plaintext client behind sidecrypt reaches a Go TLS server that requires
and verifies client certificates (0x03 + TLS + 0x04 yamux + msgpack-rpc); a Go TLS client that
verifies server.dc1.consul reaches a plaintext server behind sidecrypt; the wrong hostname and
the wrong CA are refused; plaintext is refused under verify_incoming and accepted in the
accept-both stage (by reload); raft needs a server certificate; a snapshot-style exchange with
half-close carries 32 MiB up and 64 MiB down intact."""
import os
import subprocess
import unittest

import harness
from test_rpcpeer_go_interop import parse_line
import test_rpcpeer_go_interop as peers

proxy_toml = peers.rpc_proxy_file


class RpcTlsGoPeers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # c: client agent behind sidecrypt; s: server agent behind sidecrypt; g: native Go peers.
        peers.open_lab(cls, ["c", "s", "g"], "network namespaces and netfilter")
        try:
            c = lambda n: os.path.join(cls.certs, n)
            cls.ca = c("consul-agent-ca.pem")
            cls.client_cfg = proxy_toml(os.path.join(cls.w.path, "client.toml"),
                                        os.path.join(cls.w.path, "dc"), False, {
                                            "ca_file": cls.ca,
                                            "cert_file": c("dc1-client-consul-0.pem"),
                                            "key_file": c("dc1-client-consul-0-key.pem"),
                                            "verify_outgoing": True,
                                            "verify_server_hostname": True})
            cls.server_tls = {"ca_file": cls.ca,
                              "cert_file": c("dc1-server-consul-0.pem"),
                              "key_file": c("dc1-server-consul-0-key.pem"),
                              "verify_outgoing": True, "verify_server_hostname": True}
            cls.server_cfg = proxy_toml(os.path.join(cls.w.path, "server.toml"),
                                        os.path.join(cls.w.path, "ds"), True,
                                        dict(cls.server_tls, verify_incoming=True))
            cls.sc_client = cls.lab.spawn("c", [harness.binary(), "run", "-c", cls.client_cfg],
                                          os.path.join(cls.w.path, "sc-client.log"))
            cls.sc_server = cls.lab.spawn("s", [harness.binary(), "run", "-c", cls.server_cfg],
                                          os.path.join(cls.w.path, "sc-server.log"))
            for p in (cls.sc_client, cls.sc_server):
                harness.wait_for(lambda p=p: "started:" in harness.read(p.log_path), 10,
                                 what="sidecrypt started")
            # The plaintext Consul-shaped server behind sidecrypt (no TLS of its own).
            cls.plain_server = cls.lab.spawn(
                "s", [cls.peer, "server", "-listen", cls.lab.ip("s") + ":8300", "-lifetime",
                      "600s"], os.path.join(cls.w.path, "plain-server.log"))
            # A native Go TLS server requiring verified client certificates (verify_incoming).
            cls.tls_server = cls.lab.spawn(
                "g", [cls.peer, "server", "-listen", cls.lab.ip("g") + ":8300", "-ca", cls.ca,
                      "-cert", c("dc1-server-consul-0.pem"), "-key",
                      c("dc1-server-consul-0-key.pem"), "-verify-incoming",
                      "-verify-server-hostname", "-lifetime", "600s"],
                os.path.join(cls.w.path, "tls-server.log"))
            for p in (cls.plain_server, cls.tls_server):
                harness.wait_for(lambda p=p: "LISTENING" in harness.read(p.log_path), 15,
                                 what="rpcpeer server")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        harness.cleanup(cls.lab, cls.w)

    def client(self, host, addr, *args, timeout=60):
        r = self.lab.run(host, self.peer, "client", "-addr", addr, *args, check=False,
                         timeout=timeout + 10)
        line = (r.stdout.strip().splitlines() or [""])[-1]
        return parse_line(line)

    def reload_server(self, verify_incoming):
        proxy_toml(self.server_cfg, os.path.join(self.w.path, "ds"), True,
                   dict(self.server_tls, verify_incoming=verify_incoming))
        harness.sighup_reload(self.sc_server, what="server-side reload")

    def reload_client(self, tls):
        proxy_toml(self.client_cfg, os.path.join(self.w.path, "dc"), False, tls)
        harness.sighup_reload(self.sc_client, what="client-side reload")

    def events(self, proc):
        return [parse_line(l)[1] for l in harness.read(proc.log_path).splitlines()
                if l.startswith("EVENT")]

    def test_plain_client_to_go_tls_server(self):
        word, f = self.client("c", self.lab.ip("g") + ":8300", "-mode", "rpc", "-n", "20")
        self.assertEqual(word, "RESULT ok", f)
        ev = self.events(self.tls_server)[-1]
        self.assertEqual(ev.get("result"), "served", ev)
        self.assertEqual(ev.get("outer"), "3", ev)   # 0x03 upgrade ...
        self.assertEqual(ev.get("inner"), "4", ev)   # ... then the agent's 0x04 inside TLS
        self.assertEqual(ev.get("sni"), "server.dc1.consul", ev)
        self.assertEqual(ev.get("peer_cn"), "client.dc1.consul", ev)

    def test_go_tls_client_to_plain_server(self):
        c = lambda n: os.path.join(self.certs, n)
        word, f = self.client("g", self.lab.ip("s") + ":8300", "-tls", "-verify-server-hostname",
                              "-ca", self.ca, "-cert", c("dc1-client-consul-0.pem"), "-key",
                              c("dc1-client-consul-0-key.pem"), "-mode", "rpc")
        self.assertEqual(word, "RESULT ok", f)
        ev = self.events(self.plain_server)[-1]
        self.assertEqual(ev.get("result"), "served", ev)
        self.assertEqual(ev.get("outer"), "4", ev)  # the agent sees plaintext 0x04 ...
        self.assertEqual(ev.get("tls"), "false", ev)

    def test_wrong_ca_refused_inbound(self):
        neg = os.path.join(self.certs, "negative")
        word, f = self.client("g", self.lab.ip("s") + ":8300", "-tls", "-ca", self.ca, "-cert",
                              os.path.join(neg, "other-client.pem"), "-key",
                              os.path.join(neg, "other-client-key.pem"), "-mode", "rpc",
                              "-timeout", "10s")
        self.assertEqual(word, "RESULT fail", f)
        self.assertRegex(harness.read(self.sc_server.log_path),
                         r"rpc inbound from %s:\d+: TLS: " % self.lab.ip("g").replace(".", r"\."))

    def test_wrong_hostname_refused_outbound(self):
        # A Go server on a second address of host g whose certificate names another datacenter:
        # sidecrypt on c (verify_server_hostname, dc1) must refuse it.
        neg = os.path.join(self.certs, "negative")
        ip2 = "10.250.%d.%d" % (self.lab.subnet, 200)
        self.lab.run("g", "ip", "addr", "add", ip2 + "/24", "dev", self.lab.hosts["g"]["veth"])
        srv = self.lab.spawn("g", [self.peer, "server", "-listen", ip2 + ":8300", "-ca", self.ca,
                                   "-cert", os.path.join(neg, "wrong-dc-server.pem"), "-key",
                                   os.path.join(neg, "wrong-dc-server-key.pem"), "-lifetime",
                                   "120s"], os.path.join(self.w.path, "dc2-server.log"))
        harness.wait_for(lambda: "LISTENING" in harness.read(srv.log_path), 15,
                         what="wrong-dc server")
        word, f = self.client("c", ip2 + ":8300", "-mode", "rpc", "-timeout", "10s")
        self.assertEqual(word, "RESULT fail", f)
        log = harness.read(self.sc_client.log_path)
        self.assertRegex(log, r"rpc outbound from %s:8300: TLS: .*" % ip2.replace(".", r"\."))
        # Declared as a dc2 server (WAN), the same server verifies as server.dc2.consul.
        c = lambda n: os.path.join(self.certs, n)
        client_tls = {"ca_file": self.ca,
                      "cert_file": c("dc1-client-consul-0.pem"),
                      "key_file": c("dc1-client-consul-0-key.pem"),
                      "verify_outgoing": True, "verify_server_hostname": True}
        try:
            self.reload_client(dict(client_tls, datacenter=[
                {"name": "dc2", "addresses": ["%s/32" % ip2]}]))
            word, f = self.client("c", ip2 + ":8300", "-mode", "rpc", "-timeout", "10s")
            self.assertEqual(word, "RESULT ok", f)
            self.assertEqual(self.events(srv)[-1].get("sni"), "server.dc2.consul")
            # Other destinations are still the local datacenter's servers.
            word, f = self.client("c", self.lab.ip("g") + ":8300", "-mode", "rpc")
            self.assertEqual(word, "RESULT ok", f)
        finally:
            self.reload_client(client_tls)

    def test_plaintext_refused_then_accepted_by_reload(self):
        addr = self.lab.ip("s") + ":8300"
        word, f = self.client("g", addr, "-mode", "rpc", "-timeout", "10s")
        self.assertEqual(word, "RESULT fail", f)
        self.assertIn("Non-TLS connection attempted with VerifyIncoming set",
                      harness.read(self.sc_server.log_path))
        self.reload_server(False)  # accept both
        try:
            word, f = self.client("g", addr, "-mode", "rpc")
            self.assertEqual(word, "RESULT ok", f)
        finally:
            self.reload_server(True)

    def test_raft_needs_a_server_certificate(self):
        c = lambda n: os.path.join(self.certs, n)
        addr = self.lab.ip("s") + ":8300"
        word, f = self.client("g", addr, "-tls", "-verify-server-hostname", "-ca", self.ca,
                              "-cert", c("dc1-client-consul-0.pem"), "-key",
                              c("dc1-client-consul-0-key.pem"), "-mode", "raft", "-timeout", "10s")
        self.assertEqual(word, "RESULT fail", f)
        word, f = self.client("g", addr, "-tls", "-verify-server-hostname", "-ca", self.ca,
                              "-cert", c("dc1-server-consul-0.pem"), "-key",
                              c("dc1-server-consul-0-key.pem"), "-mode", "raft")
        self.assertEqual(word, "RESULT ok", f)

    def test_snapshot_half_close_large(self):
        # Plaintext client -> sidecrypt (TLS out) -> sidecrypt (TLS in) -> plaintext server.
        word, f = self.client("c", self.lab.ip("s") + ":8300", "-mode", "snapshot", "-size",
                              str(32 << 20), "-factor", "2", "-timeout", "120s", timeout=120)
        self.assertEqual(word, "RESULT ok", f)


if __name__ == "__main__":
    harness.main()
