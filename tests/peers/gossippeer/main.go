// Command gossippeer is sidecrypt's real-peer stand-in for a Consul/Serf agent: one Serf node
// (Debian's serf 0.9.4 on memberlist 0.2.2, the code inside Debian's `serf` binary) whose keyring
// and memberlist GossipVerifyIncoming / GossipVerifyOutgoing come from flags, so a test can put
// it at any gossip-encryption rollout stage. `serf agent` cannot: it has no verify switches.
//
// It reports on stdout, one fact per line, for tests to parse:
//
//	READY <node> <ip>:<port> keys=<n> verify_incoming=<bool> verify_outgoing=<bool>
//	JOINED <contacted>                  | JOIN-FAILED <contacted> "<error>"
//	MEMBER <name> <ip>:<port> <status>  (every -interval, one line per known member)
//	EVENT <member-join|member-leave|...> <name>...
//	USER-EVENT <name> <payload>         (a Serf user event arrived)
//	QUERY <name> <payload>              (a Serf query arrived; answered with "<node>:<payload>")
//	SENT-EVENT <name> | EVENT-FAILED "<error>"
//	QUERY-ACK <from> | QUERY-RESPONSE <from> <payload> | QUERY-DONE acks=<n> responses=<n>
//	LEAVING | STOPPED
//	SENT-PACKETS <n>                    (-send-packets mode)
//
// memberlist's and Serf's own log lines go to stderr (e.g. "Marking X as failed").
// SIGTERM or SIGINT (or the end of -duration) makes the node leave gracefully, as an operator's
// restart of a Consul agent with leave_on_terminate would.
//
// Build: tests/peers/build-gossippeer.sh OUTDIR (offline, GOPATH mode).
package main

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// listFlag collects a repeatable string flag in the order given.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, " ") }

func (l *listFlag) Set(s string) error {
	*l = append(*l, s)
	return nil
}

type options struct {
	node, bind          string
	port                int
	keys, joins         listFlag
	verifyIn, verifyOut bool
	duration, interval  time.Duration
	event, eventPayload string
	query, queryPayload string
	queryTimeout        time.Duration
	actionDelay         time.Duration
	disableCompression  bool
	leaveOnStop         bool
	retransmitMult      int
	sendPackets         string
}

func parseFlags() *options {
	o := &options{}
	flag.StringVar(&o.node, "node", "", "node name, unique in the cluster (required)")
	flag.StringVar(&o.bind, "bind", "", "IP address to bind and advertise (required)")
	flag.IntVar(&o.port, "port", 7946, "gossip port, UDP and TCP")
	flag.Var(&o.keys, "key", "base64 gossip key (16, 24 or 32 bytes); repeat for a keyring, the first is primary; none = no encryption")
	flag.BoolVar(&o.verifyIn, "verify-incoming", true, "memberlist GossipVerifyIncoming (Consul encrypt_verify_incoming)")
	flag.BoolVar(&o.verifyOut, "verify-outgoing", true, "memberlist GossipVerifyOutgoing (Consul encrypt_verify_outgoing)")
	flag.Var(&o.joins, "join", "ip:port of a member to join at start; repeatable")
	flag.DurationVar(&o.duration, "duration", 0, "leave and exit after this long (0 = run until SIGTERM/SIGINT)")
	flag.DurationVar(&o.interval, "interval", time.Second, "how often to print the MEMBER lines")
	flag.StringVar(&o.event, "event", "", "after joining, send a Serf user event with this name")
	flag.StringVar(&o.eventPayload, "event-payload", "", "payload of -event")
	flag.StringVar(&o.query, "query", "", "after joining, send a Serf query with this name and report acks and responses")
	flag.StringVar(&o.queryPayload, "query-payload", "", "payload of -query")
	flag.DurationVar(&o.queryTimeout, "query-timeout", 5*time.Second, "how long -query collects answers")
	flag.DurationVar(&o.actionDelay, "action-delay", 2*time.Second, "wait this long after joining before -event / -query")
	flag.BoolVar(&o.disableCompression, "disable-compression", false, "turn memberlist compression off")
	flag.BoolVar(&o.leaveOnStop, "leave", true, "leave gracefully before exiting")
	flag.IntVar(&o.retransmitMult, "retransmit-mult", 0, "memberlist RetransmitMult, also used by Serf's broadcast queues (0 = memberlist's default, 4)")
	flag.StringVar(&o.sendPackets, "send-packets", "", "instead of running a node: send each line of this file (hex payload, optionally prefixed by \"relabel-v0 \") as one UDP datagram to every -join address, sealed with the primary -key if one is given, then exit")
	flag.Parse()
	if o.sendPackets != "" && o.node == "" {
		o.node = "sender"
	}
	if o.node == "" || o.bind == "" || net.ParseIP(o.bind) == nil {
		fmt.Fprintln(os.Stderr, "gossippeer: -node and -bind IP are required")
		flag.Usage()
		os.Exit(2)
	}
	return o
}

