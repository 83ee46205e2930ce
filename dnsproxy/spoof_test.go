package dnsproxy

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// rawUpstream is a bare UDP socket on 127.0.0.1:0 that hands each query to
// answer, which writes whatever datagrams it likes back (spoofs included).
type rawUpstream struct {
	addr    netip.AddrPort
	queries chan rawQuery
}

type rawQuery struct {
	from netip.AddrPort
	msg  *dns.Msg
}

func startRawUpstream(t *testing.T, answer func(pc net.PacketConn, from net.Addr, q *dns.Msg)) *rawUpstream {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{addr: netip.MustParseAddrPort(pc.LocalAddr().String()), queries: make(chan rawQuery, 64)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			m := new(dns.Msg)
			if m.Unpack(buf[:n]) != nil {
				continue
			}
			u.queries <- rawQuery{netip.MustParseAddrPort(from.String()), m}
			answer(pc, from, m)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return u
}

// replyA builds an answer to q for name (as spelled) with address a.
func replyA(q *dns.Msg, id uint16, name string, a net.IP) []byte {
	m := new(dns.Msg)
	m.SetReply(q)
	m.Id = id
	m.Question[0].Name = name
	m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: a}}
	b, _ := m.Pack()
	return b
}

// flipCase returns name with the case of its first letter changed.
func flipCase(name string) string {
	b := []byte(name)
	for i, c := range b {
		if 'a' <= c|0x20 && c|0x20 <= 'z' {
			b[i] = c ^ 0x20
			break
		}
	}
	return string(b)
}

const longName = "www.abcdefghijklmnopqrstuvwxyz.example.test."

// TestForwardFreshPortAndRandomCase: every forwarded query leaves from a new
// source port and carries the question in a random case; the client gets
// its own spelling back.
func TestForwardFreshPortAndRandomCase(t *testing.T) {
	up := startRawUpstream(t, func(pc net.PacketConn, from net.Addr, q *dns.Msg) {
		pc.WriteTo(replyA(q, q.Id, q.Question[0].Name, net.IPv4(192, 0, 2, 99)), from)
	})
	p := newTestProxy(t, Config{Upstreams: []netip.AddrPort{up.addr}, Logger: quiet})
	addr := runProxy(t, p)
	const n = 8
	for i := 0; i < n; i++ {
		r := query(t, "udp", addr, longName, dns.TypeA)
		if got := answerAddrs(r); !slices.Equal(got, []string{"192.0.2.99"}) {
			t.Fatalf("query %d: answer %v", i, got)
		}
		if r.Question[0].Name != longName || r.Answer[0].Header().Name != longName {
			t.Fatalf("query %d: client got %s / %s, want its own spelling %s", i, r.Question[0].Name, r.Answer[0].Header().Name, longName)
		}
	}
	ports := map[uint16]bool{}
	names := map[string]bool{}
	for i := 0; i < n; i++ {
		q := <-up.queries
		ports[q.from.Port()] = true
		name := q.msg.Question[0].Name
		if !strings.EqualFold(name, longName) {
			t.Fatalf("upstream saw %s, want %s in some case", name, longName)
		}
		names[name] = true
	}
	// Each query gets a socket of its own on a port the kernel picks at
	// random, so two of 8 share one by chance about once in 1,000 runs
	// (28,232 ephemeral ports; ci31 saw it); a proxy that reused a socket
	// would show far fewer ports.
	if len(ports) < n-1 {
		t.Errorf("%d queries came from %d source ports, want a fresh port each", n, len(ports))
	}
	if len(names) < n-1 || names[longName] && len(names) == 1 {
		t.Errorf("question case not randomized: %d spellings in %d queries: %v", len(names), n, names)
	}
}

// TestForwardIgnoresSpoofedReplies: replies with a wrong ID or the question
// in another case are dropped and the proxy waits for the real answer; with
// only spoofs it answers SERVFAIL at the timeout.
func TestForwardIgnoresSpoofedReplies(t *testing.T) {
	var real atomic.Bool
	real.Store(true)
	up := startRawUpstream(t, func(pc net.PacketConn, from net.Addr, q *dns.Msg) {
		name := q.Question[0].Name
		evil := net.IPv4(203, 0, 113, 66)
		pc.WriteTo(replyA(q, q.Id+1, name, evil), from)                // wrong ID
		pc.WriteTo(replyA(q, q.Id, flipCase(name), evil), from)        // wrong case
		pc.WriteTo(replyA(q, q.Id, strings.ToLower(name), evil), from) // lower case (differs unless sent so)
		pc.WriteTo([]byte{0xde, 0xad}, from)                           // garbage
		if real.Load() {
			pc.WriteTo(replyA(q, q.Id, name, net.IPv4(192, 0, 2, 99)), from)
		}
	})
	p := newTestProxy(t, Config{Upstreams: []netip.AddrPort{up.addr}, UpstreamTimeout: 500 * time.Millisecond, Logger: quiet})
	addr := runProxy(t, p)
	r := query(t, "udp", addr, longName, dns.TypeA)
	if got := answerAddrs(r); !slices.Equal(got, []string{"192.0.2.99"}) {
		t.Fatalf("answer %v, want only the real 192.0.2.99", got)
	}
	if p.fwd.mismatched.Load() < 3 {
		t.Errorf("%d replies dropped, want the spoofs (at least 3)", p.fwd.mismatched.Load())
	}
	<-up.queries

	real.Store(false)
	start := time.Now()
	r = query(t, "udp", addr, longName, dns.TypeA)
	if r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 {
		t.Fatalf("only spoofed replies: rcode %s answers %v, want SERVFAIL", dns.RcodeToString[r.Rcode], answerAddrs(r))
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("SERVFAIL after %s: the proxy stopped waiting before the timeout", d)
	}
}

func TestRandomizeCase(t *testing.T) {
	in := `a\066c.\\.xyz.`
	for i := 0; i < 50; i++ {
		out := randomizeCase(in)
		if !strings.EqualFold(out, in) || !strings.Contains(out, `\066`) {
			t.Fatalf("randomizeCase(%q) = %q", in, out)
		}
	}
	if randomizeCase("1.2.3.") != "1.2.3." {
		t.Fatal("digits changed")
	}
}

// TestTruncatedRetryKeepsClientCase: after the TCP retry (its own random
// case) the client still gets its own spelling of the name.
func TestTruncatedRetryKeepsClientCase(t *testing.T) {
	up := startUpstream(t, bigUpstream)
	p := newTestProxy(t, Config{Upstreams: []netip.AddrPort{up.addr}, Logger: quiet})
	addr := runProxy(t, p)
	r := query(t, "tcp", addr, "Big.Example.TEST", dns.TypeA)
	if len(r.Answer) != 60 || r.Question[0].Name != "Big.Example.TEST." || r.Answer[0].Header().Name != "Big.Example.TEST." {
		t.Fatalf("%d answers, question %s, owner %s", len(r.Answer), r.Question[0].Name, r.Answer[0].Header().Name)
	}
	var spellings []string
	for _, q := range up.queries() {
		spellings = append(spellings, q.msg.Question[0].Name)
	}
	if len(spellings) < 2 {
		t.Fatalf("upstream saw %v, want a UDP query and the TCP retry", spellings)
	}
}
