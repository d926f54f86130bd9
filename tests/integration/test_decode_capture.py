"""`sidecrypt decode` opens the captured Serf 0.9.4 traffic exactly as memberlist 0.2.2 did.

Decodes tests/vectors/captured/serf-0.9.4-encrypted.pcap with the capture's keys and checks
every UDP packet and both directions of the join push/pull against captured/verified.json (key
index, one-line layer summary), the --json fields, the Serf query names, the exit status when a
key is missing, --hex, and clear errors for unreadable captures. The same traffic rewritten with
other link types (Linux cooked SLL/SLL2, raw IP), as IPv6, as pcapng and with the TCP segments
split, reordered and retransmitted must decode identically. Needs no root.
"""
import base64
import json
import os
import struct
import unittest

import harness

VECTORS = os.environ.get("SIDECRYPT_VECTORS_DIR") or os.path.join(
    harness.REPO_ROOT, "tests", "vectors")
CAPTURED = os.path.join(VECTORS, "captured")
PCAP = os.path.join(CAPTURED, "serf-0.9.4-encrypted.pcap")
REQUIRED = ("src", "dst", "transport", "encrypted", "version", "key_index", "key_fingerprint",
            "plaintext_hex", "messages", "error")


def load(name):
    with open(os.path.join(CAPTURED, name)) as f:
        return json.load(f)


# --- a minimal pcap/pcapng reader and writer, to rewrite the capture --------------------------

def read_packets(path):
    """[(ts, proto, src_ip, dst_ip, sport, dport, seq, ack, flags, payload)] of an Ethernet
    IPv4 pcap (the committed capture)."""
    with open(path, "rb") as f:
        data = f.read()
    out, pos = [], 24
    while pos + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack("<IIII", data[pos:pos + 16])
        frame = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        ip = frame[14:]
        ihl, total, proto = (ip[0] & 15) * 4, struct.unpack(">H", ip[2:4])[0], ip[9]
        l4 = ip[ihl:total]
        src, dst = ip[12:16], ip[16:20]
        sport, dport = struct.unpack(">HH", l4[:4])
        if proto == 17:
            out.append((sec + usec / 1e6, 17, src, dst, sport, dport, 0, 0, 0, l4[8:]))
        elif proto == 6:
            seq, ack = struct.unpack(">II", l4[4:12])
            off, flags = (l4[12] >> 4) * 4, l4[13]
            out.append((sec + usec / 1e6, 6, src, dst, sport, dport, seq, ack, flags, l4[off:]))
    return out


def l4_bytes(p):
    _, proto, _, _, sport, dport, seq, ack, flags, payload = p
    if proto == 17:
        return struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    return struct.pack(">HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload


def ip_bytes(p, v6):
    _, proto, src, dst, *_ = p
    body = l4_bytes(p)
    if v6:
        s6 = bytes.fromhex("fd000250000000000000000000000000")[:15] + src[3:4]
        d6 = bytes.fromhex("fd000250000000000000000000000000")[:15] + dst[3:4]
        return struct.pack(">IHBB", 0x60000000, len(body), proto, 64) + s6 + d6 + body
    return struct.pack(">BBHHHBBH", 0x45, 0, 20 + len(body), 0, 0x4000, 64, proto, 0) + src + \
        dst + body


def link_frame(ip, linktype):
    etype = 0x86dd if ip[0] >> 4 == 6 else 0x0800
    if linktype == 1:
        return b"\x02" * 6 + b"\x04" * 6 + struct.pack(">H", etype) + ip
    if linktype == 113:  # Linux cooked v1
        return struct.pack(">HHH", 0, 1, 6) + b"\x02" * 8 + struct.pack(">H", etype) + ip
    if linktype == 276:  # Linux cooked v2
        return struct.pack(">HHIHBB", etype, 0, 2, 1, 0, 6) + b"\x02" * 8 + ip
    return ip  # 101: raw IP


def write_pcap(path, packets, linktype=1, v6=False, pcapng=False):
    frames = [(p[0], link_frame(ip_bytes(p, v6), linktype)) for p in packets]
    with open(path, "wb") as f:
        if not pcapng:
            f.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 262144, linktype))
            for ts, fr in frames:
                f.write(struct.pack("<IIII", int(ts), int(round((ts % 1) * 1e6)), len(fr),
                                    len(fr)) + fr)
            return
        f.write(struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28))
        f.write(struct.pack("<IIHHII", 1, 20, linktype, 0, 262144, 20))
        for ts, fr in frames:
            pad = b"\0" * (-len(fr) % 4)
            n = 32 + len(fr) + len(pad)
            us = int(round(ts * 1e6))
            f.write(struct.pack("<IIIIIII", 6, n, 0, us >> 32, us & 0xffffffff, len(fr),
                                len(fr)) + fr + pad + struct.pack("<I", n))


