package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/testenv"
)

var corpResources = []controlapi.PolicyResource{
	res("r-db", "db", "db.corp.internal", "corp"),
	res("r-web", "web", "*.web.corp.internal", "corp"),
	{ID: "r-git", Name: "git", Address: "git.corp.internal", Alias: "git.example.test", Network: "corp"},
}

func TestResourceNamesAnswered(t *testing.T) {
	checkGoroutines(t)
	up := startUpstream(t, staticUpstream)
	p := newTestProxy(t, Config{Upstreams: []netip.AddrPort{up.addr}, Logger: quiet}, corpResources...)
	addr := runProxy(t, p)
	v4 := netip.MustParsePrefix("100.96.0.0/12")

	for _, netw := range []string{"udp", "tcp"} {
		r := query(t, netw, addr, "db.corp.internal", dns.TypeA)
		got := answerAddrs(r)
		if r.Rcode != dns.RcodeSuccess || len(got) != 1 || !v4.Contains(netip.MustParseAddr(got[0])) {
			t.Fatalf("%s: db.corp.internal A = %s %v, want one synthetic address", netw, dns.RcodeToString[r.Rcode], got)
		}
		if !r.Authoritative {
			t.Errorf("synthetic answer not authoritative")
		}
		// Stable.
		if again := answerAddrs(query(t, netw, addr, "DB.corp.internal.", dns.TypeA)); !slices.Equal(again, got) {
			t.Errorf("second answer %v != %v", again, got)
		}
		// The owner name keeps the client's spelling (0x20).
		if r := query(t, netw, addr, "Db.CORP.internal", dns.TypeA); r.Answer[0].Header().Name != "Db.CORP.internal." {
			t.Errorf("owner = %q", r.Answer[0].Header().Name)
		}
	}
	// Wildcard: one and several labels, never the apex.
	for _, n := range []string{"a.web.corp.internal", "x.y.web.corp.internal"} {
		if got := answerAddrs(query(t, "udp", addr, n, dns.TypeA)); len(got) != 1 || !v4.Contains(netip.MustParseAddr(got[0])) {
			t.Errorf("%s = %v, want a synthetic address", n, got)
		}
	}
	if got := answerAddrs(query(t, "udp", addr, "web.corp.internal", dns.TypeA)); !slices.Equal(got, []string{"192.0.2.99"}) {
		t.Errorf("apex web.corp.internal = %v, want the upstream's answer", got)
	}
	// Names of resources the user may not use (not in the list) go upstream.
	if got := answerAddrs(query(t, "udp", addr, "secret.corp.internal", dns.TypeA)); !slices.Equal(got, []string{"192.0.2.99"}) {
		t.Errorf("secret.corp.internal = %v, want the upstream's answer", got)
	}
	// AAAA with IPv6 off: NODATA with a SOA.
	r := query(t, "udp", addr, "db.corp.internal", dns.TypeAAAA)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != dns.TypeSOA {
		t.Errorf("AAAA with IPv6 off: %v", r)
	}
	// Other types: NODATA, not forwarded.
	before := len(up.queries())
	r = query(t, "udp", addr, "db.corp.internal", dns.TypeMX)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(up.queries()) != before {
		t.Errorf("MX of a resource name: rcode %s, %d answers, forwarded=%v", dns.RcodeToString[r.Rcode], len(r.Answer), len(up.queries()) != before)
	}
	// Alias of a name resource: synthetic, and Lookup gives the real name.
	got := answerAddrs(query(t, "udp", addr, "git.example.test", dns.TypeA))
	if len(got) != 1 {
		t.Fatalf("alias = %v", got)
	}
	name, id, ok := p.Lookup(netip.MustParseAddr(got[0]))
	if !ok || name != "git.corp.internal" || id != "r-git" {
		t.Errorf("Lookup(alias addr) = %q %q %v", name, id, ok)
	}
}

