// tlspeer: Go crypto/tls load and relay tool for the RPC benchmarks (standard library only).
//
//	tlspeer agent -listen ADDR [-lifetime D]
//	tlspeer relay -role a|b -listen ADDR -upstream ADDR -ca F -cert F -key F
//	              [-server-name NAME] [-session-cache N] [-lifetime D]
//	tlspeer storm -addr ADDR -sources IP,IP,... -conns N -ca F -cert F -key F
//	              [-server-name NAME] [-session-cache] [-prefix 3] [-inner 0]
//	              [-prime-concurrency 64] [-timeout 120s] [-dial-timeout 5s]
//	              [-io-timeout 15s] [-backoff-max 1s] [-hold 600s]
//
// agent: a plaintext stand-in for a Consul server's RPC port behind a server-side relay. Each
// connection starts with a type byte; everything after it is echoed back until EOF. Prints
// "LISTENING addr=..." once; on SIGTERM/SIGINT prints "AGENT accepted=N" and exits, which closes
// every connection (what clients see when the agent restarts).
//
// relay: one side of a TLS relay pair, as in tests/bench/e2e_rpc.py. Role a: plaintext in, mutual
// TLS out (client certificate sent, the server's chain and -server-name verified; a client session
// cache of N entries when -session-cache N > 0, else no resumption). Role b: mutual TLS in (client
// certificates required and verified; Go's server sends session tickets), plaintext out. Bytes are
// copied both ways with half-close (FIN <-> close_notify + FIN). On SIGTERM/SIGINT prints
// "RELAY accepted=N full=F resumed=R failed=X" and exits.
//
// storm: the reconnect-storm client of issue 18 item 5 (tests/bench/rpc_storm.py). Opens -conns
// connections to -addr, spread round-robin over the -sources addresses (bound as the local
// address), each like a Consul client's RPC connection: the -prefix byte (3: Consul's RPCTLS;
// -1: none), a mutual-TLS handshake, then inside TLS the -inner type byte and a 32-byte request
// that must come back (the agent echoes): a connection is "served" when its reply arrived. Each
// source address is one client agent with its own tls.Config (and, with -session-cache, its own
// session cache, as every Consul agent has).
//
//  1. prime: opens every connection, at most -prime-concurrency at a time, and keeps it; prints
//     "PRIMED {json}".
//  2. storm: each connection waits until the server side drops it (EOF or error), then redials
//     at once; a failed attempt is retried after a jittered exponential backoff (50 ms doubling,
//     capped at -backoff-max). When every connection was served again, prints "STORM {json}":
//     wall-clock times of the first drop and of the last connection served, attempts, failures
//     by kind, resumed and full handshakes, handshake latency percentiles.
//  3. holds the new connections until stdin closes (or -hold passes), closes them, prints "DONE".
//
// Every wait is bounded: -timeout bounds each phase, -dial-timeout and -io-timeout each attempt.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func die(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "tlspeer: "+format+"\n", args...)
	os.Exit(1)
}

func loadTLS(caFile, certFile, keyFile string) (*x509.CertPool, tls.Certificate) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		die("reading %s: %v", caFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		die("no certificate in %s", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		die("loading %s / %s: %v", certFile, keyFile, err)
	}
	return pool, cert
}

func onSignal(fn func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-ch
		fn()
		os.Exit(0)
	}()
}

func lifetime(d time.Duration, fn func()) {
	go func() {
		time.Sleep(d)
		fn()
		os.Exit(0)
	}()
}

// ---- agent ----------------------------------------------------------------------------------

func runAgent(args []string) {
	fs := flag.NewFlagSet("agent", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:8300", "plaintext listen address")
	life := fs.Duration("lifetime", time.Hour, "exit after this long")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		die("listen %s: %v", *listen, err)
	}
	var accepted int64
	report := func() { fmt.Printf("AGENT accepted=%d\n", atomic.LoadInt64(&accepted)) }
	onSignal(report)
	lifetime(*life, report)
	fmt.Printf("LISTENING addr=%s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		atomic.AddInt64(&accepted, 1)
		go func(c net.Conn) {
			defer c.Close()
			c.SetDeadline(time.Now().Add(*life))
			var t [1]byte
			if _, err := io.ReadFull(c, t[:]); err != nil {
				return
			}
			io.Copy(c, c)
			c.(*net.TCPConn).CloseWrite()
		}(c)
	}
}

// ---- relay ----------------------------------------------------------------------------------

