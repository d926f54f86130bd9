// dskitframes writes tests/vectors/dskit/*.json: the bytes Grafana dskit's TCP-only memberlist
// transport puts on the wire, made by dskit's own code (third_party/.../tcp_transport.go, copied
// unchanged from grafana/dskit) driving Debian's memberlist 0.2.2. See README.md next to it.
//
// Three parts:
//   - frames: the real WriteTo of one transport sends known payloads to a recorder, which then
//     hands the bytes to another real transport; what that transport's handleConnection delivered
//     (PacketCh) is recorded with them.
//   - negatives: hand-made byte strings fed to a real transport's handleConnection; whether a
//     packet came out, and which.
//   - live: three memberlist nodes over dskit's transport, each behind a recorder (the recorder's
//     port is the node's advertised port, so every connection passes one); every connection's
//     dialler and responder bytes.
package main

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"time"

	gokitlog "github.com/go-kit/log"
	dskitml "github.com/grafana/dskit/kv/memberlist"
	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

const dskitCommit = "06829887f955c8b70bcac1c948a4b7ea3cd811f3"

// conn is one recorded TCP connection.
type conn struct {
	Dialler   []byte
	Responder []byte
	At        time.Time
}

// recorder accepts on its own port, dials target (if any) and copies both ways, recording the
// bytes. A FIN is passed on as a half-close, so dskit's read-to-EOF packets work through it.
type recorder struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []conn
	wg     sync.WaitGroup
}

func newRecorder(target string) *recorder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	r := &recorder{ln: ln, target: target}
	go r.loop()
	return r
}

func (r *recorder) addr() string { return r.ln.Addr().String() }
func (r *recorder) port() int    { return r.ln.Addr().(*net.TCPAddr).Port }

func (r *recorder) loop() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.wg.Add(1)
		go r.serve(c.(*net.TCPConn))
	}
}

func (r *recorder) serve(c *net.TCPConn) {
	defer r.wg.Done()
	defer c.Close()
	at := time.Now()
	_ = c.SetDeadline(at.Add(10 * time.Second))
	var up *net.TCPConn
	if r.target != "" {
		u, err := net.DialTimeout("tcp", r.target, 2*time.Second)
		if err != nil {
			return
		}
		up = u.(*net.TCPConn)
		defer up.Close()
		_ = up.SetDeadline(at.Add(10 * time.Second))
	}
	var fromDialler, fromResponder []byte
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		fromDialler = copyRecord(up, c)
		if up != nil {
			_ = up.CloseWrite()
		}
	}()
	if up != nil {
		fromResponder = copyRecord(c, up)
		_ = c.CloseWrite()
	}
	wg.Wait()
	r.mu.Lock()
	r.conns = append(r.conns, conn{Dialler: fromDialler, Responder: fromResponder, At: at})
	r.mu.Unlock()
}

// copyRecord copies src to dst (nil: only read) until EOF or error and returns what it read.
func copyRecord(dst io.Writer, src io.Reader) []byte {
	var all []byte
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			all = append(all, buf[:n]...)
			if dst != nil {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return all
				}
			}
		}
		if err != nil {
			return all
		}
	}
}

func (r *recorder) close() []conn {
	_ = r.ln.Close()
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]conn(nil), r.conns...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].At.Before(out[j].At) })
	return out
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "dskitframes:", err)
		os.Exit(1)
	}
}

func newTransport(advertiseIP string, advertisePort int) *dskitml.TCPTransport {
	cfg := dskitml.TCPTransportConfig{
		BindAddrs: []string{"127.0.0.1"},
		BindPort:  0,
		// dskit's flag defaults (RegisterFlagsWithPrefix).
		PacketDialTimeout:    2 * time.Second,
		PacketWriteTimeout:   5 * time.Second,
		MaxConcurrentWrites:  3,
		AcquireWriterTimeout: 250 * time.Millisecond,
	}
	t, err := dskitml.NewTCPTransport(cfg, gokitlog.NewNopLogger(), prometheus.NewRegistry())
	check(err)
	if advertiseIP != "" {
		_, _, err = t.FinalAdvertiseAddr(advertiseIP, advertisePort)
		check(err)
	}
	return t
}

type delivered struct {
	From   string  `json:"from"`
	BufLen int     `json:"buf_len"`
	BufMD5 string  `json:"buf_md5"`
	BufHex *string `json:"buf_hex,omitempty"` // left out above 4 KiB (buf_len and buf_md5 say it)
}