func TestPTRAndLookup(t *testing.T) {
	up := startUpstream(t, staticUpstream)
	p := newTestProxy(t, Config{Upstreams: []netip.AddrPort{up.addr}, IPv6: true, Logger: quiet}, corpResources...)
	addr := runProxy(t, p)
	a := answerAddrs(query(t, "udp", addr, "db.corp.internal", dns.TypeA))
	aaaa := answerAddrs(query(t, "udp", addr, "db.corp.internal", dns.TypeAAAA))
	if len(a) != 1 || len(aaaa) != 1 || !netip.MustParsePrefix("fd7a:7073:746e::/48").Contains(netip.MustParseAddr(aaaa[0])) {
		t.Fatalf("A %v AAAA %v", a, aaaa)
	}
	for _, ip := range []string{a[0], aaaa[0]} {
		rev, _ := dns.ReverseAddr(ip)
		if got := answerAddrs(query(t, "udp", addr, rev, dns.TypePTR)); !slices.Equal(got, []string{"PTR db.corp.internal."}) {
			t.Errorf("PTR %s = %v", ip, got)
		}
		name, id, ok := p.Lookup(netip.MustParseAddr(ip))
		if !ok || name != "db.corp.internal" || id != "r-db" {
			t.Errorf("Lookup(%s) = %q %q %v", ip, name, id, ok)
		}
	}
	// Unallocated synthetic address: NXDOMAIN, never forwarded.
	before := len(up.queries())
	r := query(t, "udp", addr, "9.9.111.100.in-addr.arpa", dns.TypePTR)
	if r.Rcode != dns.RcodeNameError || len(up.queries()) != before {
		t.Errorf("PTR unallocated: %s forwarded=%v", dns.RcodeToString[r.Rcode], len(up.queries()) != before)
	}
	// Outside the range: forwarded.
	query(t, "udp", addr, "1.2.0.192.in-addr.arpa", dns.TypePTR)
	if len(up.queries()) != before+1 {
		t.Errorf("PTR outside the synthetic range not forwarded")
	}
	// When the resource goes away, its address no longer maps.
	p.SetResources(nil)
	if _, _, ok := p.Lookup(netip.MustParseAddr(a[0])); ok {
		t.Error("Lookup still maps an address of a removed resource")
	}
	if got := answerAddrs(query(t, "udp", addr, "db.corp.internal", dns.TypeA)); !slices.Equal(got, []string{"192.0.2.99"}) {
		t.Errorf("removed resource still answered synthetically: %v", got)
	}
	if _, _, ok := p.Lookup(netip.MustParseAddr("192.0.2.99")); ok {
		t.Error("Lookup maps an address outside the ranges")
	}
}

