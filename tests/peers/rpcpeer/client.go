// rpcpeer client: dials like Consul's connection pool (consul agent/pool/pool.go;
// docs/spec/consul-rpc-tls.md §1.3, §2.3), runs RPC calls or a half-close exchange, prints one RESULT line.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/rpc"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-msgpack/codec"
	msgpackrpc "github.com/hashicorp/net-rpc-msgpackrpc"
	"github.com/hashicorp/yamux"
)

type client struct {
	tf       tlsFlags
	addr     string
	useTLS   bool
	mode     string
	alpn     string
	typeByte int
	calls    int
	streams  int
	size     int
	factor   int
	timeout  time.Duration
	idle     time.Duration
	// Resumption tests: connections in a row, sharing one session cache when cache is set.
	repeat   int
	cache    tls.ClientSessionCache
	stepFile string
	resumed  []string
	// result is written by the per-stream goroutines of runYamux too: only through set().
	// (Unguarded, two streams finishing together died with "fatal error: concurrent map
	// writes", mostly when the machine was busy.)
	mu     sync.Mutex
	result map[string]interface{}
}

func (c *client) set(key string, value interface{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.result[key] = value
}

func clientMain(args []string) int {
	c := &client{result: map[string]interface{}{}}
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	fs.StringVar(&c.addr, "addr", "", "server address host:port")
	fs.BoolVar(&c.useTLS, "tls", false, "Consul's verify_outgoing: 0x03 (or 0x07) then TLS")
	fs.StringVar(&c.mode, "mode", "rpc", "rpc (0x04 yamux) | rpc-single (0x00) | snapshot (0x05) | raft (0x01) | insecure (0x07)")
	fs.StringVar(&c.alpn, "alpn", "", "native TLS: no prefix byte, offer this ALPN name") // docs/spec/consul-rpc-tls.md §1.4
	fs.IntVar(&c.typeByte, "type", -1, "override the (inner) type byte, for refusal tests")
	fs.StringVar(&c.tf.ca, "ca", "", "CA file")
	fs.StringVar(&c.tf.cert, "cert", "", "client certificate (sent when the server asks)")
	fs.StringVar(&c.tf.key, "key", "", "client key")
	fs.StringVar(&c.tf.minVer, "tls-min", "1.2", "minimum TLS version")
	fs.StringVar(&c.tf.maxVer, "tls-max", "", "maximum TLS version")
	fs.StringVar(&c.tf.dc, "dc", "dc1", "datacenter being dialled")
	fs.StringVar(&c.tf.domain, "domain", "consul", "domain")
	fs.BoolVar(&c.tf.verifyHostname, "verify-server-hostname", false, "Consul's verify_server_hostname")
	fs.IntVar(&c.calls, "n", 10, "RPC calls (rpc modes)")
	fs.IntVar(&c.streams, "streams", 2, "yamux streams (rpc mode)")
	fs.IntVar(&c.size, "size", 4096, "payload bytes per call / snapshot body bytes")
	fs.IntVar(&c.factor, "factor", 3, "snapshot reply = body x factor")
	fs.DurationVar(&c.timeout, "timeout", 20*time.Second, "overall deadline")
	fs.IntVar(&c.repeat, "repeat", 1, "connections in a row (each runs the mode); RESULT lists which resumed")
	sessionCache := fs.Bool("session-cache", false, "keep a tls.ClientSessionCache across -repeat connections (Consul's client has none)")
	fs.StringVar(&c.stepFile, "step-file", "", "before connection i (from 0), wait until this file holds a number > i")
	fs.DurationVar(&c.idle, "idle", 0, "rpc modes: after the calls, leave each stream idle this long, then call again on it (-timeout must cover it)")
	fs.Parse(args)
	c.result["mode"] = c.mode
	c.result["tls"] = c.useTLS || c.alpn != ""
	if *sessionCache {
		c.cache = tls.NewLRUClientSessionCache(16)
	}
	var err error
	for i := 0; i < c.repeat && err == nil; i++ {
		if err = c.waitStep(i); err == nil {
			err = c.run()
		}
		if err == nil && c.repeat > 1 {
			resumed := "plaintext" // the TLS (if any) is sidecrypt's, not this client's
			if len(c.resumed) > 0 {
				resumed = c.resumed[len(c.resumed)-1]
			}
			emit("CONNECTED", map[string]interface{}{"index": i, "resumed": resumed})
		}
	}
	if len(c.resumed) > 0 {
		c.result["resumed"] = strings.Join(c.resumed, ",")
	}
	if err == nil && c.idle > 0 {
		c.result["idle"] = c.idle.String()
		c.result["calls_after_idle"] = c.calls
	}
	if err != nil {
		c.result["error"] = err.Error()
		emit("RESULT fail", c.result)
		return 1
	}
	emit("RESULT ok", c.result)
	return 0
}

// tlsConfig is Consul's outgoing config: ServerName with verify_server_hostname, otherwise
// InsecureSkipVerify plus a chain-only check against the CA with no name (docs/spec/consul-rpc-tls.md §2.3).
func (c *client) tlsConfig() (*tls.Config, error) {
	cfg, pool, err := c.tf.base()
	if err != nil {
		return nil, err
	}
	if pool == nil {
		return nil, errors.New("VerifyOutgoing set but no CA certificates were provided")
	}
	if c.mode == "insecure" {
		cfg.Certificates = nil // auto-encrypt bootstrap: the client has no certificate yet
	}
	if c.tf.verifyHostname {
		cfg.ServerName = c.tf.serverName()
		cfg.RootCAs = pool
		return cfg, nil
	}
	cfg.InsecureSkipVerify = true
	cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("no server certificate")
		}
		certs := make([]*x509.Certificate, len(raw))
		for i, r := range raw {
			if certs[i], err = x509.ParseCertificate(r); err != nil {
				return err
			}
		}
		opts := x509.VerifyOptions{Roots: pool, Intermediates: x509.NewCertPool()}
		for _, ic := range certs[1:] {
			opts.Intermediates.AddCert(ic)
		}
		_, err := certs[0].Verify(opts)
		return err
	}
	return cfg, nil
}

