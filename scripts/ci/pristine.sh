#!/usr/bin/env bash
# shellcheck disable=SC2153  # REV, REPO, ROOT, TARBALL, TMPFS_SIZE, TESTS: set by the host role
# Install from zero, proven: runs the README's set-up commands in a pristine Debian 12 root.
#
#   bash scripts/ci/pristine.sh            (as root; .ci/run calls it)
#
# 1. A minimal bookworm root made by mmdebstrap from this machine's own apt sources
#    (/etc/apt/sources.list, /etc/apt/sources.list.d/*.list and *.sources), cached as a tarball
#    under $SIDECRYPT_PRISTINE_CACHE (default /var/cache/sidecrypt-pristine), keyed by the date,
#    the sources and the variant: repeat local runs reuse it, a fresh CI machine builds it.
#    Variant minbase: only the Essential packages and apt. A fresh Debian 12 system has more
#    than that, but nothing beyond it can be counted on (a container image, a netinst without
#    the "standard" task), so everything else sidecrypt needs must be named by
#    scripts/install-deps.sh. We assume only root and a copy of the repository.
#    dpkg runs with force-unsafe-io in it (as in Debian's container images): no fsync per file,
#    which does not change what gets installed but makes unpacking several times faster.
# 2. A clean clone of the committed HEAD (uncommitted changes are not tested) at
#    /srv/sidecrypt inside the root, with nothing beside it.
# 3. systemd-nspawn, as root with every capability, no user namespace, the host's network
#    (apt and npm must be reachable) and writable /proc/sys and /sys (the tests set sysctls
#    inside their own network namespaces), runs the README's commands in the clone:
#      bash scripts/install-deps.sh
#      bash scripts/demo.sh
#      SIDECRYPT_TEST_ASAN=0 SIDECRYPT_TEST_INTEGRATION='<regex>' bash scripts/test.sh
#    (the unit tests and a subset of the namespace integration tests with real serf agents
#    and Go peers; the full scripts/test.sh already runs on the CI host itself).
#    A package missing from install-deps.sh makes one of them fail, and so this script.
# The root lives on a tmpfs in a private mount namespace and the container is not registered
# with machined: its mounts and the network namespaces the tests make inside it end with it, on
# any exit; the trap stops the container first. The script runs itself in three roles: on the
# host (no argument), in the mount namespace (--namespace) and in the container (--container).
#
# Environment:
#   SIDECRYPT_PRISTINE_CACHE   where the root tarball and the apt/npm download caches live
#   SIDECRYPT_PRISTINE_TESTS   ctest regex of the integration tests to run inside
#   SIDECRYPT_PRISTINE_TIMEOUT seconds before the container is stopped (default 3600)
#   SIDECRYPT_PRISTINE_TMPFS_SIZE  size limit of the tmpfs the root lives on (default 12G)
set -euo pipefail

step() { printf '\n==== pristine: %s ====\n' "$*"; s0=$(date +%s); }
step_done() { echo "---- pristine: $1 took $(( $(date +%s) - s0 ))s"; }

# --namespace CMD...: in the private mount namespace (see below): unpack, clone, exec CMD.
if [ "${1:-}" = "--namespace" ]; then
  shift
  step "unpack and clone $REV"
  mount -t tmpfs -o "size=$TMPFS_SIZE,mode=0755" pristine-root "$ROOT"
  tar -C "$ROOT" -xf "$TARBALL"
  mkdir -p "$ROOT/srv"
  git clone --quiet --no-hardlinks --no-checkout "$REPO" "$ROOT/srv/sidecrypt"
  git -C "$ROOT/srv/sidecrypt" checkout --quiet --detach "$REV"
  # The machine's own trust anchors, like its apt sources: CAs its administrator added in
  # /usr/local/share/ca-certificates (e.g. for a TLS-inspecting egress proxy, without which npm
  # cannot reach its registry). ca-certificates, once install-deps.sh pulls it in, adds them to
  # the bundle. On an ordinary machine there are none and the root has Debian's list only.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$ROOT/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    echo "trusting this machine's local CAs: $(cd /usr/local/share/ca-certificates && echo ./*.crt)"
  fi
  step_done "unpack and clone"
  mkdir -p /run/systemd/nspawn
  mount -t tmpfs -o mode=0755 nspawn-state /run/systemd/nspawn
  step "systemd-nspawn $(systemd-nspawn --version | awk 'NR==1{print $2}'): the README's commands"
  exec "$@"
fi

# --container: inside the container, the README's commands in the clean clone.
if [ "${1:-}" = "--container" ]; then
  export CI=true DEBIAN_FRONTEND=noninteractive npm_config_cache=/var/cache/npm
  cd /srv/sidecrypt
  echo "in /srv: $(ls -A /srv)"
  step "inside: bash scripts/install-deps.sh"
  bash scripts/install-deps.sh
  step_done "install-deps"
  step "inside: bash scripts/demo.sh"
  bash scripts/demo.sh </dev/null
  step_done "demo"
  step "inside: bash scripts/test.sh (unit tests; integration tests matching $TESTS)"
  SIDECRYPT_TEST_ASAN=0 SIDECRYPT_TEST_INTEGRATION="$TESTS" bash scripts/test.sh
  step_done "test.sh"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || { echo "pristine: run as root (mmdebstrap, systemd-nspawn)" >&2; exit 1; }