func TestStableAcrossRestart(t *testing.T) {
	state := filepath.Join(t.TempDir(), "names.json")
	up := startUpstream(t, staticUpstream)
	cfg := Config{Upstreams: []netip.AddrPort{up.addr}, StateFile: state, IPv6: true, Logger: quiet}
	names := []string{"db.corp.internal", "a.web.corp.internal", "b.web.corp.internal", "c.d.web.corp.internal"}
	var first []string
	func() {
		p := newTestProxy(t, cfg, corpResources...)
		ctx, cancel := context.WithCancel(context.Background())
		pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
		done := make(chan error)
		go func() { done <- p.Serve(ctx, pc, nil) }()
		for _, n := range names {
			first = append(first, answerAddrs(query(t, "udp", pc.LocalAddr().String(), n, dns.TypeA))...)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}()
	p := newTestProxy(t, cfg, corpResources...)
	addr := runProxy(t, p)
	var second []string
	for _, n := range slices.Backward(names) { // other order: hash placement alone would not guarantee this
		second = append(second, answerAddrs(query(t, "udp", addr, n, dns.TypeA))...)
	}
	slices.Reverse(second)
	if !slices.Equal(first, second) {
		t.Errorf("addresses changed across restart: %v -> %v", first, second)
	}
}

func TestForwardKeepsEDNS(t *testing.T) {
	up := startUpstream(t, staticUpstream)
	p := newTestProxy(t, Config{Upstreams: []netip.AddrPort{up.addr}, Logger: quiet}, corpResources...)
	addr := runProxy(t, p)
	m := new(dns.Msg)
	m.SetQuestion("www.example.test.", dns.TypeA)
	m.SetEdns0(3000, true)
	opt := m.IsEdns0()
	opt.Option = append(opt.Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0123456789abcdef"})
	m.CheckingDisabled = true
	r, _, err := (&dns.Client{Net: "udp"}).Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(answerAddrs(r), []string{"192.0.2.99"}) {
		t.Fatalf("answer %v", r)
	}
	if r.IsEdns0() == nil {
		t.Error("answer lost its OPT record")
	}
	qs := up.queries()
	seen := qs[len(qs)-1].msg
	o := seen.IsEdns0()
	if o == nil || o.UDPSize() != 3000 || !o.Do() || !seen.CheckingDisabled {
		t.Fatalf("upstream saw %v", seen)
	}
	var cookie string
	for _, e := range o.Option {
		if c, ok := e.(*dns.EDNS0_COOKIE); ok {
			cookie = c.Cookie
		}
	}
	if cookie != "0123456789abcdef" {
		t.Errorf("EDNS cookie not kept: %q", cookie)
	}
	if seen.Id == m.Id {
		t.Log("note: upstream query ID equals the client's (IDs are random; harmless)")
	}
}

// bigUpstream truncates every UDP answer for big.example.test and gives the
// full 60 records over TCP, like a real server with a large RRset.
func bigUpstream(netw string, w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	q := r.Question[0]
	if netw == "udp" && strings.EqualFold(q.Name, "big.example.test.") {
		m.Truncated = true
		w.WriteMsg(m)
		return
	}
	n := 1
	if strings.EqualFold(q.Name, "big.example.test.") {
		n = 60
	}
	for i := 0; i < n; i++ {
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(198, 51, 100, byte(i+1))})
	}
	w.WriteMsg(m)
}

func TestTruncationRetriesOverTCP(t *testing.T) {
	up := startUpstream(t, bigUpstream)
	p := newTestProxy(t, Config{Upstreams: []netip.AddrPort{up.addr}, Logger: quiet})
	addr := runProxy(t, p)

	// TCP client: the full answer.
	r := query(t, "tcp", addr, "big.example.test", dns.TypeA)
	if len(r.Answer) != 60 || r.Truncated {
		t.Errorf("tcp: %d answers truncated=%v, want 60", len(r.Answer), r.Truncated)
	}
	var sawTCP bool
	for _, q := range up.queries() {
		sawTCP = sawTCP || q.net == "tcp"
	}
	if !sawTCP {
		t.Error("proxy did not retry over TCP")
	}
	// UDP client with a big EDNS buffer: everything fits.
	m := new(dns.Msg)
	m.SetQuestion("big.example.test.", dns.TypeA)
	m.SetEdns0(4096, false)
	r, _, err := (&dns.Client{Net: "udp"}).Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Answer) != 60 || r.Truncated {
		t.Errorf("udp+edns: %d answers truncated=%v", len(r.Answer), r.Truncated)
	}
	// Plain UDP client: capped at 512 bytes with TC set, so it retries over TCP.
	m = new(dns.Msg)
	m.SetQuestion("big.example.test.", dns.TypeA)
	c := &dns.Client{Net: "udp", UDPSize: 65535}
	r, _, err = c.Exchange(m, addr)
	if err != nil {
		t.Fatal(err)
	}
	r.Compress = true // the wire size: the proxy compresses truncated answers
	if !r.Truncated || r.Len() > 512 {
		t.Errorf("plain udp: truncated=%v len=%d, want TC and <= 512", r.Truncated, r.Len())
	}
}

