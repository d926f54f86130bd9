#!/usr/bin/env python3
"""dskit's TCP-only memberlist transport behind sidecrypt (docs/products/dskit.md).

Three network namespaces, each with sidecrypt (profile "custom", one [[intercept.port]] 7946
with protocol "dskit", a gossip key, stage 3) and a memberlist node running on Grafana dskit's
own tcp_transport.go (tests/peers/dskitframes -serve: dskit's file unchanged over Debian's
memberlist 0.2.2). Checks:
  1. the three nodes form one cluster (each lists 3 members);
  2. on the wire (tcpdump on the bridge) every connection to 7946 is dskit-framed and sealed:
     packets keep [1][address] and carry an AES-GCM v1 payload with a right MD5 trailer, streams
     are [2] followed by memberlist's encrypted frame, answered by one; no node name in clear;
  3. a fourth node with no sidecrypt (plaintext dskit) cannot join the sealed cluster.
No real Loki/Mimir binary exists here: the peer is dskit's transport file, not a product.
"""
import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

KEY = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="
SECONDS = 60


def build_dskitframes(outdir):
    import shutil
    import subprocess
    script = os.path.join(harness.REPO_ROOT, "tests", "peers", "build-dskitframes.sh")
    if shutil.which("go") is None:
        harness.skip_or_fail("needs 'go' to build the dskit peer (Debian package golang-go)")
    r = subprocess.run(["bash", script, outdir], capture_output=True, text=True, timeout=300)
    if r.returncode == 3:
        harness.skip_or_fail(r.stderr.strip())
    if r.returncode != 0 or not r.stdout.strip():
        raise AssertionError("building dskitframes failed (exit %d):\n%s"
                             % (r.returncode, r.stderr[-4000:]))
    return r.stdout.strip().splitlines()[-1]


def proxy_toml(w, host):
    data = w.file("data-" + host + "/.keep", "")
    return w.file("proxy-%s.toml" % host, "\n".join([
        "[agent]", 'profile = "custom"', 'data_dir = "%s"' % os.path.dirname(data),
        "[gossip]", 'encrypt = "%s"' % KEY,
        "[intercept]", "install_rules = true", 'drain_time = "0s"',
        "[[intercept.port]]", "port = 7946", 'protocol = "dskit"',
        "[log]", 'level = "debug"', ""]))


def members(proc):
    lines = [l for l in harness.read_log(proc).splitlines() if l.startswith("MEMBERS ")]
    return int(lines[-1].split()[1]) if lines else 0


def connections(frames, port=7946):
    """{(client ip, client port): [dialler bytes, responder bytes]} for TCP to `port`."""
    conns = {}
    for proto, src, sport, dst, dport, payload in frames:
        if proto != "tcp" or not payload:
            continue
        if dport == port:
            conns.setdefault((src, sport, dst), [b"", b""])[0] += payload
        elif sport == port:
            conns.setdefault((dst, dport, src), [b"", b""])[1] += payload
    return conns


def main():
    harness.require_root("network namespaces and netfilter rules")
    harness.require_commands("tcpdump", why="the wire check")
    w = harness.Workdir()
    lab = None
    try:
        peer = build_dskitframes(os.path.join(w.path, "go"))
        lab = harness.Lab(["h1", "h2", "h3", "h4"])
        pcap = os.path.join(w.path, "wire.pcap")
        lab.capture(pcap, "tcp port 7946")
        nodes = {}
        for i, host in enumerate(["h1", "h2", "h3"], start=1):
            proxy = lab.spawn(host, [harness.binary(), "run", "--config", proxy_toml(w, host)],
                              os.path.join(w.path, "sidecrypt-%s.log" % host))
            harness.wait_for(lambda: "started:" in harness.read_log(proxy), 15,
                             what="sidecrypt in " + host)
            args = [peer, "-serve", "-bind", lab.ip(host), "-port", "7946", "-name",
                    "ingester-%d" % i, "-seconds", str(SECONDS)]
            if host != "h1":
                args += ["-join", "%s:7946" % lab.ip("h1")]
            nodes[host] = lab.spawn(host, args, os.path.join(w.path, "node-%s.log" % host))
        harness.wait_for(lambda: all(members(p) == 3 for p in nodes.values()), 40,
                         what="three dskit nodes behind sidecrypt see 3 members")
        print("cluster: 3 nodes see 3 members each")

        # A plaintext dskit node (no sidecrypt) tries to join h1: it must stay alone.
        lone = lab.spawn("h4", [peer, "-serve", "-bind", lab.ip("h4"), "-port", "7946", "-name",
                                "plain-4", "-join", "%s:7946" % lab.ip("h1"), "-seconds", "8"],
                         os.path.join(w.path, "node-h4.log"))
        time.sleep(6)
        assert members(lone) <= 1, "the plaintext node joined: " + harness.read_log(lone)[-2000:]
        assert all(members(p) == 3 for p in nodes.values()), "the sealed cluster changed"
        print("plaintext node: stays alone (%d member)" % members(lone))
        time.sleep(1)

        sealed_ips = {lab.ip(h) for h in ("h1", "h2", "h3")}
        conns = connections(harness.read_pcap_frames(pcap))
        packets = streams = 0
        for (cip, cport, sip), (dialler, responder) in conns.items():
            if cip not in sealed_ips or sip not in sealed_ips or not dialler:
                continue
            for name in (b"ingester-1", b"ingester-2", b"ingester-3"):
                assert name not in dialler and name not in responder, \
                    "node name in clear on %s:%d -> %s" % (cip, cport, sip)
            if dialler[0] == 1:
                n = dialler[1]
                address, payload, digest = dialler[2:2 + n], dialler[2 + n:-16], dialler[-16:]
                assert address.decode().startswith("10.250."), address
                assert len(payload) >= 29 and payload[0] == 1, \
                    "packet payload not sealed v1: %s" % payload[:8].hex()
                assert hashlib.md5(payload).digest() == digest, "MD5 trailer wrong"
                assert responder == b"", "a dskit receiver answered a packet"
                packets += 1
            else:
                assert dialler[0] == 2, "unknown dskit type byte %d" % dialler[0]
                assert dialler[1] == 10, "stream request not an encrypted frame"
                assert not responder or responder[0] == 10, "stream reply not encrypted"
                streams += 1
        print("wire: %d sealed packet connections, %d sealed streams" % (packets, streams))
        assert packets >= 10 and streams >= 2, (packets, streams)
        print("PASS")
    finally:
        harness.cleanup(lab, w)


if __name__ == "__main__":
    main()
