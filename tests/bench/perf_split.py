#!/usr/bin/env python3
"""Splits a relay's CPU profile into the cost classes of issue 18 (docs/benchmarks.md, "Where a
relay's CPU per connection goes").

  perf record --call-graph dwarf -p PID ...   (e2e_rpc.py --perf DIR --perf-args '--call-graph
                                                dwarf,16384 -F 499' records each relay apart)
  perf script -i FILE.data | tests/bench/perf_split.py [--per-conn-ms MS] [--top N]

Each sample is given one class by its call chain (leaf first), the first rule that matches:
logging (spdlog/fmt), census, metrics (stats counters, /metrics), then the kernel by system call
(accept4, connect, write, read, shutdown, close, epoll_wait, ...; kernel work outside a system
call, such as softirq packet processing, is "kernel, no syscall"), then allocation (malloc/free
and BoringSSL's wrappers), then TLS: X25519, certificate verification (X509_verify_cert and
sidecrypt's verified-chain cache), ECDSA, SHA-2/HKDF/AEAD, the rest of BoringSSL (handshake state
machine, parsing), then libuv, sidecrypt's own code, and the rest. With --per-conn-ms the shares
are also shown as milliseconds per connection (the relay's CPU per connection measured apart).
"""
import argparse
import collections
import re
import sys

SYSCALL = re.compile(r"\b(?:__x64_sys_|__sys_|ksys_|__do_sys_)([a-z0-9_]+)")


def own(dso):
    """The sidecrypt binary, whatever it is called (sidecrypt, sidecrypt.before, ...)."""
    return dso.rsplit("/", 1)[-1].startswith("sidecrypt")


def frames(block):
    """[(symbol, dso)] leaf first, from one sample of `perf script` output."""
    out = []
    for line in block[1:]:
        m = re.match(r"\s*[0-9a-f]+ (.*) \((.*)\)$", line)
        if m:
            out.append((m.group(1), m.group(2)))
    # An inlined frame belongs to the object of the next real frame below it.
    for i in range(len(out) - 2, -1, -1):
        if out[i][1] == "inlined":
            out[i] = (out[i][0], out[i + 1][1])
    return out


def classify(fr):
    syms = [s for s, _ in fr]
    joined = "\n".join(syms)
    # Logging, census and metrics: only sidecrypt's and spdlog's frames count (the kernel has
    # tcp_update_metrics of its own).
    user = "\n".join(s for s, d in fr if own(d) or "spdlog" in d or "libfmt" in d)
    if re.search(r"spdlog|fmt::", user):
        return "logging"
    if re.search(r"[Cc]ensus", user):
        return "census"
    if re.search(r"RpcTlsStats|[Mm]etrics|TcpStats|Counters", user):
        return "metrics"
    if not fr:
        return "unknown"
    leaf_sym, leaf_dso = fr[0]
    if "kernel" in leaf_dso:
        for s in syms:
            m = SYSCALL.search(s)
            if m:
                name = m.group(1)
                name = {"sendto": "write", "recvfrom": "read", "writev": "write"}.get(name, name)
                return "syscall " + name
        if re.search(r"asm_exc_page_fault|do_page_fault|exc_page_fault", joined):
            return "kernel, page faults"
        return "kernel, no syscall"
    if re.match(r"(malloc|_int_malloc|_int_free|free|cfree|malloc_consolidate|__libc_malloc|"
                r"__libc_free|tcache|_int_realloc|realloc|calloc|operator new|operator delete|"
                r"OPENSSL_malloc|OPENSSL_free|OPENSSL_realloc|unlink_chunk|"
                r"sysmalloc|__GI___libc_free|__GI___libc_malloc)", leaf_sym):
        return "allocation (malloc/free)"
    tls = any("libcrypto" in d or "libssl" in d for _, d in fr[:12])
    if tls or "libcrypto" in leaf_dso or "libssl" in leaf_dso:
        if "X25519" in joined:
            return "TLS: X25519"
        if re.search(r"X509_verify_cert|VerifiedChains|verifyPeer|chainFacts", joined):
            return "TLS: certificate verification"
        if re.search(r"ECDSA_do_verify|ECDSA_verify", joined):
            return "TLS: ECDSA verify (CertificateVerify)"
        if re.search(r"ECDSA_sign|ECDSA_do_sign|EVP_DigestSign", joined):
            return "TLS: ECDSA sign"
        if re.search(r"SHA256|SHA384|HMAC|HKDF|EVP_Digest|EVP_AEAD|aes|gcm", joined):
            return "TLS: hashes, HKDF, AEAD"
        if re.search(r"d2i_|X509_|ASN1_|CRYPTO_BUFFER|PEM_", joined):
            return "TLS: X.509/ASN.1 parsing"
        if re.search(r"SSL_new|SSL_free|SSL_CTX", joined):
            return "TLS: SSL object setup/free"
        return "TLS: rest of BoringSSL (state machine, records)"
    if "libuv" in leaf_dso:
        return "libuv"
    if own(leaf_dso):
        return "sidecrypt own code"
    if "libc" in leaf_dso:
        caller = next((s for s, d in fr if "libc" not in d), "")  # noqa: F841 (shown below)
        return "libc (%s) from %s" % (leaf_sym.split("+")[0], caller.split("+")[0][:50])
    return "other (%s)" % leaf_dso.rsplit("/", 1)[-1]


def count(counts, fr, detail):
    cls = classify(fr)
    if detail is None:
        counts[cls] += 1
        return 1
    if not cls.startswith(detail):
        return 0
    mine = [s.split("+0x")[0] for s, d in fr if own(d)][:3]
    lib = next((s.split("+0x")[0] for s, d in fr if not own(d) and
                not s.startswith("[unknown]")), "?")
    counts["%s <- %s" % (lib, " <- ".join(o[:60] for o in mine))] += 1
    return 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-conn-ms", type=float, help="the relay's CPU per connection (ms)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--detail", metavar="CLASS",
                    help="for samples of CLASS (a prefix), count the nearest caller frames "
                    "in the sidecrypt binary instead")
    args = ap.parse_args()
    counts = collections.Counter()
    block = []
    total = 0
    for line in sys.stdin:
        line = line.rstrip("\n")
        if line.strip():
            block.append(line)
            continue
        if block:
            total += count(counts, frames(block), args.detail)
            block = []
    if block:
        total += count(counts, frames(block), args.detail)
    if not total:
        raise SystemExit("no samples")
    print("| class | share | ms per conn |" if args.per_conn_ms else "| class | share |")
    print("|---|---:|---:|" if args.per_conn_ms else "|---|---:|")
    for name, n in counts.most_common(args.top):
        share = n / total
        if args.per_conn_ms:
            print("| %s | %.1f %% | %.3f |" % (name, 100 * share, share * args.per_conn_ms))
        else:
            print("| %s | %.1f %% |" % (name, 100 * share))
    print("\n%d samples" % total)


if __name__ == "__main__":
    main()
