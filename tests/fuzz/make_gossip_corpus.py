#!/usr/bin/env python3
"""Writes the seed corpora of the gossip fuzz targets from tests/vectors (run from anywhere).

gossip_packet_open:   [flags][datagram]     flags: bit0 verify_incoming, bit1 label "dc1", bit2 keyless
gossip_stream_framer: [flags][split][bytes] flags: bit0 dialled side, bit1 verify_incoming, bit2 Outbound
dskit_frame:          [flags][split][bytes] flags: bit0 verify_incoming (tests/vectors/dskit)
The seeds are committed; rerun this only to refresh them.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "../vectors")


def load(name):
    with open(os.path.join(VECTORS, name)) as f:
        return json.load(f)


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def packets():
    t = "gossip_packet_open"
    for v in load("keyring.json")["vectors"]:
        write(t, v["name"], bytes([1]) + bytes.fromhex(v["sealed_hex"]))
    for v in load("negatives.json")["vectors"]:
        if v["input_hex"]:
            write(t, "neg-" + v["name"], bytes([1]) + bytes.fromhex(v["input_hex"]))
    for v in load("negatives.json")["parser_vectors"]:
        write(t, "parser-" + v["name"], bytes([4]) + bytes.fromhex(v["input_hex"]))
    for v in load("packets.json")["vectors"]:
        if v["kind"] == "gossip":
            write(t, v["name"], bytes([0 if v["version"] < 0 else 1]) + bytes.fromhex(v["sealed_hex"]))
    lab = load("labels.json")["packet"]
    write(t, "label-packet", bytes([3]) + bytes.fromhex(lab["wire_hex"]))


def streams():
    t = "gossip_stream_framer"
    doc = load("streams.json")
    for ex in doc["exchanges"]:
        for side in ("request_hex", "response_hex"):
            b = bytes.fromhex(ex[side])
            if b:
                write(t, "%s-%s" % (ex["name"], side[:-4]), bytes([0, 7]) + b)
    for n in doc["responder_negatives"]:
        write(t, "neg-" + n["name"], bytes([2, 1]) + bytes.fromhex(n["input_hex"]))
    lab = load("labels.json")["stream_frame"]
    write(t, "label-stream", bytes([1, 3]) + bytes.fromhex(lab["dialer_writes_hex"]))
    # hostile push/pull headers (docs/spec/gossip-wire.md §9)
    write(t, "nodes-2-40", bytes([0, 5]) + bytes.fromhex(
        "0682a54e6f646573cf0000010000000000ac5573657253746174654c656e00"))
    write(t, "userstate-neg", bytes([0, 2]) + bytes.fromhex(
        "0682a54e6f64657300ac5573657253746174654c656eff"))


def dskit():
    t = "dskit_frame"
    for v in load("dskit/frames.json")["frames"]:
        if len(v["wire_hex"]) <= 8192:  # the 70000-byte case is left out: seeds stay small
            write(t, "frame-" + v["name"], bytes([1, 5]) + bytes.fromhex(v["wire_hex"]))
    for v in load("dskit/negatives.json")["negatives"]:
        write(t, "neg-" + v["name"], bytes([0, 1]) + bytes.fromhex(v["wire_hex"]))
    seen = {}
    for c in load("dskit/live.json")["connections"]:
        n = seen.get(c["kind"], 0)
        if n < 3:
            seen[c["kind"]] = n + 1
            write(t, "live-%s-%d" % (c["kind"], n), bytes([n & 1, 17]) + bytes.fromhex(c["dialler_hex"]))


if __name__ == "__main__":
    packets()
    streams()
    dskit()
