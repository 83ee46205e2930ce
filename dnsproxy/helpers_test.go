package dnsproxy

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/testenv"
)

// upstream is a real miekg/dns server on 127.0.0.1 (UDP and TCP on the same
// port) standing in for the resolver the system used before.
type upstream struct {
	addr netip.AddrPort
	mu   sync.Mutex
	seen []seenQuery
}

type seenQuery struct {
	net string
	msg *dns.Msg
}

func (u *upstream) queries() []seenQuery {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]seenQuery(nil), u.seen...)
}

// startUpstream serves h on 127.0.0.1:P for UDP and TCP until the test ends.
func startUpstream(t testing.TB, h func(netw string, w dns.ResponseWriter, r *dns.Msg)) *upstream {
	t.Helper()
	u := &upstream{}
	pc, ln := listenBoth(t)
	u.addr = netip.MustParseAddrPort(pc.LocalAddr().String())
	record := func(netw string) dns.HandlerFunc {
		return func(w dns.ResponseWriter, r *dns.Msg) {
			u.mu.Lock()
			u.seen = append(u.seen, seenQuery{netw, r.Copy()})
			u.mu.Unlock()
			h(netw, w, r)
		}
	}
	g := StartServers(
		&dns.Server{PacketConn: pc, Handler: record("udp"), UDPSize: 65535},
		&dns.Server{Listener: ln, Handler: record("tcp")},
	)
	t.Cleanup(func() { g.Stop(5 * time.Second) })
	return u
}

// staticUpstream answers every A query with 192.0.2.99 (and echoes the
// client's EDNS), like a real resolver would for public names.
func staticUpstream(netw string, w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	q := r.Question[0]
	if q.Qtype == dns.TypeA {
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.IPv4(192, 0, 2, 99)})
	}
	if o := r.IsEdns0(); o != nil {
		m.SetEdns0(4096, o.Do())
	}
	w.WriteMsg(m)
}

// serveForBench serves p on pc until the benchmark ends.
func serveForBench(b *testing.B, p *Proxy, pc net.PacketConn) string {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, pc, nil) }()
	b.Cleanup(func() { cancel(); <-done })
	return pc.LocalAddr().String()
}

// runProxy serves p on 127.0.0.1:0 (UDP and TCP) until the test ends.
func runProxy(t testing.TB, p *Proxy) string {
	t.Helper()
	pc, ln := listenBoth(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, pc, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after cancel")
		}
	})
	return pc.LocalAddr().String()
}

func newTestProxy(t testing.TB, cfg Config, rs ...controlapi.PolicyResource) *Proxy {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.SetResources(rs)
	return p
}

func query(t testing.TB, netw, addr, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: netw, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s query %s %s: %v", netw, name, dns.TypeToString[qtype], err)
	}
	return r
}

func res(id, name, addr, network string) controlapi.PolicyResource {
	return controlapi.PolicyResource{ID: id, Name: name, Address: addr, Network: network}
}

// checkGoroutines fails when goroutines started during the test outlive it.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() { testenv.WaitGoroutines(t, before, 5*time.Second) })
}

func answerAddrs(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, v.A.String())
		case *dns.AAAA:
			out = append(out, v.AAAA.String())
		case *dns.CNAME:
			out = append(out, "CNAME "+strings.ToLower(v.Target))
		case *dns.PTR:
			out = append(out, "PTR "+v.Ptr)
		}
	}
	return out
}

// quiet discards the logs of the code under test.
var quiet = slog.New(slog.DiscardHandler)

// listenBoth binds UDP and TCP on the same free port of 127.0.0.1.
func listenBoth(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	for i := 0; ; i++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		pc.Close()
		if i > 50 {
			t.Fatal(err)
		}
	}
}