// receive waits up to d for one packet from t's PacketCh.
func receive(t *dskitml.TCPTransport, d time.Duration) *delivered {
	select {
	case p := <-t.PacketCh():
		sum := md5.Sum(p.Buf)
		d := &delivered{From: p.From.String(), BufLen: len(p.Buf), BufMD5: hex.EncodeToString(sum[:])}
		if len(p.Buf) <= 4096 {
			h := hex.EncodeToString(p.Buf)
			d.BufHex = &h
		}
		return d
	case <-time.After(d):
		return nil
	}
}

type frameVector struct {
	Name           string     `json:"name"`
	What           string     `json:"what"`
	AdvertisedAddr string     `json:"advertised_addr"`
	PayloadHex     *string    `json:"payload_hex,omitempty"` // left out above 4 KiB: the wire holds it
	WireHex        string     `json:"wire_hex"`
	ResponderHex   string     `json:"responder_hex"`
	Delivered      *delivered `json:"delivered"`
}

type negativeVector struct {
	Name      string     `json:"name"`
	What      string     `json:"what"`
	WireHex   string     `json:"wire_hex"`
	Delivered *delivered `json:"delivered"`
}

type liveConn struct {
	ToNode       string `json:"to_node"`
	Kind         string `json:"kind"`
	DiallerHex   string `json:"dialler_hex"`
	ResponderHex string `json:"responder_hex"`
}

type header struct {
	Generator  string `json:"generator"`
	Dskit      string `json:"dskit"`
	Memberlist string `json:"memberlist"`
	Go         string `json:"go"`
	Notes      string `json:"notes"`
}

func writeJSON(dir, name string, v interface{}) {
	b, err := json.MarshalIndent(v, "", "  ")
	check(err)
	check(os.WriteFile(filepath.Join(dir, name), append(b, '\n'), 0o644))
}

func hdr(notes string) header {
	return header{
		Generator:  "tests/peers/dskitframes (see its README.md)",
		Dskit:      "grafana/dskit " + dskitCommit + " kv/memberlist/tcp_transport.go, unchanged",
		Memberlist: "Debian golang-github-hashicorp-memberlist-dev 0.2.2 (GOPATH build)",
		Go:         runtime.Version(),
		Notes:      notes,
	}
}

// frames: known payloads through the real WriteTo, recorded, then parsed by the real
// handleConnection of a second transport.
func frames() []frameVector {
	recv := newTransport("", 0)
	defer recv.Shutdown()
	rec := newRecorder(fmt.Sprintf("127.0.0.1:%d", recv.GetAutoBindPort()))
	send := newTransport("10.250.0.9", 7946)
	defer send.Shutdown()

	big := make([]byte, 70000)
	for i := range big {
		big[i] = byte(i * 7)
	}
	cases := []struct {
		name, what string
		payload    []byte
	}{
		{"empty-payload", "WriteTo with an empty payload: header, then only the 16-byte MD5 of nothing", []byte{}},
		{"ping-like", "a 9-byte payload (the bytes are arbitrary; dskit does not look inside)", []byte{0x00, 0x81, 0xa5, 'S', 'e', 'q', 'N', 'o', 0x07}},
		{"over-64k", "a 70000-byte payload, byte i = 7*i mod 256: no datagram limit applies over TCP", big},
	}
	var out []frameVector
	for _, c := range cases {
		_, err := send.WriteTo(c.payload, rec.addr())
		check(err)
		d := receive(recv, 3*time.Second)
		v := frameVector{Name: c.name, What: c.what, AdvertisedAddr: "10.250.0.9:7946", Delivered: d}
		if len(c.payload) <= 4096 {
			h := hex.EncodeToString(c.payload)
			v.PayloadHex = &h
		}
		out = append(out, v)
	}
	conns := rec.close()
	if len(conns) != len(out) {
		check(fmt.Errorf("frames: %d connections recorded for %d packets", len(conns), len(out)))
	}
	for i := range out {
		out[i].WireHex = hex.EncodeToString(conns[i].Dialler)
		out[i].ResponderHex = hex.EncodeToString(conns[i].Responder)
	}
	return out
}

func packetBytes(addr string, payload []byte, digest []byte) []byte {
	b := []byte{1, byte(len(addr))}
	b = append(b, addr...)
	b = append(b, payload...)
	return append(b, digest...)
}

