"""Claim: explicit RPC listeners ([[listener]]) follow a reload (SIGHUP or `sidecrypt reload`)
without a restart: an added listener accepts, a removed one stops accepting while its established
connections go on, an unchanged one keeps its socket; a reload whose new listener cannot be opened
(address in use) fails as a whole, says why, and changes nothing.

  c: sidecrypt A (outbound listeners, plaintext in, TLS out) -> s:8443
  s: sidecrypt B (inbound listener s:8443, TLS in with verify_incoming) -> the plaintext
     Consul-shaped server (yamux over 0x04) on 127.0.0.1:8300

The established connection is a yamux session through A and B; it answers yamux pings before
and after its listener is removed."""
import os
import subprocess
import unittest

import harness
from test_rpc_explicit_listeners import start_relays_and_server
from test_rpcpeer_go_interop import parse_line
import test_rpcpeer_go_interop as peers

# Connects through a listener, opens Consul's multiplexed RPC (0x04, yamux) and answers each
# number on stdin with a yamux ping of that opaque value: prints "PONG <type> <flags> <value>",
# or "CLOSED" when the connection ended.
PINGER = r'''
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
s.sendall(b"\x04")
print("CONNECTED", flush=True)
for line in sys.stdin:
    s.sendall(struct.pack(">BBHII", 0, 2, 1, 0, int(line)))
    hdr = b""
    while len(hdr) < 12:
        chunk = s.recv(12 - len(hdr))
        if not chunk:
            print("CLOSED", flush=True)
            sys.exit(0)
        hdr += chunk
    _, kind, flags, _, value = struct.unpack(">BBHII", hdr)
    print("PONG %d %d %d" % (kind, flags, value), flush=True)
'''


def listener(port, upstream):
    return {"name": "out_%d" % port, "listen": "127.0.0.1:%d" % port, "upstream": upstream,
            "direction": "outbound"}


def write_config(path, data_dir, role, listeners):
    c = lambda n: os.path.join(peers.CERTS, n)
    text = harness.rpc_proxy_toml(
        data_dir=data_dir, server=role == "server", listeners=listeners, log_level="info",
        tls={"ca_file": c("consul-agent-ca.pem"), "cert_file": c("dc1-%s-consul-0.pem" % role),
             "key_file": c("dc1-%s-consul-0-key.pem" % role), "verify_outgoing": True,
             "verify_server_hostname": True, "verify_incoming": role == "server"})
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)  # a reload never reads a half-written file
    return path


class ListenerReload(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        peers.open_lab(cls, ["c", "s"], "network namespaces")
        try:
            cls.b_addr = cls.lab.ip("s") + ":8443"
            cls.a_cfg = os.path.join(cls.w.path, "a.toml")
            cls.write_a([listener(9000, cls.b_addr), listener(9005, cls.b_addr)])
            b_cfg = write_config(os.path.join(cls.w.path, "b.toml"),
                                 os.path.join(cls.w.path, "db"), "server",
                                 [{"listen": cls.b_addr, "upstream": "127.0.0.1:8300",
                                   "direction": "inbound"}])
            cls.a, cls.b, cls.server = start_relays_and_server(cls.lab, cls.w.path, cls.peer,
                                                               cls.a_cfg, b_cfg)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        harness.cleanup(cls.lab, cls.w)

    @classmethod
    def write_a(cls, listeners):
        write_config(cls.a_cfg, os.path.join(cls.w.path, "da"), "client", listeners)

    def call(self, port):
        r = self.lab.run("c", self.peer, "client", "-addr", "127.0.0.1:%d" % port, "-mode", "rpc",
                         "-timeout", "10s", check=False, timeout=60)
        return parse_line((r.stdout.strip().splitlines() or [""])[-1])[0]

    def reload(self):
        return self.lab.run("c", harness.binary(), "reload", "-c", self.a_cfg, check=False)

    def test_reload_adds_removes_and_refuses_as_a_whole(self):
        self.assertEqual(self.call(9000), "RESULT ok")
        pinger = subprocess.Popen(["ip", "netns", "exec", self.lab.ns("c"), "python3", "-c",
                                   PINGER, "9000"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(pinger.stdout.readline().strip(), "CONNECTED")

            def ping(value):
                pinger.stdin.write("%d\n" % value)
                pinger.stdin.flush()
                return pinger.stdout.readline().strip()
            self.assertEqual(ping(7), "PONG 2 2 7")  # type ping, flag ACK, same opaque value

            # Reload: 9000 removed, 9005 kept, 9001 added.
            self.write_a([listener(9005, self.b_addr), listener(9001, self.b_addr)])
            r = self.reload()
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            log = harness.read(self.a.log_path)
            self.assertIn("listener out_9000 on 127.0.0.1:9000 removed", log)
            self.assertIn("listener out_9001 added: outbound", log)
            self.assertNotIn("listener out_9005 added", log)  # kept its socket
            self.assertEqual(self.call(9001), "RESULT ok")
            self.assertEqual(self.call(9005), "RESULT ok")
            refused = self.lab.run("c", "python3", "-c",
                                   "import socket; socket.create_connection(('127.0.0.1', 9000),"
                                   " timeout=5)", check=False)
            self.assertIn("ConnectionRefusedError", refused.stderr)
            # The connection accepted on the removed listener goes on.
            self.assertEqual(ping(8), "PONG 2 2 8")

            # A new listener on an address in use: the reload fails as a whole.
            squatter = self.lab.spawn("c", ["python3", "-c",
                                            "import socket, time; s = socket.socket(); "
                                            "s.bind(('127.0.0.1', 9002)); s.listen(); "
                                            "print('BOUND', flush=True); time.sleep(120)"],
                                      os.path.join(self.w.path, "squatter.log"))
            harness.wait_for(lambda: "BOUND" in harness.read(squatter.log_path), 10,
                             what="port 9002 taken")
            self.write_a([listener(9002, self.b_addr)])
            r = self.reload()
            self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("127.0.0.1:9002", r.stdout + r.stderr)
            log = harness.read(self.a.log_path)
            self.assertIn("reload failed, keeping the running configuration", log)
            self.assertIn("Address already in use", log.split("reload failed")[-1])
            # Nothing changed: 9001 and 9005 still accept, and still reach the server.
            self.assertEqual(self.call(9001), "RESULT ok")
            self.assertEqual(self.call(9005), "RESULT ok")
            self.assertEqual(ping(9), "PONG 2 2 9")
            self.assertIsNone(self.a.poll())
        finally:
            pinger.stdin.close()
            pinger.kill()
            pinger.wait(10)
            pinger.stdout.close()


if __name__ == "__main__":
    harness.main()