for tool in mmdebstrap systemd-nspawn unshare git; do
  command -v "$tool" >/dev/null || { echo "pristine: $tool not found (install-deps.sh --engines)" >&2; exit 1; }
done

repo="$(cd "$(dirname "$0")/../.." && pwd)"
rev="$(git -C "$repo" rev-parse HEAD)"
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
  echo "pristine: note: uncommitted changes in $repo are not tested (testing $rev)"
fi
cache="${SIDECRYPT_PRISTINE_CACHE:-/var/cache/sidecrypt-pristine}"
tests="${SIDECRYPT_PRISTINE_TESTS:-integration\.test_(gossip_mixed_fleet|gossip_rollout_stages|rpc_tls_go_peers|rules_install_remove)$}"
timeout_s="${SIDECRYPT_PRISTINE_TIMEOUT:-3600}"
variant=minbase
mmopts=(--variant="$variant" --dpkgopt=force-unsafe-io)

t0=$(date +%s)

# --- 1. the root tarball ---------------------------------------------------------------------
sources=()
[ -s /etc/apt/sources.list ] && grep -qE '^[[:space:]]*deb' /etc/apt/sources.list && sources+=(/etc/apt/sources.list)
for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -s "$f" ] && sources+=("$f")
done
[ ${#sources[@]} -gt 0 ] || { echo "pristine: no apt sources found in /etc/apt" >&2; exit 1; }
key="$(date -u +%Y%m%d)-$( { echo "${mmopts[*]}"; cat "${sources[@]}"; } | sha256sum | cut -c1-12)"
tarball="$cache/bookworm-$variant-$key.tar"
mkdir -p "$cache/apt-archives/partial" "$cache/npm"
# One run at a time per cache: apt inside locks the shared archive directory.
exec 9>"$cache/lock"
flock -w "$timeout_s" 9 || { echo "pristine: another run holds $cache/lock" >&2; exit 1; }

step "root filesystem (mmdebstrap $variant, $(mmdebstrap --version | awk '{print $2}'))"
if [ -f "$tarball" ]; then
  echo "cached: $tarball"
else
  echo "building $tarball from ${sources[*]}"
  # Older roots (other days or sources) are not needed any more.
  find "$cache" -maxdepth 1 -name "bookworm-$variant-*.tar*" -delete
  mmdebstrap "${mmopts[@]}" --mode=root --format=tar --quiet \
    bookworm "$tarball.partial" "${sources[@]}"
  mv "$tarball.partial" "$tarball"
fi
step_done "root filesystem"

# --- 2. a private mount namespace: the root on a tmpfs, the clone, then the container ---------
# All mounts live in a private mount namespace (unshare): the tmpfs with the root, the tmpfs
# nspawn needs for its own state (it refuses to clean that up on a disk) and every mount of the
# container. When the last process in it ends, all of it is gone, whatever the exit path. The
# network namespaces the tests create are mounted in the container's own /run and end with it.
# The container is not registered with machined (--register=no), so no machine is left either.
# (The tmpfs also spares the disk a few GB of small files: deleting them took minutes.)
work="$(mktemp -d /var/tmp/sidecrypt-pristine.XXXXXX)"
child=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    echo "pristine: stopping the container"
    kill -TERM "$child" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  if findmnt -rn -o TARGET | grep -qF "$work"; then  # cannot happen; checked all the same
    echo "pristine: mounts left under $work" >&2
    rc=1
  else
    rm -rf --one-file-system "$work"
  fi
  echo "pristine: total $(( $(date +%s) - t0 ))s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

opts=()
[ -d /lib/modules ] && opts+=(--bind-ro=/lib/modules)  # nft may load modules
# Node.js reads extra CAs from this variable; pass it on when this machine sets it (see
# pristine_namespace below).
[ -n "${NODE_EXTRA_CA_CERTS:-}" ] && opts+=(--setenv=NODE_EXTRA_CA_CERTS="$NODE_EXTRA_CA_CERTS")
REV="$rev" REPO="$repo" ROOT="$work" TARBALL="$tarball" \
  TMPFS_SIZE="${SIDECRYPT_PRISTINE_TMPFS_SIZE:-12G}" SYSTEMD_NSPAWN_API_VFS_WRITABLE=yes \
  unshare --mount --propagation private -- bash "$0" --namespace \
  timeout --kill-after=30 "$timeout_s" \
  systemd-nspawn --quiet --register=no --keep-unit --as-pid2 \
    --directory="$work" --machine="sc-pristine-$$" \
    --capability=all --private-users=no --resolv-conf=copy-host --timezone=off \
    --bind="$cache/apt-archives:/var/cache/apt/archives" --bind="$cache/npm:/var/cache/npm" \
    "${opts[@]}" --setenv=TESTS="$tests" \
    /bin/bash /srv/sidecrypt/scripts/ci/pristine.sh --container &
child=$!
wait "$child"
child=""
echo "pristine: passed (install-deps, demo, unit and integration tests in a clean clone of $rev)"
