package relay

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/pion/stun"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/pki"
	"postern.dev/postern/traversal/sigwire"
)

// Requests whose username names a principal but whose password is wrong
// take none of that principal's quota: before, the username alone was
// counted (the AuthHandler runs before pion checks MESSAGE-INTEGRITY), so
// anyone could keep a user off the relay from a few source ports.
func TestForgedTURNRequestsTakeNoQuota(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxAllocationsPerPrincipal = 2 })
	u, p := deviceCreds("victim", "dev-1")
	for i := 0; i < 3; i++ {
		if _, err := f.allocate(t, u, p+"-forged"); err == nil {
			t.Fatalf("forged allocation %d accepted", i)
		}
	}
	if _, _, err := f.allocateTLS(u, "forged"); err == nil {
		t.Fatal("forged allocation over TLS accepted")
	}
	if n := f.r.auth.endpointsOf("victim"); n != 0 {
		t.Fatalf("forged requests count %d endpoints against the victim", n)
	}
	for i := 0; i < 2; i++ {
		if _, err := f.allocate(t, u, p); err != nil {
			t.Fatalf("the victim's allocation %d: %v", i+1, err)
		}
	}
	if n := f.r.auth.endpointsOf("victim"); n != 2 {
		t.Fatalf("the victim's own allocations count %d, want 2", n)
	}
}

// A request's claimed identity does not replace the identity an endpoint
// authenticated as until pion accepts the request.
func TestEndpointIdentityChangesOnlyOnAcceptedRequests(t *testing.T) {
	a := newTURNAuth(8, func(string) {})
	a.setSecret("s")
	ep := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 20), Port: 3478}
	key := endpointKey(ep)
	exp := time.Now().Add(time.Hour)
	if _, err := a.check(controlapi.TURNDeviceUsername(exp, "alice", "d1"), ep); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.lookup(ep); ok {
		t.Fatal("an identity counted before pion answered")
	}
	a.confirm(key)
	// A forged request for bob at alice's endpoint (spoofed source): refused.
	if _, err := a.check(controlapi.TURNDeviceUsername(exp, "bob", "d2"), ep); err != nil {
		t.Fatal(err)
	}
	a.drop(key)
	a.confirm(key) // a later success (alice's own Refresh) confirms nothing pending
	if id, _ := a.lookup(ep); id.principal != "alice" || a.endpointsOf("bob") != 0 || a.endpointsOf("alice") != 1 {
		t.Fatalf("after a refused request for bob: endpoint is %+v, alice %d, bob %d", id, a.endpointsOf("alice"), a.endpointsOf("bob"))
	}
	// A NAT that reuses the port for bob: his accepted request moves it.
	if _, err := a.check(controlapi.TURNDeviceUsername(exp, "bob", "d2"), ep); err != nil {
		t.Fatal(err)
	}
	a.confirm(key)
	if id, _ := a.lookup(ep); id.principal != "bob" || a.endpointsOf("alice") != 0 {
		t.Fatalf("after bob's accepted request: endpoint is %+v, alice still %d", id, a.endpointsOf("alice"))
	}
	// Requests pion never answers are forgotten; a flood is not held.
	for i := 0; i < maxPendingAuth+10; i++ {
		_, _ = a.check(controlapi.TURNDeviceUsername(exp, "carol", "d3"), &net.UDPAddr{IP: net.IPv4(198, 18, byte(i>>8), byte(i)), Port: 1 + i>>16})
	}
	if n := len(a.pending); n > maxPendingAuth {
		t.Fatalf("%d requests held, more than %d", n, maxPendingAuth)
	}
}

func TestSTUNResponseKinds(t *testing.T) {
	build := func(m stun.Method, c stun.MessageClass) []byte {
		msg, err := stun.Build(stun.TransactionID, stun.NewType(m, c))
		if err != nil {
			t.Fatal(err)
		}
		return msg.Raw
	}
	for _, tc := range []struct {
		b    []byte
		want responseKind
	}{
		{build(stun.MethodAllocate, stun.ClassSuccessResponse), responseSuccess},
		{build(stun.MethodRefresh, stun.ClassSuccessResponse), responseSuccess},
		{build(stun.MethodCreatePermission, stun.ClassSuccessResponse), responseSuccess},
		{build(stun.MethodChannelBind, stun.ClassSuccessResponse), responseSuccess},
		{build(stun.MethodBinding, stun.ClassSuccessResponse), notAResponse}, // needs no credential
		{build(stun.MethodAllocate, stun.ClassErrorResponse), responseError},
		{build(stun.MethodAllocate, stun.ClassRequest), notAResponse},
		{build(stun.MethodSend, stun.ClassIndication), notAResponse},
		{[]byte{0x40, 0, 0, 4, 1, 2, 3, 4}, notAResponse}, // ChannelData
		{[]byte{1, 1, 0}, notAResponse},
	} {
		if got := stunResponse(tc.b); got != tc.want {
			t.Errorf("% x: %v, want %v", tc.b[:min(len(tc.b), 4)], got, tc.want)
		}
	}
}

