#!/usr/bin/env bash
# RPC TLS relay benchmark of issues 6 and 18 (docs/benchmarks.md, "RPC TLS relay"): sidecrypt
# pair versus stunnel, haproxy, socat and Go crypto/tls pairs, client -> relay A -> relay B ->
# backend in network namespaces. Needs root, stunnel4, haproxy, socat, tcpdump, openssl, taskset,
# and Go for the go pair (scripts/install-deps.sh). Pair options (e2e_rpc.py's docstring):
# sidecrypt-l:loops=2, sidecrypt-l:noresume, haproxy:nbthread=2:reuse, go:resume, any:pin.
#
#   sudo tests/bench/e2e_rpc.sh BUILD_DIR [e2e_rpc.py options: --repeat N --seconds S --json F
#                                          --pairs direct,sidecrypt,stunnel,haproxy,socat,go ...]
#
# BUILD_DIR must hold the targets sidecrypt and bench_rpc_load (ninja -C BUILD_DIR sidecrypt
# bench_rpc_load). Prints the Markdown tables on stdout; the measurement itself is
# tests/bench/e2e_rpc.py (namespaces, relays, tcpdump and /proc sampling, all bounded).
set -euo pipefail

if [ $# -lt 1 ]; then
  sed -n '2,12p' "$0" >&2
  exit 2
fi
BUILD=$1
shift
if [ "$(id -u)" -ne 0 ]; then
  echo "e2e_rpc.sh: needs root (network namespaces, netfilter, tcpdump)" >&2
  exit 1
fi
missing=()
for tool in ip nft tcpdump stunnel haproxy socat openssl taskset python3; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -ne 0 ]; then
  echo "e2e_rpc.sh: missing ${missing[*]} (run scripts/install-deps.sh)" >&2
  exit 1
fi
for target in "$BUILD/sidecrypt" "$BUILD/tests/bench/bench_rpc_load"; do
  if [ ! -x "$target" ]; then
    echo "e2e_rpc.sh: $target is missing: ninja -C $BUILD sidecrypt bench_rpc_load" >&2
    exit 1
  fi
done
# The benchmark opens a few thousand sockets per second in the client namespace.
ulimit -n 65536 2>/dev/null || true
HERE=$(cd "$(dirname "$0")" && pwd)
exec timeout 1800 python3 "$HERE/e2e_rpc.py" --build "$BUILD" "$@"