// negatives: raw bytes written straight to a real transport, then closed.
func negatives() []negativeVector {
	recv := newTransport("", 0)
	defer recv.Shutdown()
	target := fmt.Sprintf("127.0.0.1:%d", recv.GetAutoBindPort())
	good := md5.Sum([]byte("hello"))
	cases := []struct {
		name, what string
		wire       []byte
	}{
		{"type-zero", "first byte 0 (dskit never uses it)", []byte{0, 1, 'x'}},
		{"type-three", "first byte 3 (unknown)", []byte{3, 0, 0, 0}},
		{"tls-client-hello-byte", "first byte 0x16 (a TLS record: a peer with tls_enabled)", []byte{0x16, 3, 1, 0, 5}},
		{"packet-no-addr-length", "packet type, then the connection ends", []byte{1}},
		{"packet-short-addr", "address length 20, only 3 bytes follow", []byte{1, 20, 'a', 'b', 'c'}},
		{"packet-short-payload", "address, then 15 bytes: less than an MD5 digest", append([]byte{1, 1, 'a'}, make([]byte, 15)...)},
		{"packet-only-digest", "address, then exactly 16 bytes that are the MD5 of nothing", packetBytes("a", nil, func() []byte { d := md5.Sum(nil); return d[:] }())},
		{"packet-bad-digest", "a payload whose trailing digest is wrong (dskit only logs this)", packetBytes("10.0.0.1:7946", []byte("hello"), make([]byte, 16))},
		{"packet-good-digest", "the same payload with its right digest", packetBytes("10.0.0.1:7946", []byte("hello"), good[:])},
		{"packet-empty-addr", "address length 0", packetBytes("", []byte("hello"), good[:])},
	}
	var out []negativeVector
	for _, c := range cases {
		cn, err := net.DialTimeout("tcp", target, 2*time.Second)
		check(err)
		_, err = cn.Write(c.wire)
		check(err)
		_ = cn.(*net.TCPConn).CloseWrite()
		d := receive(recv, 500*time.Millisecond)
		_ = cn.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, _ = io.Copy(io.Discard, cn)
		_ = cn.Close()
		out = append(out, negativeVector{Name: c.name, What: c.what, WireHex: hex.EncodeToString(c.wire), Delivered: d})
	}
	return out
}

type delegate struct{ name string }

func (d *delegate) NodeMeta(limit int) []byte                  { return nil }
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return []byte("dskit-vector-state/" + d.name) }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// live: three memberlist nodes configured the way dskit's buildMemberlistConfig does (TCP
// transport, huge UDPBufferSize, no TCP pings), with faster timers so a few seconds show joins,
// probes and gossip.
func live(seconds int) []liveConn {
	type node struct {
		name string
		tr   *dskitml.TCPTransport
		rec  *recorder
		ml   *memberlist.Memberlist
	}
	var nodes []*node
	for i := 0; i < 3; i++ {
		n := &node{name: fmt.Sprintf("ingester-%d", i)}
		tr := newTransport("", 0)
		n.tr = tr
		n.rec = newRecorder(fmt.Sprintf("127.0.0.1:%d", tr.GetAutoBindPort()))
		cfg := memberlist.DefaultLANConfig()
		cfg.Name = n.name
		cfg.Transport = tr
		cfg.AdvertiseAddr = "127.0.0.1"
		cfg.AdvertisePort = n.rec.port()
		cfg.Delegate = &delegate{name: n.name}
		cfg.UDPBufferSize = 10 * 1024 * 1024
		cfg.DisableTcpPings = true
		cfg.ProbeInterval = 500 * time.Millisecond
		cfg.ProbeTimeout = 250 * time.Millisecond
		cfg.GossipInterval = 100 * time.Millisecond
		cfg.PushPullInterval = 2 * time.Second
		cfg.LogOutput = io.Discard
		ml, err := memberlist.Create(cfg)
		check(err)
		n.ml = ml
		nodes = append(nodes, n)
	}
	for _, n := range nodes[1:] {
		_, err := n.ml.Join([]string{nodes[0].rec.addr()})
		check(err)
	}
	time.Sleep(time.Duration(seconds) * time.Second)
	for _, n := range nodes {
		if got := n.ml.NumMembers(); got != 3 {
			check(fmt.Errorf("%s sees %d members, want 3", n.name, got))
		}
	}
	for _, n := range nodes {
		_ = n.ml.Shutdown()
	}
	var out []liveConn
	for _, n := range nodes {
		for _, c := range n.rec.close() {
			kind := "other"
			if len(c.Dialler) > 0 && c.Dialler[0] == 1 {
				kind = "packet"
			} else if len(c.Dialler) > 0 && c.Dialler[0] == 2 {
				kind = "stream"
			}
			out = append(out, liveConn{ToNode: n.name, Kind: kind,
				DiallerHex: hex.EncodeToString(c.Dialler), ResponderHex: hex.EncodeToString(c.Responder)})
		}
	}
	return out
}

