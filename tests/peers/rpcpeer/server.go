// rpcpeer server: accepts connections and dispatches first bytes as Consul's RPC port does
// (consul agent/consul/rpc.go handleConn; docs/spec/consul-rpc-tls.md §1.2).
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"os"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-msgpack/codec"
	msgpackrpc "github.com/hashicorp/net-rpc-msgpackrpc"
	"github.com/hashicorp/yamux"
)

type server struct {
	tf               tlsFlags
	verifyIncoming   bool
	handshakeTimeout time.Duration
	maxBody          int64
	incoming         *tls.Config // 0x03: client cert only with verify_incoming (docs/spec/consul-rpc-tls.md §2.2)
	insecure         *tls.Config // 0x07: never requests a client cert
	native           *tls.Config // docs/spec/consul-rpc-tls.md §1.4: ALPN, always requires a client cert
	pool             *x509.CertPool
	nextID           int64
	reread           bool
}

// peekedConn hands out bytes a bufio.Reader already pulled from the socket.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *peekedConn) Read(b []byte) (int, error) { return p.r.Read(b) }
func (p *peekedConn) CloseWrite() error          { return closeWrite(p.Conn) }

// Status is the per-connection service: Ping like Consul's Status.Ping, Info for the tests.
type Status struct{ info ConnInfo }

func (s *Status) Ping(args struct{}, reply *struct{}) error { return nil }
func (s *Status) Info(args struct{}, reply *ConnInfo) error { *reply = s.info; return nil }

type Echo struct{}

func (Echo) Echo(args EchoArgs, reply *EchoReply) error { reply.Data = args.Data; return nil }

func serverMain(args []string) int {
	s := &server{}
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	lifetime := fs.Duration("lifetime", 120*time.Second, "exit after this long (every wait is bounded)")
	fs.StringVar(&s.tf.ca, "ca", "", "CA file (client certificate verification, raft identity)")
	fs.StringVar(&s.tf.cert, "cert", "", "server certificate")
	fs.StringVar(&s.tf.key, "key", "", "server key")
	fs.StringVar(&s.tf.minVer, "tls-min", "1.2", "minimum TLS version")
	fs.StringVar(&s.tf.maxVer, "tls-max", "", "maximum TLS version (default: Go's)")
	fs.StringVar(&s.tf.dc, "dc", "dc1", "local datacenter")
	fs.StringVar(&s.tf.domain, "domain", "consul", "domain")
	fs.BoolVar(&s.verifyIncoming, "verify-incoming", false, "Consul's verify_incoming")
	fs.BoolVar(&s.tf.verifyHostname, "verify-server-hostname", false, "Consul's verify_server_hostname (raft identity check)")
	fs.DurationVar(&s.handshakeTimeout, "handshake-timeout", 5*time.Second, "rpc_handshake_timeout")
	fs.Int64Var(&s.maxBody, "max-body", 64<<20, "largest snapshot/raft body accepted")
	fs.BoolVar(&s.reread, "reread", false, "read -ca, -cert and -key again for every handshake (a CA rotation test rewrites them)")
	fs.Parse(args)
	if err := s.configure(); err != nil {
		fmt.Fprintln(os.Stderr, "rpcpeer server:", err)
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rpcpeer server:", err)
		return 2
	}
	time.AfterFunc(*lifetime, func() {
		emit("EXIT", map[string]interface{}{"reason": "lifetime"})
		os.Exit(0)
	})
	emit("LISTENING", map[string]interface{}{"addr": ln.Addr().String()})
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		id := atomic.AddInt64(&s.nextID, 1)
		go s.handle(c, false, ConnInfo{Outer: -2, Inner: -2}, id)
	}
}

func (s *server) configure() error {
	base, pool, err := s.tf.base()
	if err != nil {
		return err
	}
	s.pool = pool
	if s.verifyIncoming && pool == nil {
		return errors.New("VerifyIncoming set but no CA certificates were provided")
	}
	if len(base.Certificates) == 0 {
		return nil // no TLS at all: 0x03 handshakes fail, as Consul's would
	}
	s.incoming = base.Clone()
	s.incoming.ClientCAs = pool
	if s.verifyIncoming {
		s.incoming.ClientAuth = tls.RequireAndVerifyClientCert
	}
	s.insecure = base.Clone()
	s.insecure.ClientAuth = tls.NoClientCert
	if pool != nil { // "mutual-TLS capable": CA and certificate (docs/spec/consul-rpc-tls.md §1.2 step 3)
		s.native = base.Clone()
		s.native.ClientCAs = pool
		s.native.ClientAuth = tls.RequireAndVerifyClientCert
		s.native.NextProtos = alpnProtocols
	}
	if s.reread {
		for _, cfg := range []*tls.Config{s.incoming, s.insecure, s.native} {
			if cfg != nil {
				s.rereadFiles(cfg)
			}
		}
	}
	return nil
}