def shuffle_tcp(packets):
    """Every TCP data segment split into 40-byte pieces sent last-first, the first piece
    retransmitted, and an overlapping piece added."""
    out = []
    for p in packets:
        payload = p[9]
        if p[1] != 6 or not payload:
            out.append(p)
            continue
        pieces = [(p[6] + i, payload[i:i + 40]) for i in range(0, len(payload), 40)]
        pieces = list(reversed(pieces)) + [pieces[0], (p[6] + 20, payload[20:70])]
        for seq, chunk in pieces:
            out.append(p[:6] + (seq,) + p[7:9] + (chunk,))
    return out


class DecodeCapture(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cap = load("captured.json")
        cls.ver = load("verified.json")
        cls.work = harness.Workdir()
        cls.ring = cls.work.file("local.keyring", json.dumps(cls.cap["keys_base64"]), 0o600)
        cls.k1 = cls.work.file("k1.keyring", json.dumps(cls.cap["keys_base64"][:1]), 0o600)

    @classmethod
    def tearDownClass(cls):
        cls.work.cleanup()

    def decode(self, *args):
        return harness.run(["decode"] + list(args))

    def items(self, r):
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def check_capture(self, items, v6=False):
        udp = {i["frame"]: i for i in items if i["transport"] == "udp"}
        tcp = [i for i in items if i["transport"] == "tcp"]
        self.assertEqual(len(udp), 46)
        self.assertEqual(len(tcp), 2)

        def addr(text):
            if not v6:
                return text
            host, port = text.rsplit(":", 1)
            return "[fd00:250::%x]:%s" % (int(host.split(".")[-1]), port)

        for want in self.ver["udp"]:
            got = udp.get(want["frame"])
            self.assertIsNotNone(got, "frame %d not reported" % want["frame"])
            self.assertTrue(got["encrypted"])
            self.assertEqual(got["version"], 1)
            self.assertEqual(got["key_index"], want["opened_with_key_index"], want["frame"])
            self.assertEqual(got["layers"], want["layers"], want["frame"])
            self.assertEqual((got["src"], got["dst"]), (addr(want["src"]), addr(want["dst"])))
            self.assertIsNone(got["error"])
        stream = self.ver["tcp_streams"][0]
        self.assertEqual([t["layers"] for t in tcp],
                         [stream["request_layers"], stream["response_layers"]])
        self.assertEqual((tcp[0]["src"], tcp[0]["dst"]),
                         (addr(stream["client"]), addr(stream["server"])))
        self.assertEqual((tcp[1]["src"], tcp[1]["dst"]),
                         (addr(stream["server"]), addr(stream["client"])))
        for t in tcp:
            self.assertEqual(t["key_index"], 0)
            self.assertIsNone(t["error"])
            self.assertEqual(t["messages"][0]["type"], "pushPull")
            self.assertEqual(t["messages"][0]["user_state_len"], 586)
            self.assertEqual(len(t["messages"][0]["nodes"]), 1)

    def test_every_packet_and_both_stream_directions_open(self):
        r = self.decode("--json", "--keyring", self.ring, PCAP)
        self.assertEqual(r.returncode, 0, r.stderr)
        items = self.items(r)
        for i in items:
            for field in REQUIRED:
                self.assertIn(field, i)
        self.check_capture(items)
        tcp = [i for i in items if i["transport"] == "tcp"]
        self.assertEqual([t["frame"] for t in tcp],
                         self.cap["tcp_streams"][0]["client_frames"] +
                         self.cap["tcp_streams"][0]["server_frames"])
        fps = {i["key_index"]: i["key_fingerprint"] for i in items}
        self.assertEqual(len(fps), 2)
        self.assertTrue(all(len(fp) == 8 for fp in fps.values()))
        # plaintext_hex is the opened payload: 29 bytes shorter (v1), or withheld with a reason.
        by_frame = {u["frame"]: u for u in self.cap["udp"]}
        shown = 0
        for i in items:
            if i["transport"] != "udp":
                continue
            if i["plaintext_hex"] is None:
                self.assertEqual(i["plaintext_redacted"], "carries gossip key material")
                continue
            shown += 1
            self.assertEqual(len(i["plaintext_hex"]) // 2,
                             len(by_frame[i["frame"]]["payload_hex"]) // 2 - 29)
        self.assertGreater(shown, 20)

    def test_serf_query_names_and_human_lines(self):
        r = self.decode("--json", "--keyring", self.ring, PCAP)
        names = set()
        for i in self.items(r):
            for m in i["messages"]:
                if "serf" in m and "name" in m["serf"]:
                    names.add(m["serf"]["name"])
        self.assertTrue({"_serf_install-key", "_serf_use-key", "_serf_list-keys"} <= names, names)
        human = self.decode("--keyring", self.ring, PCAP)
        self.assertEqual(human.returncode, 0, human.stderr)
        lines = human.stdout.splitlines()
        self.assertEqual(len(lines), 48)
        self.assertIn("#11 10.250.0.1:7946 -> 10.250.0.2:7946 udp encrypted v1 key#0 (", lines[2])
        self.assertIn("hasCrc > compound[2] > [alive(n1 10.250.0.1:7946 inc 1), alive(n2 ",
                      lines[2])
        self.assertIn("user(serf query _serf_install-key", human.stdout)
        self.assertIn("46 udp packets, 2 stream messages: 48 opened", human.stderr)

    def test_no_key_material_is_printed(self):
        outputs = [self.decode(*a) for a in (("--json", "--keyring", self.ring, PCAP),
                                             ("--keyring", self.ring, PCAP))]
        for k in self.cap["keys_base64"]:
            raw = base64.b64decode(k)
            for form in harness.key_forms(k) + [raw.decode("latin-1")]:
                for r in outputs:
                    self.assertNotIn(form, r.stdout + r.stderr)

    def test_missing_key_fails_those_packets_and_the_exit_status(self):
        r = self.decode("--json", "--keyring", self.k1, PCAP)
        self.assertEqual(r.returncode, 1, r.stderr)
        udp = {i["frame"]: i for i in self.items(r) if i["transport"] == "udp"}
        failed = 0
        for want in self.ver["udp"]:
            got = udp[want["frame"]]
            self.assertTrue(got["encrypted"])
            if want["opened_with_key_index"] == 0:
                self.assertEqual(got["key_index"], 0)
                self.assertIsNone(got["error"])
            else:
                failed += 1
                self.assertIsNone(got["key_index"])
                self.assertIn("No installed keys could decrypt the message", got["error"])
        self.assertEqual(failed, 22)
        self.assertIn("22 failed to open", r.stderr)

    def test_hex_packets(self):
        with open(os.path.join(VECTORS, "packets.json")) as f:
            vec = {v["name"]: v for v in json.load(f)["vectors"]}
        v = vec["gossip-encrypted-compound-ping-suspect-crc"]
        r = self.decode("--json", "--key", v["key_base64"], "--hex", v["sealed_hex"])
        self.assertEqual(r.returncode, 0, r.stderr)
        (item,) = self.items(r)
        self.assertEqual(item["layers"], "encrypted(key 0) > hasCrc > compound > [ping, suspect]")
        self.assertEqual(item["plaintext_hex"], v["layers"]["inner_plaintext_hex"])
        self.assertEqual([m["type"] for m in item["messages"]], ["ping", "suspect"])
        self.assertIsNone(item["src"])
        frame30 = [u for u in self.cap["udp"] if u["frame"] == 30][0]
        r = self.decode("--keyring", self.ring, "--hex", frame30["payload_hex"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("user(serf query _serf_install-key", r.stdout)
        r = self.decode("--hex", v["sealed_hex"])  # no keys: encrypted, cannot open
        self.assertEqual(r.returncode, 1)
        self.assertIn("NOT OPENED", r.stdout)
        plain = vec["gossip-plain-compound-8-alive-compressed-crc"]
        r = self.decode("--hex", plain["sealed_hex"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("plaintext hasCrc > compress > compound[8] > [alive(node-00 ", r.stdout)
        stream = self.cap["tcp_streams"][0]["client_to_server_hex"]
        r = self.decode("--json", "--keyring", self.ring, "--tcp", "--hex", stream)
        self.assertEqual(self.items(r)[0]["layers"], "encrypt(key 0) > compress > pushPull")

    def test_head_labels(self):
        with open(os.path.join(VECTORS, "labels.json")) as f:
            lab = json.load(f)
        key = lab["key_base64"]
        r = self.decode("--json", "--key", key, "--hex", lab["packet"]["wire_hex"])
        self.assertEqual(r.returncode, 0, r.stderr)
        (item,) = self.items(r)
        self.assertEqual((item["label"], item["key_index"]), (lab["label"], 0))
        self.assertEqual(item["plaintext_hex"], lab["packet"]["plaintext_hex"])
        # Without its label header the AAD differs: it only opens with --label.
        r = self.decode("--key", key, "--hex", lab["packet"]["sealed_hex"])
        self.assertEqual(r.returncode, 1)
        r = self.decode("--key", key, "--label", lab["label"], "--hex", lab["packet"]["sealed_hex"])
        self.assertEqual(r.returncode, 0, r.stdout)
        r = self.decode("--json", "--key", key, "--tcp", "--hex",
                        lab["stream_frame"]["dialer_writes_hex"])
        self.assertEqual(r.returncode, 0, r.stderr)
        (item,) = self.items(r)
        self.assertEqual((item["label"], item["layers"]), (lab["label"], "encrypt(key 0) > ping"))
        self.assertIsNone(item["frame"])

    def test_unreadable_input_is_a_clear_error(self):
        garbage = self.work.file("garbage.pcap", "this is not a capture\n")
        r = self.decode("--keyring", self.ring, garbage)
        self.assertEqual(r.returncode, 2)
        self.assertIn("garbage.pcap: unknown file format", r.stderr)
        with open(PCAP, "rb") as f:
            data = f.read()
        cut = os.path.join(self.work.path, "cut.pcap")
        with open(cut, "wb") as f:
            f.write(data[:len(data) - 50])
        r = self.decode("--keyring", self.ring, cut)
        self.assertEqual(r.returncode, 2)
        self.assertIn("damaged capture", r.stderr)
        self.assertIn("truncated", r.stderr)
        self.assertEqual(len(r.stdout.splitlines()), 47)  # everything before the damage
        r = self.decode("--keyring", self.ring, os.path.join(self.work.path, "missing.pcap"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("missing.pcap", r.stderr)
        r = self.decode("--keyring", self.ring, "--hex", "0g")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--hex", r.stderr)
        r = self.decode("--key", "not-a-key", PCAP)
        self.assertEqual(r.returncode, 2)

    def test_other_link_types_ipv6_pcapng_and_reordered_tcp(self):
        packets = read_packets(PCAP)
        variants = [("sll", dict(linktype=113)), ("sll2", dict(linktype=276)),
                    ("raw", dict(linktype=101)), ("ipv6", dict(linktype=1, v6=True)),
                    ("pcapng", dict(linktype=1, pcapng=True)),
                    ("ng-sll2-v6", dict(linktype=276, v6=True, pcapng=True))]
        for name, kw in variants:
            with self.subTest(name):
                path = os.path.join(self.work.path, name + ".cap")
                write_pcap(path, packets, **kw)
                r = self.decode("--json", "--keyring", self.ring, path)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.check_capture(self.items(r), v6=kw.get("v6", False))
        shuffled = os.path.join(self.work.path, "shuffled.pcap")
        write_pcap(shuffled, shuffle_tcp(packets))
        r = self.decode("--json", "--keyring", self.ring, shuffled)
        self.assertEqual(r.returncode, 0, r.stderr)
        items = self.items(r)
        tcp = [i for i in items if i["transport"] == "tcp"]
        self.assertEqual([t["layers"] for t in tcp],
                         [self.ver["tcp_streams"][0]["request_layers"],
                          self.ver["tcp_streams"][0]["response_layers"]])
        self.assertTrue(all(t["error"] is None for t in tcp))

    def test_a_segment_missing_from_the_capture(self):
        packets = read_packets(PCAP)
        request = [i for i, p in enumerate(packets) if p[1] == 6 and p[9]][0]
        path = os.path.join(self.work.path, "holed.pcap")
        write_pcap(path, [p for i, p in enumerate(packets) if i != request])
        r = self.decode("--json", "--keyring", self.ring, path)
        self.assertEqual(r.returncode, 0, r.stderr)  # nothing known to be encrypted failed
        tcp = {i["src"]: i for i in self.items(r) if i["transport"] == "tcp"}
        stream = self.ver["tcp_streams"][0]
        self.assertEqual(tcp[stream["server"]]["layers"], stream["response_layers"])
        lost = tcp[stream["client"]]
        self.assertIn("missing from the capture", lost["error"])
        self.assertEqual(lost["messages"], [])


if __name__ == "__main__":
    harness.main()
