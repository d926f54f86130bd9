"""memberlist messages as bytes, written in Python for the scale lab (scripts/lab/).

Everything here follows docs/spec/gossip-wire.md (memberlist 0.2.2 as Debian's serf 0.9.4 embeds
it): msgpack in go-msgpack's old raw family with struct keys in name order
(docs/spec/gossip-wire.md §2), the message types and bodies (docs/spec/gossip-wire.md §1),
compound (docs/spec/gossip-wire.md §3.4), Go compress/lzw LSB with literal width 8
(docs/spec/gossip-wire.md §3.5), hasCrc (docs/spec/gossip-wire.md §3.1), the sealed packet
`[1][nonce][ciphertext][tag]` (docs/spec/gossip-wire.md §3.3) and the stream frame `[10][L]...`
with the 5 header bytes as additional data (docs/spec/gossip-wire.md §5.2).

`python3 memberlist_wire.py [--bin build/sidecrypt]` checks the encoders against the golden
vectors in tests/vectors (byte for byte where the vector is deterministic) and, with --bin,
against sidecrypt's own decoder (`sidecrypt decode --hex`).
"""
import os
import struct
import zlib

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PING, INDIRECT_PING, ACK, SUSPECT, ALIVE, DEAD, PUSH_PULL, COMPOUND, USER, COMPRESS, ENCRYPT, \
    NACK, HAS_CRC, ERR = range(14)

# Vsn: protocol min/max/current, delegate min/max/current, as serf 0.9.4 advertises it.
SERF_VSN = bytes([1, 5, 2, 2, 5, 4])
NO_TAGS_META = b"\xff\x80"  # Serf meta: 0xff then an empty msgpack map (no tags)


class Raw(bytes):
    """A byte string msgpack writes in the raw family (IPs, Meta, Vsn, Payload)."""


def _uint(n):
    if n < 0:
        raise ValueError("negative")
    if n < 0x80:
        return bytes([n])
    if n <= 0xFF:
        return b"\xcc" + bytes([n])
    if n <= 0xFFFF:
        return b"\xcd" + struct.pack(">H", n)
    if n <= 0xFFFFFFFF:
        return b"\xce" + struct.pack(">I", n)
    return b"\xcf" + struct.pack(">Q", n)


def _raw(b):
    n = len(b)
    if n < 32:
        return bytes([0xA0 | n]) + b
    if n <= 0xFFFF:
        return b"\xda" + struct.pack(">H", n) + b
    return b"\xdb" + struct.pack(">I", n) + b


