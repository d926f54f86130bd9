#!/usr/bin/env bash
# make-certs.sh OUTDIR [DC] [DOMAIN] [--negatives] [--valid-days N]
#
# Writes a CA and agent certificates with the same structure `consul tls ca create` and
# `consul tls cert create -server|-client` produce (docs/spec/consul-rpc-tls.md §3), using only openssl,
# xxd and bc. With --negatives it also writes the "must be refused" shapes used by the tests
# (docs/spec/rpc-peers.md §4). Keys are P-256 in SEC1 form ("EC PRIVATE KEY"), files are 0600 for keys and
# 0644 for certificates. Refuses to touch an OUTDIR that already holds a CA, as consul does.
# --valid-days N replaces Consul's validity periods (CA 1825 days, leaves 365 days) with N days
# for every certificate; it exists only for long-lived test fixtures that must not expire.
set -euo pipefail

usage() {
  echo "usage: $0 OUTDIR [DC] [DOMAIN] [--negatives] [--valid-days N]" >&2
  exit 2
}

NEGATIVES=0
CA_DAYS=1825
LEAF_DAYS=365
POSITIONAL=()
while [ $# -gt 0 ]; do
  case "$1" in
    --negatives) NEGATIVES=1 ;;
    --valid-days)
      if [ $# -lt 2 ] || ! [[ "$2" =~ ^[1-9][0-9]*$ ]]; then usage; fi
      CA_DAYS=$2
      LEAF_DAYS=$2
      shift
      ;;
    -h | --help) usage ;;
    -*) echo "unknown option: $1" >&2; usage ;;
    *) POSITIONAL+=("$1") ;;
  esac
  shift
done
if [ "${#POSITIONAL[@]}" -lt 1 ] || [ "${#POSITIONAL[@]}" -gt 3 ]; then usage; fi
OUT=${POSITIONAL[0]}
DC=${POSITIONAL[1]:-dc1}
DOMAIN=${POSITIONAL[2]:-consul}
for tool in openssl xxd bc; do
  command -v "$tool" >/dev/null || { echo "$0: needs $tool" >&2; exit 1; }
done
case "$DC$DOMAIN" in
  *[!A-Za-z0-9.-]*) echo "$0: DC and DOMAIN may only hold letters, digits, '.' and '-'" >&2; exit 2 ;;
esac

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
CA="$OUT/$DOMAIN-agent-ca.pem"
CA_KEY="$OUT/$DOMAIN-agent-ca-key.pem"
if [ -e "$CA" ] || [ -e "$CA_KEY" ]; then
  echo "$0: $CA already exists; refusing to overwrite (use an empty directory)" >&2
  exit 1
fi
umask 077
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# A random positive serial of at most 128 bits, in hex (Go: rand.Int(2^128) ... top bit clear).
serial_hex() {
  local h
  h=$(openssl rand -hex 16)
  printf '%x%s' $((0x${h:0:1} & 7)) "${h:1}"
}

# Consul's SubjectKeyId: SHA-256 over the DER SubjectPublicKeyInfo (32 bytes, not RFC 5280's
# SHA-1), written as colon-separated hex for openssl's config syntax.
key_id() {
  openssl pkey -in "$1" -pubout -outform DER | openssl dgst -sha256 -binary |
    xxd -p -c 64 | sed 's/../&:/g; s/:$//'
}

new_key() { # SEC1 P-256 without an "EC PARAMETERS" block, like `consul tls`
  openssl ecparam -name prime256v1 -genkey -noout -out "$1"
  chmod 0600 "$1"
}

# make_ca NAME_PREFIX: writes NAME_PREFIX.pem and NAME_PREFIX-key.pem (CA:TRUE).
make_ca() {
  local cert="$1.pem" key="$1-key.pem" serial
  new_key "$key"
  serial=$(serial_hex)
  cat >"$WORK/ca.cnf" <<CNF
[req]
distinguished_name = dn
string_mask = pkix
[dn]
[v3_ca]
keyUsage = critical, digitalSignature, keyCertSign, cRLSign
basicConstraints = critical, CA:TRUE
subjectKeyIdentifier = $(key_id "$key")
authorityKeyIdentifier = keyid:always
CNF
  # Go's generator puts the serial, in decimal, into the CA's common name.
  local cn
  cn="Consul Agent CA $(echo "ibase=16; ${serial^^}" | BC_LINE_LENGTH=0 bc)"
  openssl req -x509 -new -key "$key" -sha256 -days "$CA_DAYS" -set_serial "0x$serial" \
    -config "$WORK/ca.cnf" -extensions v3_ca -out "$cert" \
    -subj "/C=US/ST=CA/L=San Francisco/street=101 Second Street/postalCode=94105/O=HashiCorp Inc./CN=$cn"
  chmod 0644 "$cert"
}

