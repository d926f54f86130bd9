#!/usr/bin/env bash
# Builds the dskit vector generator (tests/peers/dskitframes) offline into OUTDIR and prints the
# binary's path on stdout.
#
#   bash tests/peers/build-dskitframes.sh OUTDIR
#
# GOPATH mode against Debian's packaged Go sources in /usr/share/gocode (memberlist 0.2.2,
# go-kit/log, pkg/errors, go-sockaddr, prometheus client_golang), plus dskit's own files copied
# unchanged under dskitframes/third_party and two small stand-ins under dskitframes/shim (see
# dskitframes/README.md). No module proxy, no network.
#
# Exit status: 0 built; 3 a prerequisite is missing (go, or a packaged source tree); 1 the build
# failed.
set -euo pipefail
if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/dskitframes" && pwd)"
gocode=/usr/share/gocode
if ! command -v go >/dev/null 2>&1; then
  echo "build-dskitframes: 'go' not found (Debian package golang-go)" >&2
  exit 3
fi
for pkg in hashicorp/memberlist hashicorp/go-sockaddr go-kit/log pkg/errors prometheus/client_golang; do
  if [ ! -d "$gocode/src/github.com/$pkg" ]; then
    echo "build-dskitframes: $gocode/src/github.com/$pkg missing (Debian golang-github-*-dev)" >&2
    exit 3
  fi
done
mkdir -p "$1"
out="$(cd "$1" && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
src="$scratch/gopath/src"
mkdir -p "$src/github.com/grafana" "$src/go.uber.org" "$src/sidecrypt/dskitframes"
cp -r "$here/third_party/github.com/grafana/dskit" "$src/github.com/grafana/dskit"
cp -r "$here/shim/github.com/grafana/dskit/crypto" "$src/github.com/grafana/dskit/crypto"
cp -r "$here/shim/go.uber.org/atomic" "$src/go.uber.org/atomic"
cp "$here/main.go" "$src/sidecrypt/dskitframes/"
export GO111MODULE=off GOPROXY=off GOFLAGS='' CGO_ENABLED=0
export GOPATH="$scratch/gopath:$gocode"
export GOCACHE="${GOCACHE:-$out/.gocache}"
cd "$src/sidecrypt/dskitframes"
go vet . >&2
go build -o "$out/dskitframes" . >&2
echo "$out/dskitframes"