def pack(v):
    """go-msgpack 0.5.5 default handle: maps with keys in the order given (callers pass them in
    name order, as Go's struct encoding does), strings and byte slices as raw, uints smallest."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        return _uint(v)
    if isinstance(v, str):
        return _raw(v.encode())
    if isinstance(v, (bytes, bytearray)):
        return _raw(bytes(v))
    if isinstance(v, dict):
        n = len(v)
        head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
        return head + b"".join(pack(k) + pack(x) for k, x in v.items())
    raise TypeError(type(v))


def ip4(addr):
    return bytes(int(x) for x in addr.split("."))


def msg(kind, fields):
    return bytes([kind]) + pack(dict(sorted(fields.items())))


def ping(seq, node, src_addr=None, src_port=7946, src_node=None):
    f = {"SeqNo": seq, "Node": node}
    if src_addr:
        f.update(SourceAddr=ip4(src_addr), SourcePort=src_port, SourceNode=src_node)
    return msg(PING, f)


def indirect_ping(seq, target_addr, target_node, src_addr, src_node, port=7946):
    return msg(INDIRECT_PING, {"SeqNo": seq, "Target": ip4(target_addr), "Port": port,
                               "Node": target_node, "Nack": True, "SourceAddr": ip4(src_addr),
                               "SourcePort": 7946, "SourceNode": src_node})


def ack(seq, payload=None):
    return msg(ACK, {"SeqNo": seq, "Payload": payload})


def nack(seq):
    return msg(NACK, {"SeqNo": seq})


def alive(node, addr, incarnation, port=7946, meta=NO_TAGS_META):
    return msg(ALIVE, {"Incarnation": incarnation, "Node": node, "Addr": ip4(addr), "Port": port,
                       "Meta": meta, "Vsn": SERF_VSN})


def suspect(node, incarnation, frm):
    return msg(SUSPECT, {"Incarnation": incarnation, "Node": node, "From": frm})


def dead(node, incarnation, frm):
    """frm == node is a graceful leave (memberlist marks it left)."""
    return msg(DEAD, {"Incarnation": incarnation, "Node": node, "From": frm})


def compound(parts):
    if not 0 < len(parts) < 128:
        raise ValueError("compound needs 1..127 parts")
    return (bytes([COMPOUND, len(parts)]) + b"".join(struct.pack(">H", len(p)) for p in parts)
            + b"".join(parts))


def user_packet(serf_msg):
    return bytes([USER]) + serf_msg


def with_crc(m):
    return bytes([HAS_CRC]) + struct.pack(">I", zlib.crc32(m) & 0xFFFFFFFF) + m


def lzw_compress(data):
    """Go compress/lzw NewWriter(w, LSB, 8) output, code for code: a clear code first, 9-bit
    codes growing to 12, a clear and reset when code 4095 would be reached, eof (257) last."""
    out = bytearray()
    bits = 0
    nbits = 0
    width = 9
    hi = 257
    overflow = 512
    table = {}

    def emit(code):
        nonlocal bits, nbits
        bits |= code << nbits
        nbits += width
        while nbits >= 8:
            out.append(bits & 0xFF)
            bits >>= 8
            nbits -= 8

    def inc_hi():
        nonlocal hi, width, overflow
        hi += 1
        if hi == overflow:
            width += 1
            overflow <<= 1
        if hi == 4095:
            emit(256)
            width, hi, overflow = 9, 257, 512
            table.clear()
            return False
        return True

    emit(256)
    if not data:
        emit(257)
    else:
        code = data[0]
        for x in data[1:]:
            key = (code << 8) | x
            hit = table.get(key)
            if hit is not None:
                code = hit
                continue
            emit(code)
            code = x
            if inc_hi():
                table[key] = hi
        emit(code)
        inc_hi()
        emit(257)
    if nbits > 0:
        out.append(bits & 0xFF)
    return bytes(out)


def compress(m):
    return bytes([COMPRESS]) + pack({"Algo": 0, "Buf": lzw_compress(m)})


def seal(key, plaintext, nonce=None, aad=b""):
    """Sealed, version 1: [1][nonce 12][ciphertext][tag 16]."""
    nonce = nonce if nonce is not None else os.urandom(12)
    return b"\x01" + nonce + AESGCM(key).encrypt(nonce, plaintext, aad or None)


def stream_frame(key, m, nonce=None):
    """[10][L u32 BE][sealed], the 5 header bytes as additional data (docs/spec/gossip-wire.md §5.2)."""
    header = bytes([ENCRYPT]) + struct.pack(">I", 1 + 12 + len(m) + 16)
    return header + seal(key, m, nonce, aad=header)


def push_pull(states, user_state=b"", join=False):
    """states: [(name, addr, incarnation, state 0 alive/1 suspect/2 dead/3 left)]."""
    out = [bytes([PUSH_PULL]), pack({"Join": join, "Nodes": len(states),
                                     "UserStateLen": len(user_state)})]
    for name, addr, inc, st in states:
        out.append(pack({"Addr": ip4(addr), "Incarnation": inc, "Meta": NO_TAGS_META,
                         "Name": name, "Port": 7946, "State": st, "Vsn": SERF_VSN}))
    out.append(user_state)
    return b"".join(out)


# --- self-test against the golden vectors and sidecrypt's decoder ---------------------------------

def _selftest(vectors, sidecrypt_bin=None):
    import json
    import subprocess

    def load(name):
        with open(os.path.join(vectors, name)) as f:
            return json.load(f)

    checks = []

    def same(name, got, want):
        ok = got == want
        checks.append((name, ok))
        if not ok:
            print("MISMATCH %s\n  got  %s\n  want %s" % (name, got.hex(), want.hex()))

    for v in load("packets.json")["vectors"]:
        if v["kind"] != "gossip":
            continue
        pt = bytes.fromhex(v["plaintext_hex"])
        if v["name"] == "gossip-plain-ping":
            same(v["name"], ping(42, "node-b", "10.250.0.1", 7946, "node-a"), pt)
        if v["name"] == "gossip-plain-compound-ping-suspect-crc":
            same(v["name"], with_crc(compound([ping(42, "node-b", "10.250.0.1", 7946, "node-a"),
                                               suspect("node-c", 3, "node-a")])),
                 bytes.fromhex(v["sealed_hex"]))
        if v["name"] == "gossip-plain-compound-8-alive-compressed-crc":
            same(v["name"] + " (lzw)", with_crc(compress(pt)), bytes.fromhex(v["sealed_hex"]))
        if v["version"] == 1:
            key = bytes.fromhex(v["key_hex"])
            inner = bytes.fromhex(v["sealed_hex"])
            same(v["name"] + " (seal)", seal(key, _open(key, inner), bytes.fromhex(v["nonce_hex"])),
                 inner)
    for v in load("keyring.json")["vectors"]:
        if v["version"] == 1:
            same(v["name"], seal(bytes.fromhex(v["key_hex"]), bytes.fromhex(v["plaintext_hex"]),
                                 bytes.fromhex(v["nonce_hex"])), bytes.fromhex(v["sealed_hex"]))
    doc = load("streams.json")
    for ex in doc["exchanges"]:
        if ex["name"] == "plain-pushpull-uncompressed":
            same(ex["name"], push_pull(
                [("node-a", "10.250.0.1", 1, 0), ("node-c", "10.250.0.3", 3, 0),
                 ("node-d", "10.250.0.4", 5, 2)], b"user-state-from-node-a:0123456789")[:29],
                bytes.fromhex(ex["request_hex"])[:29])
    # LZW round trips through sidecrypt's decoder, on text long enough to pass code 4095.
    if sidecrypt_bin:
        key = os.urandom(32)
        import base64
        k64 = base64.b64encode(key).decode()
        big = compound([alive("node-%05d" % i, "10.250.64.%d" % (i % 250 + 1), i)
                        for i in range(1, 100)])
        for name, pkt, want in [
                ("decode: sealed compressed compound", seal(key, with_crc(compress(big))),
                 "compound"),
                ("decode: plaintext ping", ping(7, "node-00001", "10.250.64.2", 7946,
                                                "node-00002"), "ping"),
                ("decode: long lzw (past code 4095), sealed push/pull stream frame",
                 stream_frame(key, compress(push_pull([("node-%05d" % i, "10.250.64.1", i, 0)
                                                       for i in range(1, 600)]))), "pushPull")]:
            tcp = ["--tcp"] if pkt[0] == ENCRYPT else []
            r = subprocess.run([sidecrypt_bin, "decode", "--key", k64, "--json", "--hex",
                                pkt.hex()] + tcp, capture_output=True, text=True, timeout=30)
            items = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
            ok = (r.returncode == 0 and len(items) == 1 and items[0]["error"] is None
                  and want in items[0]["layers"])
            checks.append((name, ok))
            if not ok:
                print("MISMATCH %s: rc=%d\n%s\n%s" % (name, r.returncode, r.stdout[:2000],
                                                     r.stderr[:2000]))
    bad = [n for n, ok in checks if not ok]
    print("memberlist_wire self-test: %d checks, %d failed" % (len(checks), len(bad)))
    return not bad


def _open(key, sealed):
    return AESGCM(key).decrypt(sealed[1:13], sealed[13:], None)


if __name__ == "__main__":
    import argparse
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", default=os.path.join(here, "../../tests/vectors"))
    ap.add_argument("--bin", help="sidecrypt binary: also check against `sidecrypt decode`")
    a = ap.parse_args()
    sys.exit(0 if _selftest(a.vectors, a.bin) else 1)