func TestResponseSizeCap(t *testing.T) {
	up := startUpstream(t, bigUpstream)
	p := newTestProxy(t, Config{Upstreams: []netip.AddrPort{up.addr}, MaxResponseSize: 600, Logger: quiet})
	addr := runProxy(t, p)
	r := query(t, "tcp", addr, "big.example.test", dns.TypeA)
	r.Compress = true
	if !r.Truncated || r.Len() > 600 {
		t.Errorf("tcp answer over the cap: len=%d truncated=%v", r.Len(), r.Truncated)
	}
}

func TestServfailOnTimeout(t *testing.T) {
	checkGoroutines(t)
	up := startUpstream(t, func(netw string, w dns.ResponseWriter, r *dns.Msg) {
		if strings.EqualFold(r.Question[0].Name, "slow.example.test.") {
			return // never answers
		}
		staticUpstream(netw, w, r)
	})
	p := newTestProxy(t, Config{Upstreams: []netip.AddrPort{up.addr}, UpstreamTimeout: 300 * time.Millisecond, Logger: quiet})
	addr := runProxy(t, p)
	start := time.Now()
	r := query(t, "udp", addr, "slow.example.test", dns.TypeA)
	if r.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("SERVFAIL after %s, want about the 300ms timeout", d)
	}
	// The proxy still answers other names.
	if got := answerAddrs(query(t, "udp", addr, "fast.example.test", dns.TypeA)); !slices.Equal(got, []string{"192.0.2.99"}) {
		t.Errorf("after a timeout: %v", got)
	}
}

func TestNoUpstreamServfail(t *testing.T) {
	p := newTestProxy(t, Config{Logger: quiet}, corpResources...)
	addr := runProxy(t, p)
	if r := query(t, "udp", addr, "www.example.test", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if got := answerAddrs(query(t, "udp", addr, "db.corp.internal", dns.TypeA)); len(got) != 1 {
		t.Errorf("resource names must resolve without upstreams: %v", got)
	}
}

func TestUpstreamFailover(t *testing.T) {
	// A port that answers nothing: bound, never read.
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	up := startUpstream(t, staticUpstream)
	p := newTestProxy(t, Config{
		Upstreams:       []netip.AddrPort{netip.MustParseAddrPort(dead.LocalAddr().String()), up.addr},
		UpstreamTimeout: 2 * time.Second, Logger: quiet,
	})
	addr := runProxy(t, p)
	if got := answerAddrs(query(t, "udp", addr, "www.example.test", dns.TypeA)); !slices.Equal(got, []string{"192.0.2.99"}) {
		t.Fatalf("failover answer %v", got)
	}
	// The working upstream is now preferred: the next query is fast.
	start := time.Now()
	query(t, "udp", addr, "www2.example.test", dns.TypeA)
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("second query took %s: the dead upstream is still tried first", d)
	}
}

func TestSearchDomainExpansion(t *testing.T) {
	up := startUpstream(t, staticUpstream)
	p := newTestProxy(t, Config{Upstreams: []netip.AddrPort{up.addr}, SearchDomains: []string{"example.test", "corp.internal"}, Logger: quiet}, corpResources...)
	addr := runProxy(t, p)
	r := query(t, "udp", addr, "db", dns.TypeA)
	got := answerAddrs(r)
	if len(got) != 2 || got[0] != "CNAME db.corp.internal." {
		t.Fatalf("db = %v", got)
	}
	full := answerAddrs(query(t, "udp", addr, "db.corp.internal", dns.TypeA))
	if got[1] != full[0] {
		t.Errorf("short name got %s, full name %s", got[1], full[0])
	}
	// A short name that is no resource is forwarded as is.
	if got := answerAddrs(query(t, "udp", addr, "printer", dns.TypeA)); !slices.Equal(got, []string{"192.0.2.99"}) {
		t.Errorf("printer = %v", got)
	}
	ex := p.Explain(context.Background(), "db")
	if ex.Resource != "db" || !strings.Contains(ex.Note, "db.corp.internal") {
		t.Errorf("explain short name: %+v", ex)
	}
}