// pipe copies both ways; each direction ends with a half-close of its writer.
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	half := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		switch d := dst.(type) {
		case *net.TCPConn:
			d.CloseWrite()
		case *tls.Conn:
			d.CloseWrite()
		}
	}
	wg.Add(2)
	go half(a, b)
	go half(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

func runRelay(args []string) {
	fs := flag.NewFlagSet("relay", flag.ExitOnError)
	role := fs.String("role", "", "a (plaintext in, TLS out) or b (TLS in, plaintext out)")
	listen := fs.String("listen", "", "listen address")
	upstream := fs.String("upstream", "", "upstream address")
	caFile := fs.String("ca", "", "CA bundle")
	certFile := fs.String("cert", "", "certificate")
	keyFile := fs.String("key", "", "private key")
	serverName := fs.String("server-name", "server.dc1.consul", "name verified by role a")
	cache := fs.Int("session-cache", 0, "role a: client session cache entries (0: none)")
	life := fs.Duration("lifetime", time.Hour, "exit after this long")
	fs.Parse(args)
	pool, cert := loadTLS(*caFile, *certFile, *keyFile)
	var accepted, full, resumed, failed int64
	report := func() {
		fmt.Printf("RELAY accepted=%d full=%d resumed=%d failed=%d\n", atomic.LoadInt64(&accepted),
			atomic.LoadInt64(&full), atomic.LoadInt64(&resumed), atomic.LoadInt64(&failed))
	}
	onSignal(report)
	lifetime(*life, report)
	count := func(c *tls.Conn) {
		if c.ConnectionState().DidResume {
			atomic.AddInt64(&resumed, 1)
		} else {
			atomic.AddInt64(&full, 1)
		}
	}
	var ln net.Listener
	var err error
	switch *role {
	case "a":
		ln, err = net.Listen("tcp", *listen)
	case "b":
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool,
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
		ln, err = tls.Listen("tcp", *listen, cfg)
	default:
		die("relay: -role must be a or b")
	}
	if err != nil {
		die("listen %s: %v", *listen, err)
	}
	ccfg := &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool,
		ServerName: *serverName, MinVersion: tls.VersionTLS12}
	if *cache > 0 {
		ccfg.ClientSessionCache = tls.NewLRUClientSessionCache(*cache)
	}
	fmt.Printf("LISTENING addr=%s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		atomic.AddInt64(&accepted, 1)
		go func(c net.Conn) {
			if *role == "a" {
				up, err := net.DialTimeout("tcp", *upstream, 10*time.Second)
				if err != nil {
					atomic.AddInt64(&failed, 1)
					c.Close()
					return
				}
				t := tls.Client(up, ccfg)
				t.SetDeadline(time.Now().Add(10 * time.Second))
				if err := t.Handshake(); err != nil {
					atomic.AddInt64(&failed, 1)
					c.Close()
					up.Close()
					return
				}
				t.SetDeadline(time.Time{})
				count(t)
				pipe(c, t)
				return
			}
			t := c.(*tls.Conn)
			t.SetDeadline(time.Now().Add(10 * time.Second))
			if err := t.Handshake(); err != nil {
				atomic.AddInt64(&failed, 1)
				c.Close()
				return
			}
			t.SetDeadline(time.Time{})
			count(t)
			up, err := net.DialTimeout("tcp", *upstream, 10*time.Second)
			if err != nil {
				atomic.AddInt64(&failed, 1)
				c.Close()
				return
			}
			pipe(t, up)
		}(c)
	}
}

// ---- storm ----------------------------------------------------------------------------------

type stormOpts struct {
	addr        string
	prefix      int
	inner       byte
	dialTimeout time.Duration
	ioTimeout   time.Duration
}

type attempt struct {
	conn      net.Conn
	resumed   bool
	handshake time.Duration // connect + TLS handshake
	fail      string        // "" when served
	local     string        // local address, when the connect succeeded
}

// classify names why an attempt failed.
func classify(stage string, err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return stage + "_refused"
	case errors.Is(err, syscall.ECONNRESET):
		return stage + "_reset"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return stage + "_eof"
	case errors.As(err, &ne) && ne.Timeout():
		return stage + "_timeout"
	}
	return stage + "_error"
}

var request = []byte("storm-request-32-bytes-long.....")