// keyring turns the -key flags into a memberlist keyring (nil = encryption off).
func keyring(keys []string) (*memberlist.Keyring, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	raw := make([][]byte, 0, len(keys))
	for i, k := range keys {
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			return nil, fmt.Errorf("-key #%d is not base64: %v", i+1, err)
		}
		raw = append(raw, b)
	}
	return memberlist.NewKeyring(raw, raw[0])
}

func hostPort(ip net.IP, port uint16) string {
	return net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))
}

func printMembers(s *serf.Serf) {
	for _, m := range s.Members() {
		fmt.Printf("MEMBER %s %s %s\n", m.Name, hostPort(m.Addr, m.Port), m.Status)
	}
}

// handleEvents prints what arrives and answers queries, until the channel closes.
func handleEvents(node string, events <-chan serf.Event) {
	for e := range events {
		switch ev := e.(type) {
		case serf.MemberEvent:
			names := make([]string, 0, len(ev.Members))
			for _, m := range ev.Members {
				names = append(names, m.Name)
			}
			fmt.Printf("EVENT %s %s\n", ev.Type, strings.Join(names, " "))
		case serf.UserEvent:
			fmt.Printf("USER-EVENT %s %s\n", ev.Name, ev.Payload)
		case *serf.Query:
			fmt.Printf("QUERY %s %s\n", ev.Name, ev.Payload)
			if err := ev.Respond([]byte(node + ":" + string(ev.Payload))); err != nil {
				fmt.Printf("QUERY-RESPOND-FAILED %q\n", err.Error())
			}
		}
	}
}

func runQuery(s *serf.Serf, o *options) {
	params := s.DefaultQueryParams()
	params.RequestAck = true
	params.Timeout = o.queryTimeout
	resp, err := s.Query(o.query, []byte(o.queryPayload), params)
	if err != nil {
		fmt.Printf("QUERY-FAILED %q\n", err.Error())
		return
	}
	acks, answers := 0, 0
	ackCh, respCh := resp.AckCh(), resp.ResponseCh()
	for ackCh != nil || respCh != nil {
		select {
		case from, ok := <-ackCh:
			if !ok {
				ackCh = nil
				continue
			}
			acks++
			fmt.Printf("QUERY-ACK %s\n", from)
		case r, ok := <-respCh:
			if !ok {
				respCh = nil
				continue
			}
			answers++
			fmt.Printf("QUERY-RESPONSE %s %s\n", r.From, r.Payload)
		}
	}
	fmt.Printf("QUERY-DONE acks=%d responses=%d\n", acks, answers)
}

// sealV1 encrypts a packet payload as memberlist 0.2.2 does for encryption version 1
// (docs/spec/gossip-wire.md §3.3): [1][12-byte nonce][AES-GCM ciphertext and 16-byte tag], no additional
// data (no label).
func sealV1(key, plain []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 1+gcm.NonceSize(), 1+gcm.NonceSize()+len(plain)+gcm.Overhead())
	out[0] = 1
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	return gcm.Seal(out, out[1:], plain, nil), nil
}

