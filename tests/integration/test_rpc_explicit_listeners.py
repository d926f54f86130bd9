"""Claim: explicit RPC listeners (a fixed listen address and a fixed upstream, no netfilter) work
in both directions, as operators use them with Consul's advertise_addrs (issue 6, item 5):

  c: Consul-shaped plaintext client -> sidecrypt A, listener 127.0.0.1:9000 (outbound:
     plaintext in, Consul RPC TLS out, verifying server.dc1.consul) -> s:8443
  s: sidecrypt B, listener s:8443 (inbound: TLS in with verify_incoming, plaintext out)
     -> the plaintext Consul-shaped server on 127.0.0.1:8300

A msgpack-rpc call over yamux succeeds end to end and the server sees plaintext 0x04; a native
Go TLS client (client certificate, server.dc1.consul) is served by B directly; plaintext and a
client without a certificate are refused by B; neither namespace has any sidecrypt netfilter
rule, and sidecrypt is ready without them."""
import os
import unittest

import harness
from test_rpcpeer_go_interop import parse_line
import test_rpcpeer_go_interop as peers


def write_config(path, data_dir, role, listener):
    c = lambda n: os.path.join(peers.CERTS, n)
    tls = {"ca_file": c("consul-agent-ca.pem"),
           "cert_file": c("dc1-%s-consul-0.pem" % role),
           "key_file": c("dc1-%s-consul-0-key.pem" % role),
           "verify_outgoing": True, "verify_server_hostname": True,
           "verify_incoming": role == "server"}
    with open(path, "w") as f:
        f.write(harness.rpc_proxy_toml(data_dir=data_dir, server=role == "server", tls=tls,
                                       listeners=[listener]))
    return path


def start_relays_and_server(lab, workdir, peer, a_cfg, b_cfg):
    """sidecrypt A (host c) and B (host s), each waited for, then the plaintext Consul-shaped
    rpcpeer server on s's 127.0.0.1:8300. Returns (a, b, server) as Lab.spawn returns them."""
    a = lab.spawn("c", [harness.binary(), "run", "-c", a_cfg], os.path.join(workdir, "a.log"))
    b = lab.spawn("s", [harness.binary(), "run", "-c", b_cfg], os.path.join(workdir, "b.log"))
    for p in (a, b):
        harness.wait_for(lambda p=p: "started:" in harness.read(p.log_path), 10,
                         what="sidecrypt started")
    server = lab.spawn("s", [peer, "server", "-listen", "127.0.0.1:8300", "-lifetime", "300s"],
                       os.path.join(workdir, "server.log"))
    harness.wait_for(lambda: "LISTENING" in harness.read(server.log_path), 15,
                     what="rpcpeer server")
    return a, b, server


class ExplicitListeners(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        peers.open_lab(cls, ["c", "s"], "network namespaces")
        try:
            s_ip = cls.lab.ip("s")
            cls.b_addr = s_ip + ":8443"
            cls.a_cfg = write_config(os.path.join(cls.w.path, "a.toml"),
                                     os.path.join(cls.w.path, "da"), "client",
                                     {"listen": "127.0.0.1:9000", "upstream": cls.b_addr,
                                      "direction": "outbound"})
            cls.b_cfg = write_config(os.path.join(cls.w.path, "b.toml"),
                                     os.path.join(cls.w.path, "db"), "server",
                                     {"listen": cls.b_addr, "upstream": "127.0.0.1:8300",
                                      "direction": "inbound"})
            cls.a, cls.b, cls.server = start_relays_and_server(cls.lab, cls.w.path, cls.peer,
                                                               cls.a_cfg, cls.b_cfg)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        harness.cleanup(cls.lab, cls.w)

    def client(self, host, addr, *args):
        r = self.lab.run(host, self.peer, "client", "-addr", addr, *args, check=False,
                         timeout=60)
        return parse_line((r.stdout.strip().splitlines() or [""])[-1])

    def events(self):
        return [parse_line(l)[1] for l in harness.read(self.server.log_path).splitlines()
                if l.startswith("EVENT")]

    def test_1_plaintext_client_through_both_listeners(self):
        word, f = self.client("c", "127.0.0.1:9000", "-mode", "rpc", "-n", "20")
        self.assertEqual(word, "RESULT ok", f)
        ev = self.events()[-1]
        self.assertEqual(ev.get("result"), "served", ev)
        self.assertEqual(ev.get("outer"), "4", ev)  # the agent sees the plaintext type byte
        self.assertEqual(ev.get("tls"), "false", ev)
        self.assertIn("listener rpc_out_9000: outbound", harness.read(self.a.log_path))
        self.assertIn("listener rpc_in_8443: inbound", harness.read(self.b.log_path))
        status = self.lab.run("s", harness.binary(), "status", "--json", "-c", self.b_cfg)
        self.assertIn("client.dc1.consul", status.stdout)

    def test_2_native_tls_client_straight_to_the_inbound_listener(self):
        c = lambda n: os.path.join(self.certs, n)
        word, f = self.client("c", self.b_addr, "-tls", "-verify-server-hostname", "-ca",
                              c("consul-agent-ca.pem"), "-cert", c("dc1-client-consul-0.pem"),
                              "-key", c("dc1-client-consul-0-key.pem"), "-mode", "rpc")
        self.assertEqual(word, "RESULT ok", f)

    def test_3_refusals(self):
        # Plaintext straight to B: refused under verify_incoming, with Consul's words.
        word, f = self.client("c", self.b_addr, "-mode", "rpc", "-timeout", "10s")
        self.assertEqual(word, "RESULT fail", f)
        self.assertIn("Non-TLS connection attempted with VerifyIncoming set",
                      harness.read(self.b.log_path))
        # TLS without a client certificate: refused.
        c = lambda n: os.path.join(self.certs, n)
        word, f = self.client("c", self.b_addr, "-tls", "-ca", c("consul-agent-ca.pem"),
                              "-mode", "rpc", "-timeout", "10s")
        self.assertEqual(word, "RESULT fail", f)

    def test_4_no_netfilter_rules(self):
        for host in ("c", "s"):
            r = self.lab.run(host, "nft", "list", "table", "inet", "sidecrypt", check=False)
            self.assertNotEqual(r.returncode, 0, r.stdout)
        ready = self.lab.run("c", harness.binary(), "status", "-c", self.a_cfg, check=False)
        self.assertIn("ready: yes", ready.stdout)


if __name__ == "__main__":
    harness.main()
