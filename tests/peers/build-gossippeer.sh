#!/usr/bin/env bash
# Builds the Go gossip test peer (tests/peers/gossippeer) offline into OUTDIR and prints the
# binary's path on stdout.
#
#   bash tests/peers/build-gossippeer.sh OUTDIR
#
# Offline: GOPATH mode against the Go sources Debian packages in /usr/share/gocode
# (golang-github-hashicorp-serf-dev and -memberlist-dev with their dependencies). Module mode
# cannot work offline here: the packaged trees keep their upstream go.mod files, whose
# requirements would be looked up in a module proxy.
#
# Exit status: 0 built; 3 a prerequisite is missing (go, or the packaged sources), with the
# reason on stderr (tests skip on it outside CI and fail in CI); 1 the build itself failed.
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
out="$1"
src="$(cd "$(dirname "${BASH_SOURCE[0]}")/gossippeer" && pwd)"
gocode=/usr/share/gocode

if ! command -v go >/dev/null 2>&1; then
  echo "build-gossippeer: 'go' not found (Debian package golang-go)" >&2
  exit 3
fi
for pkg in memberlist serf; do
  if [ ! -d "$gocode/src/github.com/hashicorp/$pkg" ]; then
    echo "build-gossippeer: $gocode/src/github.com/hashicorp/$pkg missing" \
         "(Debian package golang-github-hashicorp-$pkg-dev)" >&2
    exit 3
  fi
done

mkdir -p "$out"
out="$(cd "$out" && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/gopath"

# The first GOPATH entry is an empty scratch tree (go insists on a writable first entry); the
# second is Debian's. Compiled packages go to the user's usual Go build cache (safe to share
# between concurrent builds; it makes rebuilds take seconds), or to a scratch cache when there
# is none (no HOME).
cache="${GOCACHE:-$(go env GOCACHE 2>/dev/null || true)}"
if [ -z "$cache" ] || [ "$cache" = off ]; then
  cache="$scratch/gocache"
fi
if ! (cd "$src" && env GO111MODULE=off GOFLAGS= GOPROXY=off GOTOOLCHAIN=local \
        GOPATH="$scratch/gopath:$gocode" GOCACHE="$cache" \
        go build -o "$out/gossippeer" . >&2); then
  echo "build-gossippeer: go build failed" >&2
  exit 1
fi
echo "$out/gossippeer"