// rereadFiles makes every handshake under cfg use the certificate, key and CA files as they are
// now (a file replaced by rename is read whole; a cert and key in one file change together).
func (s *server) rereadFiles(cfg *tls.Config) {
	tmpl := cfg.Clone()
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		base, pool, err := s.tf.base()
		if err != nil {
			return nil, err
		}
		out := tmpl.Clone()
		out.Certificates = base.Certificates
		if out.ClientCAs != nil {
			out.ClientCAs = pool
		}
		return out, nil
	}
}

func (s *server) event(id int64, info ConnInfo, result, reason string) {
	emit("EVENT", map[string]interface{}{
		"conn": id, "result": result, "reason": reason, "tls": info.TLS, "outer": info.Outer,
		"inner": info.Inner, "version": info.Version, "sni": info.ServerName,
		"peer_cn": info.PeerCN, "alpn": info.ALPN, "resumed": info.Resumed,
	})
}

func (s *server) refuse(c net.Conn, id int64, info ConnInfo, reason string) {
	s.event(id, info, "refused", reason)
	c.Close()
}

func tlsInfo(info ConnInfo, st tls.ConnectionState) ConnInfo {
	info.TLS = true
	info.Version = versionName(st.Version)
	info.Cipher = tls.CipherSuiteName(st.CipherSuite)
	info.ServerName = st.ServerName
	info.ALPN = st.NegotiatedProtocol
	info.Resumed = st.DidResume
	if len(st.PeerCertificates) > 0 {
		info.PeerCN = st.PeerCertificates[0].Subject.CommonName
	}
	return info
}

func (s *server) handshake(c net.Conn, cfg *tls.Config, id int64, info ConnInfo) (*tls.Conn, ConnInfo, bool) {
	tc := tls.Server(c, cfg)
	if err := tc.Handshake(); err != nil {
		s.event(id, info, "tls_failed", err.Error())
		c.Close()
		return nil, info, false
	}
	return tc, tlsInfo(info, tc.ConnectionState()), true
}

// handle mirrors handleConn: deadline, native peek, type byte, verify_incoming gate, switch.
// Inside TLS the deadline set before the handshake keeps running, so that one deadline covers
// the handshake and the inner byte, as in Consul.
func (s *server) handle(c net.Conn, isTLS bool, info ConnInfo, id int64) {
	if !isTLS {
		c.SetReadDeadline(time.Now().Add(s.handshakeTimeout))
	}
	if !isTLS && s.native != nil {
		br := bufio.NewReader(c)
		b, err := br.Peek(1)
		if err == nil && b[0] > rpcMaxTypeValue {
			info.Outer = -1
			s.handleNative(&peekedConn{c, br}, id, info)
			return
		}
		c = &peekedConn{c, br}
	}
	var t [1]byte
	if _, err := io.ReadFull(c, t[:]); err != nil {
		s.refuse(c, id, info, "failed to read byte: "+err.Error())
		return
	}
	if isTLS {
		info.Inner = int(t[0])
	} else {
		info.Outer = int(t[0])
	}
	if s.verifyIncoming && !isTLS && t[0] != rpcTLS && t[0] != rpcTLSInsecure {
		s.refuse(c, id, info, "Non-TLS connection attempted with VerifyIncoming set")
		return
	}
	c.SetReadDeadline(time.Time{})
	s.dispatch(c, t[0], isTLS, info, id)
}

