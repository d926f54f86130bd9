#!/usr/bin/env bash
# build.sh OUTDIR: builds the Go test peers offline into OUTDIR (rpcpeer, tlspeer).
#
# GOPATH mode with Debian's packaged sources (docs/spec/rpc-peers.md §5.2): golang-go plus
# golang-github-hashicorp-{yamux,net-rpc-msgpackrpc,go-msgpack}-dev. No module proxy, no network.
# Exit 3 when Go itself is missing, so callers can tell "cannot build here" from a build error.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
if ! command -v go >/dev/null; then
  echo "$0: go not found (apt-get install golang-go)" >&2
  exit 3
fi
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
for pkg in yamux net-rpc-msgpackrpc go-msgpack/codec; do
  if [ ! -d "/usr/share/gocode/src/github.com/hashicorp/$pkg" ]; then
    echo "$0: missing /usr/share/gocode/src/github.com/hashicorp/$pkg (Debian golang-github-hashicorp-*-dev)" >&2
    exit 1
  fi
done
export GO111MODULE=off GOPROXY=off GOFLAGS='' CGO_ENABLED=0
export GOPATH="$OUT/.gopath:/usr/share/gocode"
export GOCACHE="${GOCACHE:-$OUT/.gocache}"
cd "$HERE"
go vet ./rpcpeer
go build -o "$OUT/rpcpeer" ./rpcpeer
go vet ./tlspeer
go build -o "$OUT/tlspeer" ./tlspeer
echo "built $OUT/rpcpeer $OUT/tlspeer"
