package traversal

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun"

	"postern.dev/postern/traversal/sigwire"
)

// recordingSession is a session on one mux whose checks and primers a
// recIO records.
func recordingSession() (*recIO, *mux, *session) {
	io := &recIO{}
	m := newMux(io, "udp", testLogger())
	m.primer = io.prime
	s := newSession(testLogger())
	s.attach(m)
	return io, m, s
}

// recIO records what a mux writes, primers included, in order.
type recIO struct {
	mu   sync.Mutex
	sent []string // "primer <addr>" or "check <addr>"
}

func (r *recIO) WriteTo(b []byte, a net.Addr) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, "check "+a.String())
	return len(b), nil
}

func (r *recIO) ReadNonQUICPacket(ctx context.Context, _ []byte) (int, net.Addr, error) {
	<-ctx.Done()
	return 0, nil, ctx.Err()
}

func (r *recIO) prime(_ []byte, to *net.UDPAddr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, "primer "+to.String())
	return nil
}

func (r *recIO) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.sent
	r.sent = nil
	return out
}

func udp(s string) *net.UDPAddr { return net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

// TestRoundPrimesThenChecksReflexiveFirst: punchable targets get a primer
// before any check leaves, and server-reflexive targets are checked before
// relayed and host ones.
func TestRoundPrimesThenChecksReflexiveFirst(t *testing.T) {
	io, m, s := recordingSession()
	s.addTarget(m, udp("198.18.2.2:40000"), sigwire.CandHost)
	s.addTarget(m, udp("203.0.113.1:50000"), sigwire.CandRelay)
	s.addTarget(m, udp("192.0.2.1:40000"), sigwire.CandSrflx)
	s.setRemote("ru", "rpwd")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.round(ctx)
	got := io.take()
	want := []string{"primer 192.0.2.1:40000", "primer 198.18.2.2:40000",
		"check 192.0.2.1:40000", "check 203.0.113.1:50000", "check 198.18.2.2:40000"}
	if len(got) != len(want) {
		t.Fatalf("sent %q, want %q", got, want)
	}
	// The two primers may leave in either order; everything else is fixed.
	if !(got[0] == want[0] && got[1] == want[1] || got[0] == want[1] && got[1] == want[0]) {
		t.Fatalf("sent %q, want primers first: %q", got, want)
	}
	for i := 2; i < len(want); i++ {
		if got[i] != want[i] {
			t.Fatalf("sent %q, want %q", got, want)
		}
	}
	// A second round right away sends nothing (checks are paced) and no
	// second primer.
	s.round(ctx)
	if got := io.take(); len(got) != 0 {
		t.Fatalf("second round sent %q", got)
	}
}

// TestHoldUntilPeerChecks: a held session checks only relayed addresses
// until a check from the peer arrives; that check's source becomes a
// peer-reflexive target and every held target is checked.
func TestHoldUntilPeerChecks(t *testing.T) {
	io, m, s := recordingSession()
	s.hold(time.Hour)
	s.addTarget(m, udp("192.0.2.1:40000"), sigwire.CandSrflx)
	s.addTarget(m, udp("203.0.113.1:50000"), sigwire.CandRelay)
	s.setRemote("ru", "rpwd")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.round(ctx)
	if got := io.take(); len(got) != 1 || got[0] != "check 203.0.113.1:50000" {
		t.Fatalf("held round sent %q, want only the relayed check", got)
	}
	s.onCheck(m, udp("192.0.2.1:41234"))
	s.round(ctx)
	got := io.take()
	want := map[string]bool{"primer 192.0.2.1:40000": true, "primer 192.0.2.1:41234": true,
		"check 192.0.2.1:40000": true, "check 192.0.2.1:41234": true}
	if len(got) != len(want) {
		t.Fatalf("after the peer's check sent %q, want %v", got, want)
	}
	for _, g := range got {
		if !want[g] {
			t.Fatalf("after the peer's check sent %q, want %v", got, want)
		}
	}
	var kinds []string
	for _, p := range s.pairs() {
		kinds = append(kinds, p.Remote+"="+p.Kind)
	}
	if len(kinds) != 3 {
		t.Fatalf("pairs %v", kinds)
	}
}

// TestCheckIntervalsOutliveConntrack: checks to an unanswered target go on
// past 30 s, their pauses grow, and they end up longer than conntrack's 30 s
// timeout for unanswered UDP.
func TestCheckIntervalsOutliveConntrack(t *testing.T) {
	tg := &target{added: time.Unix(0, 0)}
	at := func(d time.Duration) time.Duration { return tg.interval(tg.added.Add(d)) }
	if at(time.Second) != checkFast || at(10*time.Second) != checkMedium {
		t.Fatalf("early intervals %v %v", at(time.Second), at(10*time.Second))
	}
	prev := time.Duration(0)
	for d := 31 * time.Second; d < 10*time.Minute; d += 10 * time.Second {
		iv := at(d)
		if iv < prev {
			t.Fatalf("interval shrank at %v: %v < %v", d, iv, prev)
		}
		prev = iv
	}
	if prev <= 30*time.Second {
		t.Fatalf("longest interval %v does not outlast conntrack's 30 s", prev)
	}
}

// TestHostCandidatesLeaveOutTunnelsAndSyntheticRanges covers the filters.
func TestHostCandidatesLeaveOutTunnelsAndSyntheticRanges(t *testing.T) {
	for _, ip := range []string{"100.96.0.53", "100.100.1.1", "fd7a:7073:746e::53", "127.0.0.1", "fe80::1"} {
		if usableHostIP(net.ParseIP(ip), DefaultExcludedPrefixes) {
			t.Errorf("%s offered as a host candidate", ip)
		}
	}
	for _, ip := range []string{"198.18.1.2", "192.168.1.10", "2001:db8::1", "100.64.1.1"} {
		if !usableHostIP(net.ParseIP(ip), DefaultExcludedPrefixes) {
			t.Errorf("%s left out", ip)
		}
	}
	for _, n := range []string{"wg0", "tun0", "utun3", "tailscale0", "postern0"} {
		if !tunnelInterface(net.Interface{Name: n, Flags: net.FlagUp}) {
			t.Errorf("%s not seen as a tunnel", n)
		}
	}
	if !tunnelInterface(net.Interface{Name: "vpn", Flags: net.FlagUp | net.FlagPointToPoint}) {
		t.Error("point-to-point link not seen as a tunnel")
	}
	if tunnelInterface(net.Interface{Name: "eth0", Flags: net.FlagUp}) {
		t.Error("eth0 seen as a tunnel")
	}
	// A socket bound to an excluded address offers nothing.
	if c := hostCandidates(udp("100.96.0.53:5000"), DefaultExcludedPrefixes); len(c) != 0 {
		t.Errorf("bound to the TUN address: %v", c)
	}
	for _, c := range hostCandidates(udp("0.0.0.0:5000"), DefaultExcludedPrefixes) {
		if !usableHostIP(mustUDPAddr(t, c.Addr).IP, DefaultExcludedPrefixes) {
			t.Errorf("offered %v", c)
		}
	}
}

// TestPrimerIsIgnoredByReceivers: a primer that does reach a peer (a path
// shorter than its TTL) is a STUN indication every mux drops silently.
func TestPrimerIsIgnoredByReceivers(t *testing.T) {
	io := &recIO{}
	m := newMux(io, "udp", testLogger())
	var got []byte
	m.primer = func(b []byte, _ *net.UDPAddr) error { got = b; return nil }
	if err := m.prime(udp("192.0.2.1:1")); err != nil {
		t.Fatal(err)
	}
	msg := &stun.Message{Raw: got}
	if err := msg.Decode(); err != nil || msg.Type.Class != stun.ClassIndication {
		t.Fatalf("primer is %v (%v), want a STUN indication", msg.Type, err)
	}
	m.handle(got, udp("192.0.2.1:1"))
	if s := io.take(); len(s) != 0 {
		t.Fatalf("a mux answered a primer: %q", s)
	}
}

func mustUDPAddr(t *testing.T, s string) *net.UDPAddr {
	t.Helper()
	a, err := net.ResolveUDPAddr("udp", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