# make_leaf CA_PREFIX OUT_PREFIX CN EKU SAN: a leaf signed by CA_PREFIX. SAN may be empty
# (the CN-only negative shape).
make_leaf() {
  local ca="$1.pem" ca_key="$1-key.pem" cert="$2.pem" key="$2-key.pem" cn="$3" eku="$4" san="$5"
  new_key "$key"
  {
    echo "[req]"
    echo "distinguished_name = dn"
    echo "string_mask = pkix"
    echo "[dn]"
    echo "[v3_leaf]"
    echo "keyUsage = critical, digitalSignature, keyEncipherment"
    echo "extendedKeyUsage = $eku"
    echo "basicConstraints = critical, CA:FALSE"
    echo "subjectKeyIdentifier = $(key_id "$key")"
    echo "authorityKeyIdentifier = keyid:always"
    [ -n "$san" ] && echo "subjectAltName = $san"
  } >"$WORK/leaf.cnf"
  openssl req -new -key "$key" -config "$WORK/leaf.cnf" -subj "/CN=$cn" -out "$WORK/leaf.csr"
  openssl x509 -req -in "$WORK/leaf.csr" -CA "$ca" -CAkey "$ca_key" \
    -set_serial "0x$(serial_hex)" -days "$LEAF_DAYS" -sha256 \
    -extfile "$WORK/leaf.cnf" -extensions v3_leaf -out "$cert" 2>/dev/null
  chmod 0644 "$cert"
  # `consul tls cert create` verifies the new certificate against its CA before writing it.
  openssl verify -CAfile "$ca" "$cert" >/dev/null
}

SERVER_NAME="server.$DC.$DOMAIN"
CLIENT_NAME="client.$DC.$DOMAIN"
SERVER_SAN="DNS:$SERVER_NAME, DNS:localhost, IP:127.0.0.1"
CLIENT_SAN="DNS:$CLIENT_NAME, DNS:localhost, IP:127.0.0.1"

make_ca "$OUT/$DOMAIN-agent-ca"
make_leaf "$OUT/$DOMAIN-agent-ca" "$OUT/$DC-server-$DOMAIN-0" "$SERVER_NAME" \
  "serverAuth, clientAuth" "$SERVER_SAN"
make_leaf "$OUT/$DOMAIN-agent-ca" "$OUT/$DC-client-$DOMAIN-0" "$CLIENT_NAME" \
  "clientAuth, serverAuth" "$CLIENT_SAN"

if [ "$NEGATIVES" = 1 ]; then
  REAL="$OUT/$DOMAIN-agent-ca"
  N="$OUT/negative"
  mkdir -p "$N"
  chmod 0755 "$N"
  # An unrelated CA with certificates of the right names: "wrong CA" in either direction.
  make_ca "$N/other-ca"
  make_leaf "$N/other-ca" "$N/other-server" "$SERVER_NAME" "serverAuth, clientAuth" "$SERVER_SAN"
  make_leaf "$N/other-ca" "$N/other-client" "$CLIENT_NAME" "clientAuth, serverAuth" "$CLIENT_SAN"
  # The right CA, the wrong datacenter: refused under verify_server_hostname.
  WRONG_DC=dc2
  [ "$DC" = dc2 ] && WRONG_DC=dc3
  make_leaf "$REAL" "$N/wrong-dc-server" "server.$WRONG_DC.$DOMAIN" "serverAuth, clientAuth" \
    "DNS:server.$WRONG_DC.$DOMAIN, DNS:localhost, IP:127.0.0.1"
  # The right name only in the subject CN: Go ignores CNs; BoringSSL must be told to.
  make_leaf "$REAL" "$N/cn-only-server" "$SERVER_NAME" "serverAuth, clientAuth" ""
  # A client certificate without clientAuth: refused by EKU checks.
  make_leaf "$REAL" "$N/server-auth-only-client" "$CLIENT_NAME" "serverAuth" "$CLIENT_SAN"
  # Trust file holding two CAs (the CA-rotation case): both must be trusted.
  cat "$N/other-ca.pem" "$REAL.pem" >"$N/ca-bundle.pem"
  chmod 0644 "$N/ca-bundle.pem"
  # Key-format variants of the real server key: PKCS#8, and an encrypted key (unsupported).
  openssl pkcs8 -topk8 -nocrypt -in "$OUT/$DC-server-$DOMAIN-0-key.pem" -out "$N/server-key-pkcs8.pem"
  openssl ec -in "$OUT/$DC-server-$DOMAIN-0-key.pem" -aes256 -passout pass:not-supported \
    -out "$N/server-key-encrypted.pem" 2>/dev/null
  # An RSA server certificate with a PKCS#1 "RSA PRIVATE KEY" (for key-format and RSA suites).
  openssl genrsa -traditional -out "$N/rsa-server-key.pem" 2048 2>/dev/null
  {
    echo "[req]"
    echo "distinguished_name = dn"
    echo "[dn]"
    echo "[v3_leaf]"
    echo "keyUsage = critical, digitalSignature, keyEncipherment"
    echo "extendedKeyUsage = serverAuth, clientAuth"
    echo "basicConstraints = critical, CA:FALSE"
    echo "subjectAltName = $SERVER_SAN"
  } >"$WORK/rsa.cnf"
  openssl req -new -key "$N/rsa-server-key.pem" -config "$WORK/rsa.cnf" -subj "/CN=$SERVER_NAME" \
    -out "$WORK/rsa.csr"
  openssl x509 -req -in "$WORK/rsa.csr" -CA "$REAL.pem" -CAkey "$REAL-key.pem" \
    -set_serial "0x$(serial_hex)" -days "$LEAF_DAYS" -sha256 -extfile "$WORK/rsa.cnf" -extensions v3_leaf \
    -out "$N/rsa-server.pem" 2>/dev/null
  chmod 0644 "$N/rsa-server.pem"
fi

echo "wrote certificates for $SERVER_NAME and $CLIENT_NAME to $OUT"
