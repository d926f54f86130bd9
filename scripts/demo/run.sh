#!/usr/bin/env bash
# The demo: a mixed fleet in network namespaces walks the whole rollout by reload alone.
#   n1, n2  plaintext serf agents, each with sidecrypt beside it; n1 is also an RPC client agent
#           and n2 an RPC server agent (a plaintext Consul-shaped server on :8300)
#   n3, n4  serf agents with native encryption (serf agent -encrypt KEY)
# Stages: 1 accept both (plaintext, keys and certificates installed) -> 2 encrypt outgoing (gossip
# sealed, RPC over mutual TLS) -> natives join -> 3 verify incoming. Along the way: the census,
# the checks, and a wire capture that opens only with the key. Everything lives in namespaces
# scdemo* and a scratch directory, removed on exit or Ctrl-C.
set -euo pipefail
bin="$(realpath "$1")"
root="$(cd "$(dirname "$0")/../.." && pwd)"
[ "$(id -u)" -eq 0 ] || { echo "the demo creates network namespaces: run it as root (sudo)"; exit 1; }
work="$(mktemp -d /tmp/sidecrypt-demo-XXXXXX)"
NS=(scdemo1 scdemo2 scdemo3 scdemo4)
cleanup() {
  trap - EXIT INT TERM
  for ns in "${NS[@]}" scdemosw; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null || true; done
  done
  sleep 0.5
  for ns in "${NS[@]}" scdemosw; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "interrupted: cleaning up"; exit 130' INT TERM
say() { printf '\n\033[1m## %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
wait_for() {  # wait_for SECONDS CMD...: retry until CMD succeeds
  local t=$1; shift
  for _ in $(seq $((t * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}
ip_of() { echo "10.250.99.$1"; }

say "Preparing: the Consul-shaped RPC peer (Go, offline) and Consul-shaped certificates"
bash "$root/tests/peers/build.sh" "$work/peers" >/dev/null
rpcpeer="$work/peers/rpcpeer"
bash "$root/certs-example/make-certs.sh" "$work/certs" dc1 consul >/dev/null
echo "rpcpeer built; CA, server.dc1.consul and client.dc1.consul certificates made"

say "Four hosts in network namespaces on one bridge (10.250.99.0/24)"
ip netns add scdemosw
ip -n scdemosw link add br0 type bridge && ip -n scdemosw link set br0 up
for i in 1 2 3 4; do
  ip netns add "scdemo$i"
  ip link add "scdv$i" type veth peer name "scdp$i"
  ip link set "scdv$i" netns "scdemo$i"; ip link set "scdp$i" netns scdemosw
  ip -n scdemosw link set "scdp$i" master br0; ip -n scdemosw link set "scdp$i" up
  ip -n "scdemo$i" addr add "$(ip_of "$i")/24" dev "scdv$i"
  ip -n "scdemo$i" link set lo up; ip -n "scdemo$i" link set "scdv$i" up
done
key="$("$bin" keygen)"
echo "gossip key made with 'sidecrypt keygen' (never printed; sidecrypt shows fingerprints only)"

stage_config() {  # stage_config N HOST ROLE: writes $work/nHOST.toml for rollout stage N
  local stage=$1 host=$2 role=$3 out=false in=false
  [ "$stage" -ge 2 ] && out=true
  [ "$stage" -ge 3 ] && in=true
  cat > "$work/n$host.toml" <<TOML
[agent]
profile = "custom"
server = $([ "$role" = server ] && echo true || echo false)
data_dir = "$work/data$host"
[gossip]
encrypt = "$key"
encrypt_verify_outgoing = $out
encrypt_verify_incoming = $in
[tls]
ca_file = "$work/certs/consul-agent-ca.pem"
cert_file = "$work/certs/dc1-$role-consul-0.pem"
key_file = "$work/certs/dc1-$role-consul-0-key.pem"
verify_outgoing = $out
verify_server_hostname = $out
verify_incoming = $in
[intercept]
install_rules = true
drain_time = "0s"
[[intercept.port]]
port = 7946
protocol = "gossip"
[[intercept.port]]
port = 8300
protocol = "rpc"
TOML
}
reload_all() {
  stage_config "$1" 1 client; stage_config "$1" 2 server
  show in_ns scdemo1 "$bin" reload -c "$work/n1.toml"
  show in_ns scdemo2 "$bin" reload -c "$work/n2.toml"
}
rpc_call() {
  local r
  r=$(in_ns scdemo1 "$rpcpeer" client -addr "$(ip_of 2):8300" -mode rpc 2>&1 | tail -1 || true)
  echo "n1 -> n2:8300, 10 msgpack-rpc calls over yamux: $(echo "$r" | cut -d' ' -f1-2)"
}

say "Stage 1 (accept both): n1 and n2 with sidecrypt; keys and certificates installed, nothing enforced"
stage_config 1 1 client; stage_config 1 2 server
show "$bin" check-config "$work/n1.toml"
for i in 1 2; do
  in_ns "scdemo$i" "$bin" run --config "$work/n$i.toml" > "$work/sidecrypt$i.log" 2>&1 &
done
for i in 1 2; do wait_for 10 grep -q started: "$work/sidecrypt$i.log"; done
for i in 1 2; do
  in_ns "scdemo$i" serf agent -node "n$i" -bind "$(ip_of "$i"):7946" > "$work/n$i.log" 2>&1 &
done
in_ns scdemo2 "$rpcpeer" server -listen "$(ip_of 2):8300" -lifetime 3600s > "$work/rpc-server.log" 2>&1 &
for i in 1 2; do wait_for 15 grep -q "Serf agent running" "$work/n$i.log"; done
wait_for 15 grep -q LISTENING "$work/rpc-server.log"
show in_ns scdemo2 serf join "$(ip_of 1):7946"
wait_for 20 sh -c "ip netns exec scdemo1 serf members | grep -c alive | grep -qx 2"
rpc_call
sleep 1
echo "The census on n2 (who still speaks plaintext):"
show in_ns scdemo2 "$bin" status -c "$work/n2.toml"
echo "Safe to enforce incoming? (exit 0 = yes)"
show in_ns scdemo2 "$bin" check enforce-incoming -c "$work/n2.toml" || echo "-> no, and it says why"

say "Stage 2 (encrypt outgoing): by reload only, no agent restarted"
reload_all 2
sleep 1
rpc_call
echo "Now natives can join: n3 and n4 encrypt and verify everything (serf agent -encrypt)"
in_ns scdemo4 tcpdump -i scdv4 -U -s 0 -w "$work/wire.pcap" port 7946 >/dev/null 2>&1 &
tcpdump_pid=$!
for i in 3 4; do
  in_ns "scdemo$i" serf agent -node "n$i" -bind "$(ip_of "$i"):7946" -encrypt "$key" \
    > "$work/n$i.log" 2>&1 &
done
for i in 3 4; do wait_for 15 grep -q "Serf agent running" "$work/n$i.log"; done
show in_ns scdemo3 serf join "$(ip_of 1):7946"
show in_ns scdemo4 serf join "$(ip_of 2):7946"
wait_for 30 sh -c "ip netns exec scdemo1 serf members | grep -c alive | grep -qx 4"
echo "One cluster: every node sees all four alive"
for i in 1 3; do echo "-- on n$i:"; in_ns "scdemo$i" serf members; done
show in_ns scdemo3 serf event demo-event "from a native agent"
wait_for 10 grep -q "user-event: demo-event" "$work/n1.log" \
  && echo "n1 (plaintext agent behind sidecrypt) received the native agent's event"

say "The wire, captured at n4: it opens only with the key"
sleep 3
kill "$tcpdump_pid" 2>/dev/null || true
sleep 0.5
printf '%s\n' "[\"$key\"]" > "$work/demo.keyring"; chmod 600 "$work/demo.keyring"
show "$bin" decode "$work/wire.pcap" --keyring "$work/demo.keyring" 2>&1 | tail -4 || true
other="$("$bin" keygen)"; printf '%s\n' "[\"$other\"]" > "$work/other.keyring"; chmod 600 "$work/other.keyring"
echo "and with a different key:"
show "$bin" decode "$work/wire.pcap" --keyring "$work/other.keyring" 2>&1 | tail -1 || true

say "Gate, then stage 3 (verify incoming) by reload"
sleep 4
echo "The census on n2 now (RPC from n1 arrives in TLS, gossip encrypted, with n1's certificate name):"
show in_ns scdemo2 "$bin" status -c "$work/n2.toml"
wait_for 20 in_ns scdemo2 "$bin" check enforce-incoming --within 3s -c "$work/n2.toml" || true
show in_ns scdemo2 "$bin" check enforce-incoming --within 3s -c "$work/n2.toml" && echo "-> yes"
reload_all 3
sleep 2
rpc_call
echo "Members after the last stage (nobody failed):"
show in_ns scdemo1 serf members

say "Key rotation with Serf's own tooling, run on a native node"
new="$("$bin" keygen)"
serf_keys() {  # serf_keys OP KEY NAME: runs `serf keys -OP KEY` on n3, echoing NAME, not the key
  printf '$ serf keys -%s <%s>\n' "$1" "$3"
  in_ns scdemo3 serf keys "-$1" "$2"
}
serf_keys install "$new" "new key"
printf '$ serf keys -list\n'
in_ns scdemo3 serf keys -list | sed "s#$new#<new key>#; s#$key#<old key>#" || true
serf_keys use "$new" "new key"
serf_keys remove "$key" "old key"
echo "n1's sidecrypt keyring now (fingerprints):"
show "$bin" keyring list --file "$work/data1/serf/local.keyring"

if grep -qF "$key" "$work"/sidecrypt*.log; then echo "BUG: key text in a log"; exit 1; fi
echo
echo "Demo done; namespaces and files are removed on exit."