func dialOnce(o *stormOpts, src net.IP, cfg *tls.Config) attempt {
	t0 := time.Now()
	d := net.Dialer{Timeout: o.dialTimeout, LocalAddr: &net.TCPAddr{IP: src}}
	c, err := d.Dial("tcp", o.addr)
	if err != nil {
		return attempt{fail: classify("connect", err)}
	}
	local := c.LocalAddr().String()
	c.SetDeadline(time.Now().Add(o.ioTimeout))
	if o.prefix >= 0 {
		if _, err := c.Write([]byte{byte(o.prefix)}); err != nil {
			c.Close()
			return attempt{fail: classify("prefix", err), local: local}
		}
	}
	t := tls.Client(c, cfg)
	if err := t.Handshake(); err != nil {
		c.Close()
		return attempt{fail: classify("handshake", err), local: local}
	}
	hs := time.Since(t0)
	msg := append([]byte{o.inner}, request...)
	if _, err := t.Write(msg); err != nil {
		t.Close()
		return attempt{fail: classify("request", err), local: local}
	}
	back := make([]byte, len(request))
	if _, err := io.ReadFull(t, back); err != nil {
		t.Close()
		return attempt{fail: classify("reply", err), local: local}
	}
	if string(back) != string(request) {
		t.Close()
		return attempt{fail: "reply_mismatch", local: local}
	}
	t.SetDeadline(time.Time{})
	return attempt{conn: t, resumed: t.ConnectionState().DidResume, handshake: hs, local: local}
}

type phaseStats struct {
	mu         sync.Mutex
	Served     int64            `json:"served"`
	NotServed  int64            `json:"not_served"`
	Attempts   int64            `json:"attempts"`
	Resumed    int64            `json:"resumed"`
	Full       int64            `json:"full"`
	Failures   map[string]int64 `json:"failures"`
	FirstDrop  float64          `json:"first_drop_wall,omitempty"`
	LastDrop   float64          `json:"last_drop_wall,omitempty"`
	Start      float64          `json:"start_wall"`
	FirstServe float64          `json:"first_served_wall"`
	LastServe  float64          `json:"last_served_wall"`
	Seconds    float64          `json:"seconds"`
	HsP50ms    float64          `json:"handshake_p50_ms"`
	HsP99ms    float64          `json:"handshake_p99_ms"`
	HsMaxms    float64          `json:"handshake_max_ms"`
	MaxTries   int64            `json:"max_attempts_one_conn"`
	NoDrop     int64            `json:"never_dropped"`
	Problems   []string         `json:"problems"` // the first failures: when, which, why
	hs         []time.Duration
}

func wall(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func (p *phaseStats) record(a attempt, at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.Attempts++
	if a.fail != "" {
		p.Failures[a.fail]++
		if len(p.Problems) < 20 {
			p.Problems = append(p.Problems, fmt.Sprintf("%.3f %s %s", wall(at), a.local, a.fail))
		}
		return
	}
	p.Served++
	if a.resumed {
		p.Resumed++
	} else {
		p.Full++
	}
	p.hs = append(p.hs, a.handshake)
	w := wall(at)
	if p.FirstServe == 0 || w < p.FirstServe {
		p.FirstServe = w
	}
	if w > p.LastServe {
		p.LastServe = w
	}
}

func (p *phaseStats) drop(at time.Time, local string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := wall(at)
	if p.FirstDrop != 0 && w-p.FirstDrop > 1 && len(p.Problems) < 40 {
		p.Problems = append(p.Problems, fmt.Sprintf("%.3f %s dropped %.1f s after the first", w, local, w-p.FirstDrop))
	}
	if p.FirstDrop == 0 || w < p.FirstDrop {
		p.FirstDrop = w
	}
	if w > p.LastDrop {
		p.LastDrop = w
	}
}

func (p *phaseStats) finish(n int, tries []int64) []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.NotServed = int64(n) - p.Served
	sort.Slice(p.hs, func(i, j int) bool { return p.hs[i] < p.hs[j] })
	pct := func(q float64) float64 {
		if len(p.hs) == 0 {
			return 0
		}
		i := int(q*float64(len(p.hs)-1) + 0.5)
		return float64(p.hs[i].Microseconds()) / 1000
	}
	p.HsP50ms, p.HsP99ms, p.HsMaxms = pct(0.5), pct(0.99), pct(1)
	for _, t := range tries {
		if t > p.MaxTries {
			p.MaxTries = t
		}
	}
	from := p.Start
	if p.FirstDrop != 0 {
		from = p.FirstDrop
	}
	if p.LastServe > 0 {
		p.Seconds = p.LastServe - from
	}
	out, _ := json.Marshal(p)
	return out
}

