package dnsproxy

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// recorder is a dns.ResponseWriter that keeps what the chain wrote.
type recorder struct {
	udp bool
	msg *dns.Msg
}

func (r *recorder) LocalAddr() net.Addr {
	if r.udp {
		return &net.UDPAddr{IP: net.IPv4(100, 96, 0, 53), Port: 53}
	}
	return &net.TCPAddr{IP: net.IPv4(100, 96, 0, 53), Port: 53}
}

func (r *recorder) RemoteAddr() net.Addr {
	if r.udp {
		return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	}
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}

func (r *recorder) WriteMsg(m *dns.Msg) error {
	if r.msg != nil {
		panic("two answers to one query")
	}
	r.msg = m
	return nil
}
func (r *recorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *recorder) Close() error                { return nil }
func (r *recorder) TsigStatus() error           { return nil }
func (r *recorder) TsigTimersOnly(bool)         {}
func (r *recorder) Hijack()                     {}

func fuzzSeeds() [][]byte {
	var out [][]byte
	add := func(m *dns.Msg) {
		b, err := m.Pack()
		if err == nil {
			out = append(out, b)
		}
	}
	for _, q := range []struct {
		name string
		t    uint16
	}{
		{"db.corp.internal.", dns.TypeA}, {"db.corp.internal.", dns.TypeAAAA}, {"a.b.web.corp.internal.", dns.TypeANY},
		{"web.corp.internal.", dns.TypeA}, {"db.", dns.TypeA}, {"git.example.test.", dns.TypeA},
		{"5.1.96.100.in-addr.arpa.", dns.TypePTR}, {"www.example.test.", dns.TypeTXT}, {".", dns.TypeNS},
	} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.t)
		add(m)
		m.SetEdns0(1232, true)
		add(m)
	}
	m := new(dns.Msg)
	m.SetQuestion("db.corp.internal.", dns.TypeA)
	m.Response = true
	add(m)
	m = new(dns.Msg)
	m.SetUpdate("corp.internal.")
	add(m)
	m = new(dns.Msg)
	m.Question = []dns.Question{{Name: "a.", Qtype: dns.TypeA, Qclass: dns.ClassINET}, {Name: "b.", Qtype: dns.TypeA, Qclass: dns.ClassINET}}
	add(m)
	m = new(dns.Msg)
	m.Question = []dns.Question{{Name: "db.corp.internal.", Qtype: dns.TypeA, Qclass: dns.ClassCHAOS}}
	add(m)
	return out
}

// FuzzQuery feeds arbitrary messages through the whole handler chain (with
// a real upstream behind it): nothing may panic, every answer must carry the
// query's ID, pack, and fit the transport.
func FuzzQuery(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s, true)
		f.Add(s, false)
	}
	up := startUpstream(f, staticUpstream)
	proxy, err := New(Config{
		Upstreams: []netip.AddrPort{up.addr}, IPv6: true, SearchDomains: []string{"corp.internal"},
		UpstreamTimeout: 200 * time.Millisecond, MaxNames: 1000, Logger: quiet,
	})
	if err != nil {
		f.Fatal(err)
	}
	proxy.SetResources(corpResources)
	f.Fuzz(func(t *testing.T, data []byte, udp bool) {
		req := new(dns.Msg)
		if err := req.Unpack(data); err != nil {
			return
		}
		w := &recorder{udp: udp}
		proxy.Handler().ServeDNS(context.Background(), w, req)
		if w.msg == nil {
			return // dropped (responses, floods): allowed
		}
		if w.msg.Id != req.Id {
			t.Fatalf("answer ID %d, query ID %d", w.msg.Id, req.Id)
		}
		b, err := w.msg.Pack()
		if err != nil {
			return // the client would get nothing; not a crash
		}
		if limit := replySize(w, req, proxy.cfg.MaxResponseSize); len(b) > limit {
			t.Fatalf("answer of %d bytes over the %d limit", len(b), limit)
		}
		if len(req.Question) == 1 && !req.Response && req.Opcode == dns.OpcodeQuery && req.Question[0].Qtype == dns.TypeA && req.Question[0].Qclass == dns.ClassINET {
			if rl := proxy.table.Load().match(canonicalForTest(req.Question[0].Name[:max(0, len(req.Question[0].Name)-1)])); rl != nil && w.msg.Rcode == dns.RcodeSuccess {
				for _, rr := range w.msg.Answer {
					if a, ok := rr.(*dns.A); ok {
						ip, _ := netip.AddrFromSlice(a.A)
						if !DefaultV4Range.Contains(ip.Unmap()) {
							t.Fatalf("resource name answered with %s outside the synthetic range", ip)
						}
					}
				}
			}
		}
	})
}