// sendPacketFile is the -send-packets mode: hand-made datagrams for robustness tests, e.g. the
// plaintext shapes that crash memberlist 0.2.2, sealed with the cluster key the way a (buggy or
// hostile) key holder would send them. "relabel-v0 HEX" seals HEX and then changes the version
// byte to 0, which no key is needed for (docs/spec/gossip-wire.md §9).
func sendPacketFile(o *options) error {
	text, err := os.ReadFile(o.sendPackets)
	if err != nil {
		return err
	}
	var key []byte
	if len(o.keys) > 0 {
		if key, err = base64.StdEncoding.DecodeString(o.keys[0]); err != nil {
			return err
		}
	}
	var targets []*net.UDPAddr
	for _, j := range o.joins {
		a, err := net.ResolveUDPAddr("udp", j)
		if err != nil {
			return err
		}
		targets = append(targets, a)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(o.bind), Port: o.port})
	if err != nil {
		return err
	}
	defer conn.Close()
	sent := 0
	for _, line := range strings.Split(string(text), "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		relabel := fields[0] == "relabel-v0"
		payload, err := hex.DecodeString(fields[len(fields)-1])
		if err != nil {
			return fmt.Errorf("bad hex %q: %v", line, err)
		}
		if key != nil {
			if payload, err = sealV1(key, payload); err != nil {
				return err
			}
			if relabel {
				payload[0] = 0
			}
		}
		for _, t := range targets {
			if _, err := conn.WriteToUDP(payload, t); err != nil {
				return err
			}
			sent++
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Printf("SENT-PACKETS %d\n", sent)
	return nil
}

func main() {
	o := parseFlags()
	if o.sendPackets != "" {
		if err := sendPacketFile(o); err != nil {
			fmt.Fprintf(os.Stderr, "gossippeer: -send-packets: %v\n", err)
			os.Exit(1)
		}
		return
	}
	logger := log.New(os.Stderr, o.node+" ", log.LstdFlags|log.Lmicroseconds)

	ring, err := keyring(o.keys)
	if err != nil {
		logger.Fatalf("keyring: %v", err)
	}
	conf := serf.DefaultConfig()
	conf.NodeName = o.node
	conf.Logger = logger
	events := make(chan serf.Event, 1024)
	conf.EventCh = events
	ml := conf.MemberlistConfig // memberlist.DefaultLANConfig(), as `serf agent` uses
	ml.Logger = logger
	ml.BindAddr, ml.AdvertiseAddr = o.bind, o.bind
	ml.BindPort, ml.AdvertisePort = o.port, o.port
	ml.Keyring = ring
	ml.GossipVerifyIncoming = o.verifyIn
	ml.GossipVerifyOutgoing = o.verifyOut
	ml.EnableCompression = !o.disableCompression
	if o.retransmitMult > 0 {
		// Serf's graceful leave sends its leave intent only RetransmitMult*ceil(log10(n+1))
		// times before memberlist's own "dead" message; a node that gets the latter first
		// records a failure, not a leave. More transmissions make the intent win.
		ml.RetransmitMult = o.retransmitMult
	}

	s, err := serf.Create(conf)
	if err != nil {
		logger.Fatalf("serf.Create: %v", err)
	}
	go handleEvents(o.node, events)
	fmt.Printf("READY %s %s keys=%d verify_incoming=%t verify_outgoing=%t\n", o.node,
		net.JoinHostPort(o.bind, strconv.Itoa(o.port)), len(o.keys), o.verifyIn, o.verifyOut)

	stop := make(chan os.Signal, 2)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	if len(o.joins) > 0 {
		n, err := s.Join(o.joins, true)
		if err != nil {
			fmt.Printf("JOIN-FAILED %d %q\n", n, err.Error())
		} else {
			fmt.Printf("JOINED %d\n", n)
		}
	}
	if o.event != "" || o.query != "" {
		go func() {
			time.Sleep(o.actionDelay)
			if o.event != "" {
				if err := s.UserEvent(o.event, []byte(o.eventPayload), false); err != nil {
					fmt.Printf("EVENT-FAILED %q\n", err.Error())
				} else {
					fmt.Printf("SENT-EVENT %s\n", o.event)
				}
			}
			if o.query != "" {
				runQuery(s, o)
			}
		}()
	}

	var deadline <-chan time.Time
	if o.duration > 0 {
		deadline = time.After(o.duration)
	}
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	printMembers(s)
loop:
	for {
		select {
		case <-tick.C:
			printMembers(s)
		case <-deadline:
			break loop
		case <-stop:
			break loop
		}
	}
	if o.leaveOnStop {
		fmt.Println("LEAVING")
		if err := s.Leave(); err != nil {
			logger.Printf("[WARN] gossippeer: leave: %v", err)
		}
	}
	if err := s.Shutdown(); err != nil {
		logger.Printf("[WARN] gossippeer: shutdown: %v", err)
	}
	fmt.Println("STOPPED")
}