// waitStep blocks until -step-file allows connection i (bounded by -timeout).
func (c *client) waitStep(i int) error {
	if c.stepFile == "" {
		return nil
	}
	deadline := time.Now().Add(c.timeout)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(c.stepFile)
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > i {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("step file %s never allowed connection %d", c.stepFile, i)
}

func (c *client) innerType() byte {
	if c.typeByte >= 0 {
		return byte(c.typeByte)
	}
	switch c.mode {
	case "rpc-single":
		return rpcConsul
	case "snapshot":
		return rpcSnapshot
	case "raft":
		return rpcRaft
	}
	return rpcMultiplexV2
}

func (c *client) dial() (net.Conn, error) {
	raw, err := net.DialTimeout("tcp", c.addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	raw.SetDeadline(time.Now().Add(c.timeout))
	if !c.useTLS && c.alpn == "" {
		_, err = raw.Write([]byte{c.innerType()})
		return raw, err
	}
	cfg, err := c.tlsConfig()
	if err != nil {
		raw.Close()
		return nil, err
	}
	if c.alpn != "" {
		cfg.NextProtos = []string{c.alpn}
	} else {
		prefix := rpcTLS
		if c.mode == "insecure" {
			prefix = rpcTLSInsecure
		}
		if _, err := raw.Write([]byte{prefix}); err != nil {
			raw.Close()
			return nil, err
		}
	}
	cfg.ClientSessionCache = c.cache
	tc := tls.Client(raw, cfg)
	if err := tc.Handshake(); err != nil {
		raw.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	st := tc.ConnectionState()
	c.resumed = append(c.resumed, strconv.FormatBool(st.DidResume))
	c.result["version"] = versionName(st.Version)
	c.result["cipher"] = tls.CipherSuiteName(st.CipherSuite)
	c.result["alpn"] = st.NegotiatedProtocol
	if len(st.PeerCertificates) > 0 {
		// The certificate the server presented, for tests that rotate it.
		c.result["server_cert_serial"] = fmt.Sprintf("%x", st.PeerCertificates[0].SerialNumber)
	}
	if c.alpn == "" && c.mode != "insecure" {
		if _, err := tc.Write([]byte{c.innerType()}); err != nil {
			tc.Close()
			return nil, err
		}
	}
	return tc, nil
}

func (c *client) run() error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	switch c.mode {
	case "rpc":
		return c.runYamux(conn)
	case "rpc-single", "insecure":
		return c.runCalls(msgpackrpc.NewCodecFromHandle(true, true, conn, msgpackHandle), c.calls, 0)
	case "snapshot":
		return c.runSnapshot(conn)
	case "raft":
		return c.runEcho(conn)
	}
	return fmt.Errorf("unknown mode %q", c.mode)
}

func (c *client) runYamux(conn net.Conn) error {
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = os.Stderr
	sess, err := yamux.Client(conn, cfg)
	if err != nil {
		return err
	}
	defer sess.Close()
	errs := make(chan error, c.streams)
	var wg sync.WaitGroup
	for i := 0; i < c.streams; i++ {
		st, err := sess.Open()
		if err != nil {
			return err
		}
		st.SetDeadline(time.Now().Add(c.timeout))
		share := c.calls / c.streams
		if i < c.calls%c.streams {
			share++
		}
		wg.Add(1)
		go func(st net.Conn, n, i int) {
			defer wg.Done()
			defer st.Close()
			errs <- c.runCalls(msgpackrpc.NewCodecFromHandle(true, true, st, msgpackHandle), n, i)
		}(st, share, i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	c.result["calls"] = c.calls
	c.result["streams"] = c.streams
	return nil
}

// runCalls: Status.Info once (stream 0), then n Echo calls with checked payloads.
func (c *client) runCalls(cc rpc.ClientCodec, n, stream int) error {
	if stream == 0 {
		var info ConnInfo
		if err := msgpackrpc.CallWithCodec(cc, "Status.Info", struct{}{}, &info); err != nil {
			return fmt.Errorf("Status.Info: %w", err)
		}
		c.set("server_tls", info.TLS)
		c.set("server_version", info.Version)
		c.set("server_sni", info.ServerName)
		c.set("server_peer_cn", info.PeerCN)
		c.set("server_inner", info.Inner)
	}
	if err := c.echoCalls(cc, n, stream, 0); err != nil {
		return err
	}
	c.set("calls", n)
	if c.idle > 0 {
		// The same stream (and connection) again after a quiet spell (no RPC traffic; yamux
		// keepalives only in rpc mode).
		time.Sleep(c.idle)
		if err := c.echoCalls(cc, n, stream, 1); err != nil {
			return fmt.Errorf("after %s idle: %w", c.idle, err)
		}
	}
	return nil
}

func (c *client) echoCalls(cc rpc.ClientCodec, n, stream, round int) error {
	for i := 0; i < n; i++ {
		want := pattern(c.size, byte(i+stream*31+round*17))
		var reply EchoReply
		if err := msgpackrpc.CallWithCodec(cc, "Echo.Echo", EchoArgs{Data: want}, &reply); err != nil {
			return fmt.Errorf("Echo.Echo: %w", err)
		}
		if !bytes.Equal(reply.Data, want) {
			return fmt.Errorf("Echo.Echo: reply differs (%d bytes, want %d)", len(reply.Data), c.size)
		}
	}
	return nil
}

// runSnapshot: header + body, half-close (close_notify over TLS, FIN in plaintext), then read
// the reply header and body to EOF, as Consul's snapshot client does (docs/spec/consul-rpc-tls.md §1.6).
func (c *client) runSnapshot(conn net.Conn) error {
	body := pattern(c.size, 7)
	req := SnapshotRequest{Op: "echo", Size: int64(len(body)), Factor: c.factor}
	if err := codec.NewEncoder(conn, msgpackHandle).Encode(&req); err != nil {
		return err
	}
	if _, err := conn.Write(body); err != nil {
		return err
	}
	if err := closeWrite(conn); err != nil {
		return fmt.Errorf("snapshot connection requires half-close support: %w", err)
	}
	var resp SnapshotResponse
	if err := codec.NewDecoder(conn, msgpackHandle).Decode(&resp); err != nil {
		return fmt.Errorf("reading snapshot response header: %w", err)
	}
	if resp.Error != "" {
		return fmt.Errorf("server: %s", resp.Error)
	}
	got, err := readAllLimited(conn, resp.Size)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, bytes.Repeat(body, c.factor)) {
		return fmt.Errorf("snapshot reply differs (%d bytes, want %d)", len(got), len(body)*c.factor)
	}
	c.result["bytes_up"] = len(body)
	c.result["bytes_down"] = len(got)
	return nil
}

// runEcho: the raft stand-in; writes, half-closes, reads the echo to EOF.
func (c *client) runEcho(conn net.Conn) error {
	body := pattern(c.size, 9)
	done := make(chan error, 1)
	go func() {
		_, err := conn.Write(body)
		if err == nil {
			err = closeWrite(conn)
		}
		done <- err
	}()
	got, err := readAllLimited(conn, int64(len(body)))
	if werr := <-done; werr != nil {
		return werr
	}
	if err != nil {
		return err
	}
	if len(got) == 0 && len(body) > 0 {
		return errors.New("the server closed the connection without echoing")
	}
	if !bytes.Equal(got, body) {
		return fmt.Errorf("echo differs (%d bytes, want %d)", len(got), len(body))
	}
	c.result["bytes_up"] = len(body)
	c.result["bytes_down"] = len(got)
	return nil
}
