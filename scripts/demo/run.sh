#!/usr/bin/env bash
# Walks through what sidecrypt does today, in a scratch directory that is removed at the end.
set -euo pipefail
bin="$(realpath "$1")"
work="$(mktemp -d /tmp/sidecrypt-demo-XXXXXX)"
trap 'rm -rf "$work"' EXIT
say() { printf '\n\033[1m## %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

say "1. A gossip key, made like 'consul keygen' (32 random bytes, base64)"
key="$("$bin" keygen)"
echo "(a new key was generated; it is not printed again anywhere below)"

say "2. A proxy.toml for a Serf agent, validated without starting anything"
cat > "$work/proxy.toml" <<TOML
[agent]
profile = "serf"
data_dir = "$work/data"
[gossip]
encrypt = "$key"
encrypt_verify_incoming = false   # rollout stage: accept both
[log]
level = "debug"
TOML
show "$bin" check-config "$work/proxy.toml"

say "3. Mistakes are reported all at once, with file:line:column: key"
printf '[gossip]\nencrypt = "c2hvcnQ="\nencrypt_verify_incomming = true\n[admin]\nlisten = "0.0.0.0:9920"\n' \
  > "$work/bad.toml"
show "$bin" check-config "$work/bad.toml" || true

say "4. Start: the keyring file is created from 'encrypt' (Consul's format, mode 0600)"
"$bin" run --config "$work/proxy.toml" > "$work/run.log" 2>&1 &
pid=$!
for _ in $(seq 50); do grep -q started "$work/run.log" && break; sleep 0.1; done
show ls -l "$work/data/serf/local.keyring"
show "$bin" keyring list --file "$work/data/serf/local.keyring"

say "5. Key rotation on the file, then a live reload (SIGHUP); logs show fingerprints only"
"$bin" keygen | "$bin" keyring install - --file "$work/data/serf/local.keyring" >/dev/null
newfp="$("$bin" keyring list --file "$work/data/serf/local.keyring" | awk 'NR==3{print $2}')"
show "$bin" keyring use "$newfp" --file "$work/data/serf/local.keyring"
kill -HUP "$pid"
for _ in $(seq 50); do grep -q "reload complete" "$work/run.log" && break; sleep 0.1; done

say "6. A corrupt keyring is refused on reload and left untouched; the proxy keeps running"
echo '["broken' > "$work/data/serf/local.keyring"
kill -HUP "$pid"
for _ in $(seq 50); do grep -q "reload failed" "$work/run.log" && break; sleep 0.1; done
kill -TERM "$pid"; wait "$pid" || true
show cat "$work/run.log"
if grep -qF "$key" "$work/run.log"; then echo "BUG: key text in log"; exit 1; fi
echo
echo "The key never appeared in any log line above."