func TestFloodIsBounded(t *testing.T) {
	checkGoroutines(t)
	release := make(chan struct{})
	up := startUpstream(t, func(netw string, w dns.ResponseWriter, r *dns.Msg) {
		<-release
		staticUpstream(netw, w, r)
	})
	defer close(release)
	p := newTestProxy(t, Config{Upstreams: []netip.AddrPort{up.addr}, MaxInFlight: 4, UpstreamTimeout: 2 * time.Second, Logger: quiet}, corpResources...)
	addr := runProxy(t, p)
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i := 0; i < 200; i++ {
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("n%d.example.test.", i), dns.TypeA)
		b, _ := m.Pack()
		conn.Write(b)
		if i%20 == 19 {
			time.Sleep(2 * time.Millisecond) // do not overrun the socket buffer
		}
	}
	testenv.Poll(t, 5*time.Second, "queries over the in-flight limit to be dropped", func() error {
		if d := p.Dropped(); d < 150 {
			return fmt.Errorf("dropped %d of 200 with 4 in flight", d)
		}
		return nil
	})
}

func TestExplain(t *testing.T) {
	up := startUpstream(t, staticUpstream)
	p := newTestProxy(t, Config{Upstreams: []netip.AddrPort{up.addr}, Logger: quiet}, corpResources...)
	p.SetConnectors([]controlapi.ConnectorInfo{
		{ID: "c1", Name: "corp-a", Network: "corp", Online: true},
		{ID: "c2", Name: "corp-b", Network: "corp"},
		{ID: "c3", Name: "other", Network: "lab", Online: true},
	})
	ex := p.Explain(context.Background(), "X.Web.Corp.Internal.")
	if ex.Name != "x.web.corp.internal" || ex.Resource != "web" || ex.Pattern != "*.web.corp.internal" ||
		len(ex.Synthetic) != 1 || !slices.Equal(ex.Connectors, []string{"corp-a", "corp-b (offline)"}) {
		t.Errorf("explain resource: %+v", ex)
	}
	// The address Explain shows is the one queries get.
	addr := runProxy(t, p)
	if got := answerAddrs(query(t, "udp", addr, "x.web.corp.internal", dns.TypeA)); !slices.Equal(got, ex.Synthetic) {
		t.Errorf("query %v, explain %v", got, ex.Synthetic)
	}
	ex = p.Explain(context.Background(), "www.example.test")
	if ex.Resource != "" || ex.Upstream != up.addr.String() || len(ex.Answer) == 0 || !strings.Contains(ex.Answer[0], "192.0.2.99") {
		t.Errorf("explain forwarded: %+v", ex)
	}
	if ex := p.Explain(context.Background(), "bad name!"); ex.Note == "" || ex.Resource != "" {
		t.Errorf("explain invalid: %+v", ex)
	}
}

