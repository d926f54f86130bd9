#!/usr/bin/env python3
"""Reconnect storm through a server-side sidecrypt (issue 18 item 5; docs/benchmarks.md).

N connections from S client addresses (within rpc_max_conns_per_client) are primed through
sidecrypt in the server role (relay B: mutual TLS in, plaintext out to a plaintext agent), then
one server-side component restarts and every client reconnects at once. The lab itself is
tests/integration/storm_lab.py (namespaces, tlspeer storm client and agent, sampling); this
script runs the matrix and prints Markdown:

  restart   sidecrypt (its ticket keys are lost: cached sessions cannot resume) and/or agent (a
            Consul server restart behind a running sidecrypt: cached sessions resume)
  loops     [runtime] loops values; a build without the key runs "1" without it and skips the rest
  resumption on (tls.session_resumption = true, clients keep a session cache per address) and/or
            off (session_resumption = false, clients keep no cache)

Run as root, from the repository:

  sudo python3 tests/bench/rpc_storm.py --build build [--conns 5000] [--sources 100]
       [--loops 1,2] [--resumption on,off] [--restart agent,sidecrypt] [--json storm.json]

Every wait is bounded (--timeout per phase); namespaces and sidecrypt's rules are removed.
"""
import argparse
import json
import os
import sys
import time

sys.dont_write_bytecode = True
from bench_common import ROOT, harness, machine  # noqa: E402,F401

import storm_lab  # noqa: E402  (tests/integration, on sys.path through bench_common)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", required=True, help="build dir with sidecrypt")
    ap.add_argument("--sidecrypt", help="sidecrypt binary (default: BUILD/sidecrypt)")
    ap.add_argument("--conns", type=int, default=5000)
    ap.add_argument("--sources", type=int, default=100)
    ap.add_argument("--loops", default="1,2")
    ap.add_argument("--resumption", default="on,off")
    ap.add_argument("--restart", default="agent,sidecrypt")
    ap.add_argument("--client-ports", default="32768 60999",
                    help="ip_local_port_range of the clients' host (default: Linux's)")
    ap.add_argument("--server-ports", help="ip_local_port_range of sidecrypt's host (default: "
                    "the kernel's)")
    ap.add_argument("--timeout", type=int, default=120, help="bound of each phase (s)")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    return ap.parse_args()


def row(r):
    if "error" in r:
        return "| %s | %s | %s | failed: %s |||||||||||" % (
            r["restart"], r["loops_label"], r["resumption_label"], r["error"].splitlines()[0])
    s, c = r["storm"], r["counters"]
    fails = ", ".join("%s %d" % kv for kv in sorted(s["failures"].items())) or "none"
    right = sum(c["tcp closed"].get(k, 0) for k in storm_lab.AGENT_DOWN_CLOSED)
    gave_up = sum(c["tcp closed"].get(k, 0) for k in storm_lab.CLIENT_GAVE_UP_CLOSED)
    k = r.get("kernel_tcp", {})
    kern = "%d / %d / %d" % (k.get("TcpExtListenOverflows", 0), k.get("TcpExtSyncookiesSent", 0),
                             k.get("TcpExtTCPChallengeACK", 0))
    wrong = ", ".join("%s %d" % kv for kv in sorted(r["wrong_refusals"].items())) or "**0**"
    cpu_ms = 1e3 * r["sidecrypt_cpu_s"] / max(1, s["served"])
    return ("| %s | %s | %s | %d / %d | %.2f / %.2f s | %d (%s) | %d / %d | %d / %d | %s | %d | %d "
            "| %s | %.1f MB (%.1f held) | %.2f s (%.2f ms/conn) | %.2f s | %.1f |" % (
                r["restart"], r["loops_label"], r["resumption_label"], s["served"], r["conns"],
                r["served_after_restart_s"] or -1, r["served_after_ready_s"] or -1,
                s["attempts"], fails, s["resumed"], s["full"],
                c["rpc"].get("inbound_handshakes_resumed", 0),
                c["rpc"].get("inbound_handshakes_full", 0), wrong, right, gave_up, kern,
                r["peak_rss_kb"] / 1024, r["rss_kb_held"] / 1024, r["sidecrypt_cpu_s"], cpu_ms,
                r["client_cpu_s"], r["loadavg_before"][0]))


def report(res):
    m = res["machine"]
    out = ["Machine: %d CPUs (%s), kernel %s; %d connections from %d addresses; clients' ports "
           "%s; sysctls on s: %s." % (m["nproc"], m["cpu"], m["kernel"], res["conns"],
                                      res["sources"], res["client_ports"],
                                      ", ".join("%s=%s" % kv for kv in res["sysctls"].items())),
           "",
           "| restart | loops | resumption | served | all served after restart / after ready "
           "| attempts (client failures) | client resumed / full | sidecrypt inbound resumed / "
           "full | wrong refusals | agent-down refusals | client gave up | kernel in s: listen "
           "overflows / SYN cookies / challenge ACKs | peak RSS (with N held) "
           "| sidecrypt CPU | client CPU | load avg |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    out += [row(r) for r in res["runs"]]
    for n in res["notes"]:
        out += ["", "Note: " + n]
    return "\n".join(out)


def main():
    args = parse_args()
    if os.geteuid() != 0:
        raise SystemExit("rpc_storm: needs root (network namespaces, netfilter)")
    os.environ["SIDECRYPT_BIN"] = os.path.abspath(
        args.sidecrypt or os.path.join(args.build, "sidecrypt"))
    res = {"machine": machine(), "conns": args.conns, "sources": args.sources, "runs": [],
           "client_ports": args.client_ports,
           "notes": [], "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    lab = storm_lab.StormLab(args.sources, client_ports=args.client_ports,
                             server_ports=args.server_ports)
    try:
        res["sysctls"] = lab.sysctls()
        supported = lab.supports_loops()
        res["loops_supported"] = supported
        for restart in args.restart.split(","):
            for loops in [int(x) for x in args.loops.split(",")]:
                if not supported and loops != 1:
                    note = "loops=%d skipped: this sidecrypt has no [runtime] loops" % loops
                    if note not in res["notes"]:
                        res["notes"].append(note)
                    continue
                for resume in args.resumption.split(","):
                    print("rpc_storm: restart=%s loops=%d resumption=%s ..." % (
                        restart, loops, resume), file=sys.stderr)
                    r = {"restart": restart, "conns": args.conns,
                         "loops_label": str(loops) if supported else "1 (no key)",
                         "resumption_label": resume}
                    try:
                        r.update(lab.run(args.conns, restart, loops if supported else None,
                                         resume == "on", timeout=args.timeout))
                    except Exception as e:  # noqa: BLE001 (one configuration failed: report it, go on)
                        r["error"] = str(e)
                        print("rpc_storm: failed: %s" % e, file=sys.stderr)
                    res["runs"].append(r)
                    print(row(r), file=sys.stderr)
    finally:
        if args.keep:
            print("rpc_storm: kept %s" % lab.w.path, file=sys.stderr)
            lab.lab.cleanup()
        else:
            lab.cleanup()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    print(report(res))


if __name__ == "__main__":
    main()