func runStorm(args []string) {
	fs := flag.NewFlagSet("storm", flag.ExitOnError)
	o := &stormOpts{}
	fs.StringVar(&o.addr, "addr", "", "server-side relay address")
	sources := fs.String("sources", "", "comma-separated local addresses (one client agent each)")
	n := fs.Int("conns", 100, "connections")
	caFile := fs.String("ca", "", "CA bundle")
	certFile := fs.String("cert", "", "client certificate")
	keyFile := fs.String("key", "", "client key")
	serverName := fs.String("server-name", "server.dc1.consul", "verified server name (SNI)")
	cache := fs.Bool("session-cache", false, "a session cache per source address")
	fs.IntVar(&o.prefix, "prefix", 3, "byte sent before the TLS handshake (-1: none)")
	inner := fs.Int("inner", 0, "type byte sent inside TLS")
	primeConc := fs.Int("prime-concurrency", 64, "connections opened at once while priming")
	timeout := fs.Duration("timeout", 120*time.Second, "bound of each phase")
	fs.DurationVar(&o.dialTimeout, "dial-timeout", 5*time.Second, "TCP connect bound")
	fs.DurationVar(&o.ioTimeout, "io-timeout", 15*time.Second, "handshake + request bound")
	backoffMax := fs.Duration("backoff-max", time.Second, "retry backoff cap")
	hold := fs.Duration("hold", 600*time.Second, "longest wait for stdin to close")
	fs.Parse(args)
	o.inner = byte(*inner)
	var srcs []net.IP
	for _, s := range strings.Split(*sources, ",") {
		if ip := net.ParseIP(strings.TrimSpace(s)); ip != nil {
			srcs = append(srcs, ip)
		}
	}
	if len(srcs) == 0 || o.addr == "" {
		die("storm: -addr and -sources are required")
	}
	pool, cert := loadTLS(*caFile, *certFile, *keyFile)
	cfgs := make([]*tls.Config, len(srcs))
	for i := range srcs {
		cfgs[i] = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool,
			ServerName: *serverName, MinVersion: tls.VersionTLS12}
		if *cache {
			cfgs[i].ClientSessionCache = tls.NewLRUClientSessionCache(64)
		}
	}
	conns := make([]net.Conn, *n)
	tries := make([]int64, *n)

	// 1. prime
	prime := &phaseStats{Failures: map[string]int64{}, Start: wall(time.Now())}
	deadline := time.Now().Add(*timeout)
	sem := make(chan struct{}, *primeConc)
	var wg sync.WaitGroup
	for i := 0; i < *n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			for time.Now().Before(deadline) {
				a := dialOnce(o, srcs[i%len(srcs)], cfgs[i%len(srcs)])
				prime.record(a, time.Now())
				if a.fail == "" {
					conns[i] = a.conn
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}(i)
	}
	wg.Wait()
	fmt.Printf("PRIMED %s\n", prime.finish(*n, nil))
	if prime.Served != int64(*n) {
		die("storm: only %d of %d connections primed", prime.Served, *n)
	}

	// 2. storm: every connection waits for its drop, then redials until served.
	storm := &phaseStats{Failures: map[string]int64{}, Start: wall(time.Now())}
	deadline = time.Now().Add(*timeout)
	for i := 0; i < *n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := conns[i]
			c.SetReadDeadline(deadline)
			var b [64]byte
			for {
				if _, err := c.Read(b[:]); err != nil {
					break
				}
			}
			c.Close()
			if !time.Now().Before(deadline) {
				storm.mu.Lock()
				storm.NoDrop++
				storm.Problems = append(storm.Problems, fmt.Sprintf("never dropped: %s", c.LocalAddr()))
				storm.mu.Unlock()
				return // never dropped within the bound
			}
			storm.drop(time.Now(), c.LocalAddr().String())
			rng := rand.New(rand.NewSource(int64(i) + time.Now().UnixNano()))
			backoff := 50 * time.Millisecond
			for time.Now().Before(deadline) {
				tries[i]++
				a := dialOnce(o, srcs[i%len(srcs)], cfgs[i%len(srcs)])
				storm.record(a, time.Now())
				if a.fail == "" {
					conns[i] = a.conn
					return
				}
				sleep := time.Duration(float64(backoff) * (0.5 + rng.Float64()))
				time.Sleep(sleep)
				if backoff *= 2; backoff > *backoffMax {
					backoff = *backoffMax
				}
			}
			conns[i] = nil
		}(i)
	}
	wg.Wait()
	fmt.Printf("STORM %s\n", storm.finish(*n, tries))

	// 3. hold until stdin closes (bounded), then close.
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(*hold):
	}
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	fmt.Println("DONE")
}

func main() {
	if len(os.Args) < 2 {
		die("usage: tlspeer agent|relay|storm [flags]")
	}
	switch os.Args[1] {
	case "agent":
		runAgent(os.Args[2:])
	case "relay":
		runRelay(os.Args[2:])
	case "storm":
		runStorm(os.Args[2:])
	default:
		die("unknown command %q", os.Args[1])
	}
}
