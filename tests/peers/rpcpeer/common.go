// Shared pieces of the rpcpeer test tool: Consul's constants, msgpack handle, TLS loading and
// the line-oriented output the integration tests parse.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/go-msgpack/codec"
)

// Consul's first bytes (consul agent/pool/conn.go; docs/spec/consul-rpc-tls.md §1.1).
const (
	rpcConsul         byte = 0
	rpcRaft           byte = 1
	rpcMultiplex      byte = 2
	rpcTLS            byte = 3
	rpcMultiplexV2    byte = 4
	rpcSnapshot       byte = 5
	rpcGossip         byte = 6
	rpcTLSInsecure    byte = 7
	rpcGRPC           byte = 8
	rpcRaftForwarding byte = 9
	rpcMaxTypeValue   byte = 9
)

// docs/spec/consul-rpc-tls.md §1.1: ALPN names in the order a Consul server offers them, and the type each stands for
// (-1: no plaintext equivalent).
var alpnProtocols = []string{
	"consul/rpc-single", "consul/raft", "consul/rpc-multi", "consul/rpc-snapshot",
	"consul/rpc-gossip", "consul/rpc-grpc", "consul/raft-forwarding",
	"consul/wan-gossip/packet", "consul/wan-gossip/stream",
}
var alpnTypes = map[string]int{
	"consul/rpc-single": 0, "consul/raft": 1, "consul/rpc-multi": 4, "consul/rpc-snapshot": 5,
	"consul/rpc-gossip": 6, "consul/rpc-grpc": 8, "consul/raft-forwarding": 9,
	"consul/wan-gossip/packet": -1, "consul/wan-gossip/stream": -1,
}

// Consul's msgpack handle (docs/spec/rpc-peers.md §5.1).
var msgpackHandle = &codec.MsgpackHandle{RawToString: true, BasicHandle: codec.BasicHandle{
	DecodeOptions: codec.DecodeOptions{MapType: reflect.TypeOf(map[string]interface{}{})}}}

// ConnInfo is what the server saw of one connection; Status.Info returns it to the client.
type ConnInfo struct {
	TLS        bool
	Version    string
	Cipher     string
	ServerName string // SNI
	PeerCN     string
	ALPN       string
	Outer      int // first byte on the wire (-1: native TLS, no prefix)
	Inner      int // type byte served
	Resumed    bool
}

// EchoArgs / EchoReply are the Echo.Echo payloads.
type EchoArgs struct{ Data []byte }
type EchoReply struct{ Data []byte }

// SnapshotRequest precedes the body on a type-5 stream; the reply header precedes the reply.
type SnapshotRequest struct {
	Op     string
	Size   int64
	Factor int
}
type SnapshotResponse struct {
	Error string
	Size  int64
}

var outMu sync.Mutex

// emit prints one machine-readable line: WORD key=value ..., values quoted when needed.
func emit(word string, kv map[string]interface{}) {
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(word)
	for _, k := range keys {
		v := fmt.Sprint(kv[k])
		if v == "" || strings.ContainsAny(v, " \t\"=") {
			v = strconv.Quote(v)
		}
		fmt.Fprintf(&b, " %s=%s", k, v)
	}
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Fprintln(os.Stdout, b.String())
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificates", file)
	}
	return pool, nil
}

func parseVersion(s string) (uint16, error) {
	switch s {
	case "":
		return 0, nil
	case "1.0":
		return tls.VersionTLS10, nil
	case "1.1":
		return tls.VersionTLS11, nil
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("unknown TLS version %q (1.0, 1.1, 1.2, 1.3)", s)
}

func versionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1.0"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return fmt.Sprintf("0x%04x", v)
}

// tlsFlags are the TLS settings both modes share.
type tlsFlags struct {
	ca, cert, key  string
	minVer, maxVer string
	dc, domain     string
	verifyHostname bool
}

func (f *tlsFlags) serverName() string {
	return "server." + f.dc + "." + f.domain
}

func (f *tlsFlags) base() (*tls.Config, *x509.CertPool, error) {
	cfg := &tls.Config{}
	var err error
	if cfg.MinVersion, err = parseVersion(f.minVer); err != nil {
		return nil, nil, err
	}
	if cfg.MaxVersion, err = parseVersion(f.maxVer); err != nil {
		return nil, nil, err
	}
	var pool *x509.CertPool
	if f.ca != "" {
		if pool, err = loadPool(f.ca); err != nil {
			return nil, nil, err
		}
	}
	if f.cert != "" {
		kp, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, nil, err
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	return cfg, pool, nil
}

func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("%T has no half-close", c)
}

// pattern is deterministic test data, so both ends can check content without sharing it.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*131) + seed
	}
	return b
}

func readAllLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err == nil && int64(len(b)) > limit {
		err = fmt.Errorf("more than %d bytes", limit)
	}
	return b, err
}