// pick keeps every stream and at most perType packets per memberlist first payload byte.
func pick(all []liveConn, perType int) []liveConn {
	seen := map[string]int{}
	var out []liveConn
	for _, c := range all {
		if c.Kind == "packet" {
			b, _ := hex.DecodeString(c.DiallerHex)
			key := "short"
			if len(b) > 2 && len(b) > 2+int(b[1]) {
				key = fmt.Sprintf("%02x", b[2+int(b[1])])
			}
			if seen[key] >= perType {
				continue
			}
			seen[key]++
		}
		out = append(out, c)
	}
	return out
}

// serve runs one memberlist node on dskit's transport (as dskit configures it, with faster
// timers) until SIGTERM or `seconds`, joining `join` (retried) and printing one line
// "MEMBERS <n> <names...>" whenever the member list changes. For integration tests.
func serve(bind string, port int, name, join string, seconds int) {
	cfg := dskitml.TCPTransportConfig{
		BindAddrs: []string{bind}, BindPort: port,
		PacketDialTimeout: 2 * time.Second, PacketWriteTimeout: 5 * time.Second,
		MaxConcurrentWrites: 3, AcquireWriterTimeout: 250 * time.Millisecond,
	}
	tr, err := dskitml.NewTCPTransport(cfg, gokitlog.NewNopLogger(), prometheus.NewRegistry())
	check(err)
	mc := memberlist.DefaultLANConfig()
	mc.Name = name
	mc.Transport = tr
	mc.AdvertiseAddr = bind
	mc.AdvertisePort = port
	mc.Delegate = &delegate{name: name}
	mc.UDPBufferSize = 10 * 1024 * 1024
	mc.DisableTcpPings = true
	mc.ProbeInterval = 500 * time.Millisecond
	mc.ProbeTimeout = 250 * time.Millisecond
	mc.GossipInterval = 100 * time.Millisecond
	mc.PushPullInterval = 2 * time.Second
	mc.TCPTimeout = 2 * time.Second // dskit's stream_timeout
	mc.LogOutput = os.Stderr
	ml, err := memberlist.Create(mc)
	check(err)
	fmt.Printf("LISTENING %s:%d\n", bind, port)
	deadline := time.Now().Add(time.Duration(seconds) * time.Second)
	last := ""
	joined := join == ""
	for time.Now().Before(deadline) {
		if !joined {
			if _, err := ml.Join([]string{join}); err == nil {
				joined = true
				fmt.Println("JOINED " + join)
			}
		}
		var names []string
		for _, m := range ml.Members() {
			names = append(names, m.Name)
		}
		sort.Strings(names)
		line := fmt.Sprintf("MEMBERS %d %v", len(names), names)
		if line != last {
			fmt.Println(line)
			last = line
		}
		time.Sleep(200 * time.Millisecond)
	}
	_ = ml.Shutdown()
}

func main() {
	outDir := flag.String("out", "", "directory for the JSON files (tests/vectors/dskit)")
	seconds := flag.Int("seconds", 5, "how long the live cluster (or -serve) runs")
	serveMode := flag.Bool("serve", false, "run one node (-bind, -port, -name, -join) instead")
	bind := flag.String("bind", "127.0.0.1", "-serve: address to bind and advertise")
	port := flag.Int("port", 7946, "-serve: port")
	name := flag.String("name", "node", "-serve: node name")
	join := flag.String("join", "", "-serve: address:port to join (retried until it works)")
	flag.Parse()
	if *serveMode {
		serve(*bind, *port, *name, *join, *seconds)
		return
	}
	if *outDir == "" {
		check(fmt.Errorf("-out is required"))
	}
	check(os.MkdirAll(*outDir, 0o755))

	writeJSON(*outDir, "frames.json", map[string]interface{}{
		"header": hdr("Known payloads sent by the real WriteTo (advertised address 10.250.0.9:7946) through a recorder into a second real transport; delivered = what its handleConnection put on PacketCh."),
		"frames": frames(),
	})
	writeJSON(*outDir, "negatives.json", map[string]interface{}{
		"header":    hdr("Hand-made bytes written to a real transport and half-closed; delivered = the packet its handleConnection put on PacketCh within 500 ms, null if none."),
		"negatives": negatives(),
	})
	all := live(*seconds)
	writeJSON(*outDir, "live.json", map[string]interface{}{
		"header":      hdr(fmt.Sprintf("Three memberlist nodes over dskit's transport for %d s, each behind a recorder at its advertised port; every stream and up to 3 packets per first payload byte, of %d connections.", *seconds, len(all))),
		"connections": pick(all, 3),
	})
}
