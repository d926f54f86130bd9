#!/usr/bin/env bash
# Installs everything sidecrypt needs to build, test and run its demo on Debian 12 (bookworm).
# Safe to run again; uses sudo when not already root.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PACKAGES=(
  # build
  build-essential cmake ninja-build pkg-config git
  # libraries on the design card, plus CLI/JSON/HTTP/pcap helpers from Debian
  android-libboringssl-dev libuv1-dev libsodium-dev libtomlplusplus-dev libspdlog-dev libfmt-dev
  libcli11-dev nlohmann-json3-dev libhttp-parser-dev libpcap-dev
  # tests, fuzzing, linting, benchmarks
  catch2 libbenchmark-dev clang clang-format clang-tidy libclang-rt-14-dev python3 socat stunnel4 haproxy
  python3-prometheus-client python3-cryptography
  # real peers and the network lab: serf agents, Go (memberlist/TLS peers), namespaces, netfilter
  serf golang-go golang-github-hashicorp-memberlist-dev golang-github-hashicorp-serf-dev
  golang-github-hashicorp-yamux-dev
  golang-github-hashicorp-net-rpc-msgpackrpc-dev golang-github-hashicorp-go-msgpack-dev
  # dskit's transport file (tests/peers/dskitframes) imports these
  golang-github-go-kit-log-dev golang-github-pkg-errors-dev golang-github-hashicorp-go-sockaddr-dev
  golang-github-prometheus-client-golang-dev
  iproute2 iptables nftables tshark tcpdump
  # certificates for the examples and tests
  openssl xxd bc
  # npm ci (tests/manifests) and Debian's Node.js read the system CA bundle; named, not left to
  # arrive as a dependency of nodejs (which is skipped when another Node.js is installed)
  ca-certificates
  # deployment: systemd-analyze verify/security, sysusers/tmpfiles (unit tests), setcap/setpriv
  # (image privilege model), python3-yaml (manifest checks), util-linux (unshare for doctor)
  systemd libcap2-bin util-linux python3-yaml
  # a FUSE filesystem that stalls on demand (tests/integration/tools/stall_fs.py)
  python3-fusepy fuse3
  # a real Prometheus scraping the metrics listener (tests/integration/test_metrics_prometheus.py)
  prometheus
)
# --engines (CI): the real engines the artefacts are proven in: podman (with runc) for the image,
# systemd-nspawn for the unit, mmdebstrap for pristine Debian roots and base images.
if [ "${1:-}" = "--engines" ]; then
  PACKAGES+=(podman runc uidmap mmdebstrap systemd-container)
  # a real memberlist product beside sidecrypt: Alertmanager 0.25's cluster, binary only
  # (tests/integration/test_alertmanager_cluster.py); its service is turned off below
  PACKAGES+=(prometheus-alertmanager)
fi
# Kubernetes schema validation (tests/manifests) runs on Node.js; any Node.js >= 14 with npm
# will do, Debian's when none is installed (a Node.js from elsewhere ships its own npm).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
else
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # tshark asks whether non-root users may capture; the answer does not matter here.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The tests run /usr/bin/prometheus-alertmanager in namespaces; the packaged service (0.0.0.0:9093
# and 9094 on the host) is not wanted.
if [ "${1:-}" = "--engines" ] && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus-alertmanager.service >/dev/null 2>&1 || true
fi

# npm packages pinned by tests/manifests/package-lock.json (the Kubernetes API schemas).
manifests="$(cd "$(dirname "$0")/.." && pwd)/tests/manifests"
if [ ! -d "$manifests/node_modules/kubernetes-models" ] ||
   [ "$manifests/package-lock.json" -nt "$manifests/node_modules/.package-lock.json" ]; then
  echo "install-deps: npm ci in tests/manifests"
  npm ci --prefix "$manifests" --no-audit --no-fund --loglevel=error
fi
