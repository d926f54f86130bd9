#!/usr/bin/env bash
# The demo: a mixed Serf fleet in network namespaces. n1 is a plaintext serf agent with
# sidecrypt beside it; n2 and n3 are natively encrypting serf agents (-encrypt). They form one
# cluster, the wire carries only ciphertext, and sidecrypt's census and checks show the rollout.
# Everything lives in namespaces scdemo* and a scratch directory, removed at the end.
set -euo pipefail
bin="$(realpath "$1")"
[ "$(id -u)" -eq 0 ] || { echo "the demo creates network namespaces: run it as root (sudo)"; exit 1; }
work="$(mktemp -d /tmp/sidecrypt-demo-XXXXXX)"
NS=(scdemo1 scdemo2 scdemo3)
cleanup() {
  for ns in "${NS[@]}" scdemosw; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  done
  sleep 0.5
  for ns in "${NS[@]}" scdemosw; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n\033[1m## %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
wait_for() {  # wait_for SECONDS CMD...: retry until CMD succeeds
  local t=$1; shift
  for _ in $(seq $((t * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

say "Three hosts in network namespaces on one bridge (10.250.99.0/24)"
ip netns add scdemosw
ip -n scdemosw link add br0 type bridge && ip -n scdemosw link set br0 up
for i in 1 2 3; do
  ip netns add "scdemo$i"
  ip link add "scdv$i" type veth peer name "scdp$i"
  ip link set "scdv$i" netns "scdemo$i"; ip link set "scdp$i" netns scdemosw
  ip -n scdemosw link set "scdp$i" master br0; ip -n scdemosw link set "scdp$i" up
  ip -n "scdemo$i" addr add "10.250.99.$i/24" dev "scdv$i"
  ip -n "scdemo$i" link set lo up; ip -n "scdemo$i" link set "scdv$i" up
done
in_ns scdemosw tcpdump -i br0 -U -s 0 -w "$work/wire.pcap" port 7946 >/dev/null 2>&1 &
key="$("$bin" keygen)"
echo "gossip key made with 'sidecrypt keygen' (never printed; fingerprints only)"

say "n1: a plaintext serf agent, with sidecrypt beside it (accepting both, encrypting outgoing)"
cat > "$work/proxy.toml" <<TOML
[agent]
profile = "serf"
data_dir = "$work/data"
[gossip]
encrypt = "$key"
encrypt_verify_incoming = false   # rollout stage: accept both
encrypt_verify_outgoing = true
[intercept]
install_rules = true
drain_time = "0s"
TOML
show "$bin" check-config "$work/proxy.toml"
in_ns scdemo1 "$bin" run --config "$work/proxy.toml" > "$work/sidecrypt.log" 2>&1 &
wait_for 10 grep -q started: "$work/sidecrypt.log"
in_ns scdemo1 serf agent -node n1 -bind 10.250.99.1:7946 > "$work/n1.log" 2>&1 &

say "n2, n3: serf agents with native encryption (serf agent -encrypt KEY)"
in_ns scdemo2 serf agent -node n2 -bind 10.250.99.2:7946 -encrypt "$key" > "$work/n2.log" 2>&1 &
in_ns scdemo3 serf agent -node n3 -bind 10.250.99.3:7946 -encrypt "$key" > "$work/n3.log" 2>&1 &
for i in 1 2 3; do wait_for 15 grep -q "Serf agent running" "$work/n$i.log"; done
show in_ns scdemo1 serf join 10.250.99.2:7946
show in_ns scdemo3 serf join 10.250.99.1:7946
wait_for 20 sh -c "ip netns exec scdemo2 serf members | grep -c alive | grep -qx 3"

say "One cluster: every node sees all three alive"
for i in 1 2 3; do echo "-- on n$i:"; in_ns "scdemo$i" serf members; done
show in_ns scdemo2 serf event demo-event "from a native agent"
wait_for 10 grep -q "user-event: demo-event" "$work/n1.log" && echo "n1 (plaintext, behind sidecrypt) received the event"

say "What sidecrypt sees: stages, keyrings, and every peer's traffic"
show in_ns scdemo1 "$bin" status -c "$work/proxy.toml"

say "Is it safe to turn encrypt_verify_incoming on? (exit 0 = yes)"
show in_ns scdemo1 "$bin" check enforce-incoming -c "$work/proxy.toml" && echo yes

say "The wire between hosts: no plaintext memberlist message (no node name in clear)"
sleep 1
kill %1 2>/dev/null || true
sleep 0.5
if python3 - "$work/wire.pcap" <<'PY'
import sys
data = open(sys.argv[1], "rb").read()
bad = [n for n in (b"\xa2n1", b"\xa2n2", b"\xa2n3") if n in data]
print("captured %d bytes between the hosts; plaintext node names found: %s" % (len(data), bad or "none"))
sys.exit(1 if bad else 0)
PY
then echo "only ciphertext on the wire"; else echo "BUG: plaintext on the wire"; exit 1; fi
if grep -qF "$key" "$work"/*.log; then echo "BUG: key text in a log"; exit 1; fi
echo
echo "Demo done; namespaces and files are removed on exit."
