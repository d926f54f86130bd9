"""tls_probe.py CA CERT KEY: a Consul-shaped RPC TLS client driven line by line on stdin, run in
the proxy's namespace (OpenSSL through Python's ssl module: another TLS implementation than
sidecrypt's BoringSSL and the Go peers').

    hs HOST:PORT   connect, send Consul's 0x03 (RPC TLS), handshake verifying the server's chain
                   against CA and the name server.dc1.consul, presenting CERT/KEY; then close.
                   Answers "OK <serial hex, lower case>" or "FAIL <error>".
    get URL        HTTP GET; answers "OK <body on one line>" or "FAIL <error>".

Every connection has a 5 s timeout. One answer line per command, flushed."""
import socket
import ssl
import sys
import urllib.request

ca, cert, key = sys.argv[1:4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(ca)
ctx.load_cert_chain(cert, key)


def handshake(addr):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(b"\x03")
        with ctx.wrap_socket(raw, server_hostname="server.dc1.consul") as tls:
            return tls.getpeercert()["serialNumber"].lower().lstrip("0") or "0"


for line in sys.stdin:
    cmd, _, arg = line.strip().partition(" ")
    try:
        if cmd == "hs":
            answer = "OK " + handshake(arg)
        elif cmd == "get":
            with urllib.request.urlopen(arg, timeout=5) as r:
                answer = "OK " + r.read().decode().replace("\n", " ")
        else:
            answer = "FAIL unknown command " + cmd
    except Exception as e:  # noqa: BLE001 - every failure is an answer
        answer = "FAIL %s: %s" % (type(e).__name__, str(e).replace("\n", " "))
    sys.stdout.write(answer + "\n")
    sys.stdout.flush()
