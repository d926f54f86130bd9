"""Claim: RPC TLS sessions resume with Go crypto/tls peers both ways, in network namespaces, with
TLS 1.3 (PSK with ECDHE) and TLS 1.2 (tickets): a Go client with a session cache resumes its
2nd and later connections to sidecrypt's server side (ConnectionState().DidResume), and
sidecrypt's client side resumes with a Go server (the server's DidResume); a reload that
changes the CA set or the leaf certificate makes the next handshake a full one in both
directions; full and resumed handshakes are counted per direction; with
tls.session_resumption = false nothing resumes; a resumed handshake verifies no certificate
chain (the verified-chain counters: after a reload only the first, full, handshake per peer is
a cache miss)."""
import json
import os
import unittest

import harness
from test_rpcpeer_go_interop import parse_line
import test_rpcpeer_go_interop as peers

proxy_toml = peers.rpc_proxy_file


class RpcTlsResumption(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # c: a plaintext client agent behind sidecrypt; s: a plaintext server agent behind
        # sidecrypt; g: Go crypto/tls peers (servers on two addresses: TLS 1.3 and TLS 1.2 only).
        peers.open_lab(cls, ["c", "s", "g"], "network namespaces and netfilter")
        try:
            c = lambda n: os.path.join(cls.certs, n)
            cls.cert = staticmethod(c)
            cls.ca = c("consul-agent-ca.pem")
            cls.client_tls = {"ca_file": cls.ca, "cert_file": c("dc1-client-consul-0.pem"),
                              "key_file": c("dc1-client-consul-0-key.pem"),
                              "verify_outgoing": True, "verify_server_hostname": True}
            cls.server_tls = {"ca_file": cls.ca, "cert_file": c("dc1-server-consul-0.pem"),
                              "key_file": c("dc1-server-consul-0-key.pem"),
                              "verify_incoming": True, "verify_outgoing": True,
                              "verify_server_hostname": True}
            cls.client_cfg = proxy_toml(os.path.join(cls.w.path, "client.toml"),
                                        os.path.join(cls.w.path, "dc"), False, cls.client_tls)
            cls.server_cfg = proxy_toml(os.path.join(cls.w.path, "server.toml"),
                                        os.path.join(cls.w.path, "ds"), True, cls.server_tls)
            cls.sc_client = cls.lab.spawn("c", [harness.binary(), "run", "-c", cls.client_cfg],
                                          os.path.join(cls.w.path, "sc-client.log"))
            cls.sc_server = cls.lab.spawn("s", [harness.binary(), "run", "-c", cls.server_cfg],
                                          os.path.join(cls.w.path, "sc-server.log"))
            for p in (cls.sc_client, cls.sc_server):
                harness.wait_for(lambda p=p: "started:" in harness.read(p.log_path), 10,
                                 what="sidecrypt started")
            cls.plain_server = cls.lab.spawn(
                "s", [cls.peer, "server", "-listen", cls.lab.ip("s") + ":8300", "-lifetime",
                      "600s"], os.path.join(cls.w.path, "plain-server.log"))
            cls.ip12 = "10.250.%d.%d" % (cls.lab.subnet, 200)
            cls.lab.run("g", "ip", "addr", "add", cls.ip12 + "/24", "dev",
                        cls.lab.hosts["g"]["veth"])
            cls.go_servers = {}
            for version, ip in (("1.3", cls.lab.ip("g")), ("1.2", cls.ip12)):
                cls.go_servers[version] = cls.lab.spawn(
                    "g", [cls.peer, "server", "-listen", ip + ":8300", "-ca", cls.ca,
                          "-cert", c("dc1-server-consul-0.pem"), "-key",
                          c("dc1-server-consul-0-key.pem"), "-verify-incoming",
                          "-verify-server-hostname", "-tls-max", version, "-lifetime", "600s"],
                    os.path.join(cls.w.path, "go-server-%s.log" % version))
            for p in [cls.plain_server] + list(cls.go_servers.values()):
                harness.wait_for(lambda p=p: "LISTENING" in harness.read(p.log_path), 15,
                                 what="rpcpeer server")
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        harness.cleanup(cls.lab, cls.w)

    # ---- helpers --------------------------------------------------------------------------

    def reload(self, proc, cfg, data_dir, server, tls):
        proxy_toml(cfg, data_dir, server, tls)
        harness.sighup_reload(proc)

    def reload_server(self, **changes):
        self.reload(self.sc_server, self.server_cfg, os.path.join(self.w.path, "ds"), True,
                    dict(self.server_tls, **changes))

    def reload_client(self, **changes):
        self.reload(self.sc_client, self.client_cfg, os.path.join(self.w.path, "dc"), False,
                    dict(self.client_tls, **changes))

    def rpc_counters(self, host, cfg):
        r = self.lab.run(host, harness.binary(), "status", "--json", "-c", cfg)
        return json.loads(r.stdout)["status"]["rpc"]

    def go_client_args(self, version, n):
        c = self.cert
        return [self.peer, "client", "-addr", self.lab.ip("s") + ":8300", "-tls",
                "-verify-server-hostname", "-ca", self.ca, "-cert",
                c("dc1-client-consul-0.pem"), "-key", c("dc1-client-consul-0-key.pem"),
                "-mode", "rpc", "-n", "2", "-tls-max", version, "-repeat", str(n),
                "-timeout", "30s"]

    def go_client(self, version, n, cache=True):
        """A Go client on g dialling sidecrypt's server side n times; the DidResume list."""
        args = self.go_client_args(version, n) + (["-session-cache"] if cache else [])
        r = self.lab.run("g", *args, check=False, timeout=60)
        word, f = parse_line((r.stdout.strip().splitlines() or [""])[-1])
        self.assertEqual(word, "RESULT ok", f)
        self.assertEqual(f.get("version"), "TLSv" + version, f)
        return f["resumed"].split(",")

    def through_sidecrypt(self, version):
        """One plaintext connection from c to the Go server (sidecrypt upgrades it); whether the
        Go server saw a resumed session."""
        ip = self.lab.ip("g") if version == "1.3" else self.ip12
        server = self.go_servers[version]
        before = len(self.events(server))
        r = self.lab.run("c", self.peer, "client", "-addr", ip + ":8300", "-mode", "rpc", "-n",
                         "2", check=False, timeout=60)
        word, f = parse_line((r.stdout.strip().splitlines() or [""])[-1])
        self.assertEqual(word, "RESULT ok", f)
        harness.wait_for(lambda: len(self.events(server)) > before, 10, what="Go server event")
        ev = self.events(server)[-1]
        self.assertEqual(ev.get("result"), "served", ev)
        self.assertEqual(ev.get("version"), "TLSv" + version, ev)
        self.assertEqual(ev.get("sni"), "server.dc1.consul", ev)
        return ev.get("resumed") == "true"

    def events(self, proc):
        return [parse_line(l)[1] for l in harness.read(proc.log_path).splitlines()
                if l.startswith("EVENT")]

    # ---- sidecrypt as the TLS server ------------------------------------------------------

    def test_1_go_client_resumes_with_sidecrypt_server(self):
        before = self.rpc_counters("s", self.server_cfg)
        for version in ("1.3", "1.2"):
            self.assertEqual(self.go_client(version, 3), ["false", "true", "true"], version)
        # Consul's own client keeps no session cache: every handshake is a full one.
        self.assertEqual(self.go_client("1.3", 2, cache=False), ["false", "false"])
        after = self.rpc_counters("s", self.server_cfg)
        delta = {k: after[k] - before[k] for k in after}
        self.assertEqual(delta["inbound_handshakes_resumed"], 4, delta)
        self.assertEqual(delta["inbound_handshakes_full"], 4, delta)

    def test_2_reload_changing_ca_or_leaf_forces_full_handshakes_inbound(self):
        step = os.path.join(self.w.path, "inbound-step")
        for change in ({"ca_file": os.path.join(self.certs, "negative", "ca-bundle.pem")},
                       {"cert_file": os.path.join(self.certs, "negative", "rsa-server.pem"),
                        "key_file": os.path.join(self.certs, "negative", "rsa-server-key.pem")}):
            with self.subTest(change=sorted(change)):
                with open(step, "w") as f:
                    f.write("2")
                log = os.path.join(self.w.path, "go-client-step.log")
                client = self.lab.spawn(
                    "g", self.go_client_args("1.3", 4) + ["-session-cache", "-step-file", step],
                    log)
                try:
                    harness.wait_for(lambda: harness.read(log).count("CONNECTED") == 2, 30,
                                     what="two connections before the reload")
                    self.reload_server(**change)
                    with open(step, "w") as f:
                        f.write("4")
                    client.wait(timeout=60)
                finally:
                    if client.poll() is None:
                        client.kill()
                word, f = parse_line(harness.read(log).strip().splitlines()[-1])
                self.assertEqual(word, "RESULT ok", f)
                # Resumed before the reload; the first handshake after it is a full one (the
                # old ticket's key is gone), then the new context's ticket resumes.
                self.assertEqual(f["resumed"], "false,true,false,true", f)
        self.reload_server()

    # ---- sidecrypt as the TLS client ------------------------------------------------------

    def test_3_sidecrypt_client_resumes_with_go_server(self):
        before = self.rpc_counters("c", self.client_cfg)
        for version in ("1.3", "1.2"):
            self.assertEqual([self.through_sidecrypt(version) for _ in range(3)],
                             [False, True, True], version)
        after = self.rpc_counters("c", self.client_cfg)
        delta = {k: after[k] - before[k] for k in after}
        self.assertEqual(delta["outbound_handshakes_resumed"], 4, delta)
        self.assertEqual(delta["outbound_handshakes_full"], 2, delta)

    def test_4_reload_changing_ca_or_leaf_forces_full_handshakes_outbound(self):
        self.through_sidecrypt("1.3")
        self.assertTrue(self.through_sidecrypt("1.3"))
        bundle = os.path.join(self.certs, "negative", "ca-bundle.pem")
        self.reload_client(ca_file=bundle)
        self.assertFalse(self.through_sidecrypt("1.3"))  # the cache went with the old setup
        self.assertTrue(self.through_sidecrypt("1.3"))
        self.reload_client()  # back to the original CA (and leaf): full again
        self.assertFalse(self.through_sidecrypt("1.3"))
        self.assertTrue(self.through_sidecrypt("1.3"))

    def test_5_session_resumption_off(self):
        self.reload_client(session_resumption=False)
        self.reload_server(session_resumption=False)
        try:
            self.assertEqual(self.go_client("1.3", 2), ["false", "false"])
            self.assertEqual(self.go_client("1.2", 2), ["false", "false"])
            self.assertEqual([self.through_sidecrypt("1.3") for _ in range(2)], [False, False])
        finally:
            self.reload_client()
            self.reload_server()

    def test_6_resumed_handshakes_verify_no_chain(self):
        """After a reload (empty verified-chain cache, new ticket keys) the one full handshake
        verifies the peer's chain; the resumed ones take it from the cache, both directions."""
        def delta(host, cfg, before):
            after = self.rpc_counters(host, cfg)
            return {k: after[k] - before[k] for k in after}

        self.reload_server()
        before = self.rpc_counters("s", self.server_cfg)
        self.assertEqual(self.go_client("1.3", 3), ["false", "true", "true"])
        d = delta("s", self.server_cfg, before)
        self.assertEqual((d["inbound_handshakes_full"], d["inbound_handshakes_resumed"]), (1, 2), d)
        self.assertEqual((d["chain_cache_misses"], d["chain_cache_hits"]), (1, 2), d)

        self.reload_client()
        before = self.rpc_counters("c", self.client_cfg)
        self.assertEqual([self.through_sidecrypt("1.3") for _ in range(3)], [False, True, True])
        d = delta("c", self.client_cfg, before)
        self.assertEqual((d["outbound_handshakes_full"], d["outbound_handshakes_resumed"]), (1, 2),
                         d)
        self.assertEqual((d["chain_cache_misses"], d["chain_cache_hits"]), (1, 2), d)


if __name__ == "__main__":
    harness.main()