// A TURN-over-TLS connection that makes no allocation is closed after
// turnIdleWait; one that made an allocation stays.
func TestIdleTURNOverTLSClosed(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.turnIdleWait = 300 * time.Millisecond })
	u, p := deviceCreds("user-1", "dev-1")
	_, closeAll, err := f.allocateTLS(u, p)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll()
	want := []string{f.r.TLSCertSHA256()}
	tc, err := tls.Dial("tcp", f.r.TLSAddr().String(), pki.PinnedPeerConfig(func() []string { return want }, "postern-relay", []string{sigwire.ALPNTURN}))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	_ = tc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [16]byte
	if _, err := tc.Read(b[:]); err == nil || errors.Is(err, errTimeout(err)) {
		t.Fatalf("idle TURN-over-TLS connection: read %v, want it closed", err)
	}
	if n := f.r.auth.endpointsOf("user-1"); n != 1 {
		t.Fatalf("the allocated TLS endpoint counts %d, want 1 (still open)", n)
	}
	// pion closes its side once its read fails; then it is untracked.
	testenv.Eventually(t, 10*time.Second, "only the allocated TLS endpoint tracked", func() bool {
		f.r.tmu.Lock()
		defer f.r.tmu.Unlock()
		return len(f.r.tlsTURN) == 1
	})
}

// errTimeout returns err when it is a timeout (the connection was not
// closed), else a value no error matches.
func errTimeout(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return io.ErrNoProgress
}

// TLS handshakes in progress are bounded per source: a host that opens TCP
// connections and never starts TLS holds at most tlsHandshakesPerAddr of
// them; more are closed at once, and a finished handshake frees its place.
func TestTLSHandshakesBoundedPerSource(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.tlsHandshakesPerAddr = 2 })
	pending := func() int {
		f.r.tlsAdmit.mu.Lock()
		defer f.r.tlsAdmit.mu.Unlock()
		return f.r.tlsAdmit.n.Total()
	}
	var held []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", f.r.TLSAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	testenv.Eventually(t, 10*time.Second, "two silent connections counted", func() bool { return pending() == 2 })
	c, err := net.Dial("tcp", f.r.TLSAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("a third silent connection from one source: read %v, want it closed at once (EOF)", err)
	}
	if n := counterValue(t, f.r.m.refusals.WithLabelValues("tls_busy")); n != 1 {
		t.Fatalf("tls_busy refusals %v, want 1", n)
	}
	held[0].Close()
	testenv.Eventually(t, 10*time.Second, "the closed connection's place", func() bool { return pending() == 1 })
	u, p := deviceCreds("user-1", "dev-1")
	_, closeAll, err := f.allocateTLS(u, p)
	if err != nil {
		t.Fatalf("TURN over TLS with a place free: %v", err)
	}
	closeAll()
	if n := pending(); n != 1 {
		t.Fatalf("%d handshakes counted after a finished one, want the one silent connection", n)
	}
}

func TestTLSSourceKeys(t *testing.T) {
	a := newTLSAdmission(1, 3)
	tcp := func(s string) net.Addr { a, _ := net.ResolveTCPAddr("tcp", s); return a }
	if _, ok := a.admit(tcp("[2001:db8:5:6::1]:1")); !ok {
		t.Fatal("first handshake from a /64 refused")
	}
	if _, ok := a.admit(tcp("[2001:db8:5:6:ffff::2]:2")); ok {
		t.Fatal("a second handshake from the same /64 admitted over a limit of 1")
	}
	done, ok := a.admit(tcp("192.0.2.7:1"))
	if !ok {
		t.Fatal("another source refused")
	}
	if _, ok := a.admit(tcp("[::ffff:192.0.2.7]:2")); ok {
		t.Fatal("the same IPv4 address, v4-mapped, admitted over a limit of 1")
	}
	done()
	done()
	if _, ok := a.admit(tcp("192.0.2.7:3")); !ok {
		t.Fatal("refused after the source's handshake finished")
	}
	if _, ok := a.admit(tcp("192.0.2.8:1")); !ok {
		t.Fatal("third source refused under a total of 3")
	}
	if _, ok := a.admit(tcp("192.0.2.9:1")); ok {
		t.Fatal("a fourth handshake admitted over a total of 3")
	}
}