func (s *server) dispatch(c net.Conn, t byte, isTLS bool, info ConnInfo, id int64) {
	switch t {
	case rpcConsul:
		s.event(id, info, "served", "")
		s.serveRPC(c, info)
	case rpcTLS, rpcTLSInsecure:
		if isTLS {
			s.refuse(c, id, info, "TLS connection attempting to establish inner TLS connection")
			return
		}
		if s.incoming == nil {
			s.refuse(c, id, info, "no certificate configured for TLS")
			return
		}
		if t == rpcTLSInsecure { // no client certificate, no inner byte (docs/spec/consul-rpc-tls.md §1.5)
			tc, info, ok := s.handshake(c, s.insecure, id, info)
			if ok {
				info.Inner = -1
				s.event(id, info, "served", "")
				s.serveRPC(tc, info)
			}
			return
		}
		c.SetReadDeadline(time.Now().Add(s.handshakeTimeout)) // handshake + inner byte
		if tc, info, ok := s.handshake(c, s.incoming, id, info); ok {
			s.handle(tc, true, info, id)
		}
	case rpcMultiplexV2:
		s.event(id, info, "served", "")
		s.serveYamux(c, info)
	case rpcSnapshot:
		s.event(id, info, "served", "")
		s.serveSnapshot(c)
	case rpcRaft, rpcRaftForwarding:
		if reason := s.authorizeServer(c, isTLS); reason != "" {
			s.refuse(c, id, info, reason)
			return
		}
		s.event(id, info, "served", "")
		s.serveEcho(c)
	default:
		s.refuse(c, id, info, fmt.Sprintf("unrecognized RPC byte: %d", t))
	}
}

// authorizeServer is AuthorizeServerConn (docs/spec/consul-rpc-tls.md §2.5): with verify_incoming and
// verify_server_hostname, a TLS raft peer must hold server.<dc>.<domain> with clientAuth.
func (s *server) authorizeServer(c net.Conn, isTLS bool) string {
	if !isTLS || !s.verifyIncoming || !s.tf.verifyHostname {
		return ""
	}
	tc, ok := c.(*tls.Conn)
	if !ok {
		return "raft over TLS without a TLS connection"
	}
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return "raft: no peer certificate"
	}
	opts := x509.VerifyOptions{DNSName: s.tf.serverName(), Roots: s.pool,
		Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, ic := range certs[1:] {
		opts.Intermediates.AddCert(ic)
	}
	if _, err := certs[0].Verify(opts); err != nil {
		return "rejecting RPC conn: server identity check failed: " + err.Error()
	}
	return ""
}

func (s *server) handleNative(c net.Conn, id int64, info ConnInfo) {
	tc, info, ok := s.handshake(c, s.native, id, info)
	if !ok {
		return
	}
	t, known := alpnTypes[info.ALPN]
	if !known || t < 0 {
		s.refuse(tc, id, info, "discarding RPC for unknown negotiated protocol")
		return
	}
	c.SetReadDeadline(time.Time{})
	info.Inner = t
	s.dispatch(tc, byte(t), true, info, id)
}

func (s *server) serveRPC(c io.ReadWriteCloser, info ConnInfo) {
	srv := rpc.NewServer()
	srv.Register(&Status{info: info})
	srv.Register(Echo{})
	srv.ServeCodec(msgpackrpc.NewCodecFromHandle(true, true, c, msgpackHandle))
}

func (s *server) serveYamux(c net.Conn, info ConnInfo) {
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = os.Stderr
	sess, err := yamux.Server(c, cfg)
	if err != nil {
		c.Close()
		return
	}
	for {
		st, err := sess.Accept()
		if err != nil {
			return
		}
		go s.serveRPC(st, info)
	}
}

// serveSnapshot: request header, body to EOF (the client half-closes, docs/spec/consul-rpc-tls.md §1.6), then the reply
// header and Factor copies of the body, then a half-close of our own and close.
func (s *server) serveSnapshot(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	dec := codec.NewDecoder(c, msgpackHandle) // does not read ahead (docs/spec/rpc-peers.md §5.1)
	var req SnapshotRequest
	resp := SnapshotResponse{}
	body := []byte(nil)
	err := dec.Decode(&req)
	if err == nil {
		body, err = readAllLimited(c, s.maxBody)
	}
	switch {
	case err != nil:
		resp.Error = err.Error()
	case int64(len(body)) != req.Size:
		resp.Error = fmt.Sprintf("size mismatch: header %d, body %d", req.Size, len(body))
	case req.Factor < 1 || req.Factor > 16:
		resp.Error = "factor must be 1..16"
	}
	var reply []byte
	if resp.Error == "" {
		reply = bytes.Repeat(body, req.Factor)
		resp.Size = int64(len(reply))
	}
	if codec.NewEncoder(c, msgpackHandle).Encode(&resp) == nil && len(reply) > 0 {
		c.Write(reply)
	}
	closeWrite(c)
}

// serveEcho: the raft stand-in; echoes until EOF, then half-closes.
func (s *server) serveEcho(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	io.Copy(c, io.LimitReader(c, s.maxBody))
	closeWrite(c)
}