func TestSyntheticAddrsAndMatchDomains(t *testing.T) {
	p := newTestProxy(t, Config{Logger: quiet}, corpResources...)
	a1, _, _ := p.allocate("a.web.corp.internal")
	a2, _, _ := p.allocate("b.web.corp.internal")
	p.allocate("db.corp.internal")
	got := p.SyntheticAddrs("r-web")
	if len(got) != 2 || !slices.Contains(got, a1) || !slices.Contains(got, a2) {
		t.Errorf("SyntheticAddrs(r-web) = %v, want %s %s", got, a1, a2)
	}
	d := p.MatchDomains()
	for _, want := range []string{"db.corp.internal", "web.corp.internal", "git.example.test", "96.100.in-addr.arpa", "111.100.in-addr.arpa"} {
		if !slices.Contains(d, want) {
			t.Errorf("MatchDomains lacks %s: %v", want, d)
		}
	}
	if r := p.Ranges(); !slices.Equal(r, []netip.Prefix{DefaultV4Range}) {
		t.Errorf("Ranges = %v", r)
	}
	if a := p.Addrs(); !slices.Equal(a, []netip.Addr{netip.MustParseAddr("100.96.0.53")}) {
		t.Errorf("Addrs = %v", a)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{V4Range: netip.MustParsePrefix("fd00::/48")}, "V4Range"},
		{Config{V4Range: netip.MustParsePrefix("100.96.0.1/12")}, "host bits"},
		{Config{V4Range: netip.MustParsePrefix("100.96.0.0/24")}, "too small"},
		{Config{V6Range: netip.MustParsePrefix("10.0.0.0/8")}, "V6Range"},
		{Config{V6Range: netip.MustParsePrefix("fd00::/120")}, "too small"},
		{Config{Upstreams: []netip.AddrPort{netip.MustParseAddrPort("100.96.0.53:53")}}, "inside the synthetic range"},
		{Config{SearchDomains: []string{"bad domain"}}, "search domain"},
		{Config{MaxResponseSize: 100}, "MaxResponseSize"},
		{Config{MaxInFlight: -1}, "negative"},
	}
	for _, tt := range tests {
		_, err := New(tt.cfg)
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New(%+v) = %v, want ErrConfig mentioning %q", tt.cfg, err, tt.want)
		}
	}
	p, err := New(Config{Upstreams: []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:0")}, Logger: quiet})
	if err != nil || p.cfg.Upstreams[0].Port() != 53 {
		t.Errorf("port 0 should mean 53: %v %v", err, p.cfg.Upstreams)
	}
}

func TestServeStopsAndSaves(t *testing.T) {
	checkGoroutines(t)
	state := filepath.Join(t.TempDir(), "names.json")
	p := newTestProxy(t, Config{StateFile: state, Logger: quiet}, corpResources...)
	if err := p.Serve(context.Background(), nil, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("Serve(nil, nil) = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := p.Serve(ctx, pc, ln); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	query(t, "tcp", ln.Addr().String(), "db.corp.internal", dns.TypeA)
	cancel()
	wg.Wait()
	q, err := New(Config{StateFile: state, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := q.alloc.lookup("db.corp.internal"); !ok {
		t.Error("allocation not saved when Serve ended")
	}
}

func TestSetUpstreams(t *testing.T) {
	checkGoroutines(t)
	first := startUpstream(t, staticUpstream)
	second := startUpstream(t, func(netw string, w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(203, 0, 113, 7)})
		w.WriteMsg(m)
	})
	p := newTestProxy(t, Config{Upstreams: []netip.AddrPort{first.addr}, Logger: quiet})
	addr := runProxy(t, p)
	if got := answerAddrs(query(t, "udp", addr, "www.example.test", dns.TypeA)); !slices.Equal(got, []string{"192.0.2.99"}) {
		t.Fatalf("before: %v", got)
	}
	if err := p.SetUpstreams([]netip.AddrPort{netip.MustParseAddrPort("100.96.0.53:53")}); !errors.Is(err, ErrConfig) {
		t.Errorf("upstream in the synthetic range accepted: %v", err)
	}
	if got := answerAddrs(query(t, "udp", addr, "www.example.test", dns.TypeA)); !slices.Equal(got, []string{"192.0.2.99"}) {
		t.Fatalf("a refused SetUpstreams changed state: %v", got)
	}
	if err := p.SetUpstreams([]netip.AddrPort{second.addr}); err != nil {
		t.Fatal(err)
	}
	if got := answerAddrs(query(t, "udp", addr, "www.example.test", dns.TypeA)); !slices.Equal(got, []string{"203.0.113.7"}) {
		t.Errorf("after: %v", got)
	}
}
