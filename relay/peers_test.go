package relay

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v2"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/pki"
	"postern.dev/postern/traversal/sigwire"
)

// turnClient allocates on the relay and returns the client (for
// CreatePermission) and the relayed socket.
func (f *fixture) turnClient(t testing.TB, username, password string) (*turn.Client, net.PacketConn, error) {
	t.Helper()
	return f.turnClientFrom(t, "127.0.0.1:0", username, password)
}

// turnClient6 is turnClient from the IPv6 loopback.
func (f *fixture) turnClient6(t *testing.T, username, password string) (*turn.Client, net.PacketConn, error) {
	t.Helper()
	return f.turnClientFrom(t, "[::1]:0", username, password)
}

func (f *fixture) turnClientFrom(t testing.TB, local, username, password string) (*turn.Client, net.PacketConn, error) {
	t.Helper()
	pc, err := net.ListenPacket("udp", local)
	if err != nil {
		t.Fatal(err)
	}
	return f.turnClientOn(t, pc, username, password)
}

// turnClientOn is turnClient on the client socket pc (closed with the
// client).
func (f *fixture) turnClientOn(t testing.TB, pc net.PacketConn, username, password string) (*turn.Client, net.PacketConn, error) {
	t.Helper()
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: f.r.UDPAddr().String(), TURNServerAddr: f.r.UDPAddr().String(),
		Username: username, Password: password, Conn: pc, LoggerFactory: lf, RTO: 100 * time.Millisecond, Net: anyFamilyNet(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); pc.Close() })
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relayed, err := c.Allocate()
	if err == nil {
		t.Cleanup(func() { relayed.Close() })
	}
	return c, relayed, err
}

// deviceTURN is a TURN client with an allocation, signed in as principal's
// device.
func (f *fixture) deviceTURN(t *testing.T, principal, device string) *turn.Client {
	t.Helper()
	u, p := deviceCreds(principal, device)
	c, _, err := f.turnClient(t, u, p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// publicRelay is a relay that advertises public (as behind a 1:1 NAT, so the
// address is not local) and refuses loopback peers.
func publicRelay(t *testing.T, public string) *fixture {
	t.Helper()
	return newFixture(t, func(c *Config) {
		c.AllowLoopbackPeers = false
		c.PublicIP = net.ParseIP(public)
	})
}

func deviceCreds(principal, device string) (string, string) {
	u := controlapi.TURNDeviceUsername(time.Now().Add(time.Minute), principal, device)
	return u, controlapi.TURNPassword(secret, u)
}

func udpAddr(s string) net.Addr {
	a, err := net.ResolveUDPAddr("udp", s)
	if err != nil {
		panic(err)
	}
	return a
}

// session opens connector c1's signaling and a client session of user-1's
// dev-1, and has the connector answer with cands; it returns both ends
// after the client has read the answer (so the relay has seen it).
func (f *fixture) session(t testing.TB, cands ...sigwire.Candidate) (conn, cl *sigwire.Conn) {
	t.Helper()
	cc := f.connectorCert(t, f.ca, "c1")
	f.c1Key = keyOf(t, cc)
	conn, w := f.signal(t, &cc, &sigwire.Message{Type: sigwire.TypeHello, Role: sigwire.RoleConnector})
	if w.Type != sigwire.TypeWelcome {
		t.Fatalf("connector hello: %+v", w)
	}
	_, dev, _ := ed25519.GenerateKey(rand.Reader)
	devCert, _ := pki.SelfSigned(dev, "device", time.Hour)
	cl, w = f.signal(t, &devCert, &sigwire.Message{Type: sigwire.TypeHello, Role: sigwire.RoleClient, Connector: "c1",
		Token: f.clientToken(t, "c1", dev, time.Now().Add(time.Minute))})
	if w.Type != sigwire.TypeWelcome {
		t.Fatalf("client hello: %+v", w)
	}
	if err := cl.Write(&sigwire.Message{Type: sigwire.TypeOffer, Ufrag: "u", Pwd: "p",
		Candidates: []sigwire.Candidate{{Type: sigwire.CandSrflx, Addr: "192.0.2.44:5000"}}}); err != nil {
		t.Fatal(err)
	}
	if m, err := conn.Read(); err != nil || m.Type != sigwire.TypeOffer {
		t.Fatalf("offer at the connector: %+v %v", m, err)
	}
	if err := conn.Write(&sigwire.Message{Type: sigwire.TypeAnswer, Session: w.Session, Ufrag: "cu", Pwd: "cp", Candidates: cands}); err != nil {
		t.Fatal(err)
	}
	if m, err := cl.Read(); err != nil || m.Type != sigwire.TypeAnswer {
		t.Fatalf("answer at the client: %+v %v", m, err)
	}
	return conn, cl
}

// Issue 14 finding 1: a TURN allocation may only reach the candidates of a
// live signaling session of its own principal and device, and never the
// relay itself, loopback or cloud metadata endpoints. The old relay granted
// every permission below except loopback.
func TestRelayIsNoOpenForwarder(t *testing.T) {
	public := "203.0.113.50" // the relay's advertised address (1:1 NAT: not local)
	f := publicRelay(t, public)
	tc := f.deviceTURN(t, "user-1", "dev-1")
	// No signaling session yet: nothing may be reached, not even public
	// addresses, private ranges or metadata endpoints.
	for _, peer := range []string{"198.51.100.7:4000", "10.1.2.3:53", "192.168.1.1:53", "100.64.0.1:53", "[fc00::1]:53",
		"169.254.169.254:80", "100.100.100.200:80", "168.63.129.16:80", "[fd00:ec2::254]:80", "127.0.0.1:22", public + ":1"} {
		if err := tc.CreatePermission(udpAddr(peer)); err == nil {
			t.Errorf("permission to %s granted without a signaling session", peer)
		}
	}
	_, cl := f.session(t,
		sigwire.Candidate{Type: sigwire.CandHost, Addr: "198.51.100.7:4000"},
		sigwire.Candidate{Type: sigwire.CandSrflx, Addr: public + ":4000"},
		sigwire.Candidate{Type: sigwire.CandHost, Addr: "100.100.100.200:4000"},
		sigwire.Candidate{Type: sigwire.CandHost, Addr: "168.63.129.16:4000"},
		sigwire.Candidate{Type: sigwire.CandHost, Addr: "[fd00:ec2::254]:4000"},
	)
	if err := tc.CreatePermission(udpAddr("198.51.100.7:4000")); err != nil {
		t.Fatalf("permission to the connector's candidate refused: %v", err)
	}
	// Other ports of a candidate's IP are fine (TURN permissions are per IP).
	if err := tc.CreatePermission(udpAddr("198.51.100.7:4999")); err != nil {
		t.Fatalf("permission to the connector's candidate IP refused: %v", err)
	}
	// Candidates the relay must refuse whatever the session says.
	for _, peer := range []string{public + ":4000", "100.100.100.200:4000", "168.63.129.16:4000", "[fd00:ec2::254]:4000"} {
		if err := tc.CreatePermission(udpAddr(peer)); err == nil {
			t.Errorf("permission to %s (relay's own or metadata) granted", peer)
		}
	}
	// Addresses not exchanged in the session, and the client's own
	// candidate (only connectors may reach those).
	for _, peer := range []string{"10.1.2.3:53", "198.51.100.8:4000", "192.0.2.44:5000"} {
		if err := tc.CreatePermission(udpAddr(peer)); err == nil {
			t.Errorf("permission to %s (not a connector candidate) granted", peer)
		}
	}
	// Another device and another principal get nothing from this session.
	for _, who := range [][2]string{{"user-1", "dev-2"}, {"user-2", "dev-1"}} {
		u, p := deviceCreds(who[0], who[1])
		other, _, err := f.turnClient(t, u, p)
		if err != nil {
			t.Fatal(err)
		}
		if err := other.CreatePermission(udpAddr("198.51.100.7:4000")); err == nil {
			t.Errorf("%s/%s reached the candidates of another device's session", who[0], who[1])
		}
	}
	// The connector's allocation may reach the client's non-host candidates.
	cu, cp := creds(time.Now().Add(time.Minute), "connector:c1", secret)
	ctc, _, err := f.turnClient(t, cu, cp)
	if err != nil {
		t.Fatal(err)
	}
	if err := ctc.CreatePermission(udpAddr("192.0.2.44:5000")); err != nil {
		t.Fatalf("connector's permission to its client's candidate refused: %v", err)
	}
	// The session ends: its candidates are no longer reachable.
	cl.Close()
	testenv.Eventually(t, 5*time.Second, "candidates unreachable after the signaling session ended", func() bool {
		return tc.CreatePermission(udpAddr("198.51.100.7:4000")) != nil
	})
}

// Revoking a device (RelayPolicy.RevokedDevices) closes its signaling, stops
// relaying for its allocations at once (over UDP and over TLS) and refuses
// new ones.
func TestRevokedDeviceLosesRelayAtOnce(t *testing.T) {
	f := newFixture(t, nil)
	peer, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	_, cl := f.session(t, sigwire.Candidate{Type: sigwire.CandHost, Addr: peer.LocalAddr().String()})
	u, p := deviceCreds("user-1", "dev-1")
	_, relayed, err := f.turnClient(t, u, p)
	if err != nil {
		t.Fatal(err)
	}
	relayedTLS := f.turnClientTLS(t, u, p)
	buf := make([]byte, 64)
	send := func(pc net.PacketConn, msg string) bool {
		if _, err := pc.WriteTo([]byte(msg), peer.LocalAddr()); err != nil {
			return false
		}
		_ = peer.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			n, _, err := peer.ReadFrom(buf)
			if err != nil {
				return false
			}
			if string(buf[:n]) == msg {
				return true
			}
		}
	}
	if !send(relayed, "udp") || !send(relayedTLS, "tls") {
		t.Fatal("relaying to the connector's candidate failed before revocation")
	}
	f.r.SetPolicy(controlapi.RelayPolicy{Revision: 2, Connectors: []controlapi.RelayConnector{{ID: "c1", KeySHA256: f.c1Key}},
		RevokedDevices: []string{"dev-1"}})
	_ = cl.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := cl.Read(); err != nil {
			break // the relay closed the revoked device's session
		}
	}
	if send(relayed, "udp after") {
		t.Fatal("a revoked device's UDP allocation still relays")
	}
	if send(relayedTLS, "tls after") {
		t.Fatal("a revoked device's TLS allocation still relays")
	}
	f.r.tmu.Lock()
	left := len(f.r.tlsTURN)
	f.r.tmu.Unlock()
	if left != 0 {
		t.Fatalf("%d TURN-over-TLS connections of a revoked device still open", left)
	}
	if _, _, err := f.turnClient(t, u, p); err == nil {
		t.Fatal("a revoked device got a new allocation")
	}
}

// turnClientTLS allocates over TURN-over-TLS (ALPN stun.turn) and returns the
// relayed socket.
func (f *fixture) turnClientTLS(t *testing.T, username, password string) net.PacketConn {
	t.Helper()
	relayed, closeAll, err := f.allocateTLS(username, password)
	if err != nil {
		t.Fatalf("allocate over TLS: %v", err)
	}
	t.Cleanup(closeAll)
	return relayed
}

// allocateTLS allocates on the relay over TURN-over-TLS; closeAll ends the
// allocation, the client and the TLS connection.
func (f *fixture) allocateTLS(username, password string) (net.PacketConn, func(), error) {
	want := []string{f.r.TLSCertSHA256()}
	tc, err := tls.Dial("tcp", f.r.TLSAddr().String(), pki.PinnedPeerConfig(func() []string { return want }, "postern-relay", []string{sigwire.ALPNTURN}))
	if err != nil {
		return nil, nil, err
	}
	return f.allocateTLSOn(tc, username, password)
}

// allocateTLSOn is allocateTLS on the TLS connection tc.
func (f *fixture) allocateTLSOn(tc net.Conn, username, password string) (net.PacketConn, func(), error) {
	base := turn.NewSTUNConn(tc)
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: f.r.TLSAddr().String(), TURNServerAddr: f.r.TLSAddr().String(),
		Username: username, Password: password, Conn: base, LoggerFactory: lf, RTO: 100 * time.Millisecond,
	})
	if err != nil {
		base.Close()
		return nil, nil, err
	}
	if err := c.Listen(); err != nil {
		c.Close()
		base.Close()
		return nil, nil, err
	}
	relayed, err := c.Allocate()
	if err != nil {
		c.Close()
		base.Close()
		return nil, nil, err
	}
	return relayed, func() { relayed.Close(); c.Close(); base.Close() }, nil
}

// Issue 14 finding 7: only connectors the controller lists, with the key it
// lists, may register; a deleted or re-keyed connector is dropped.
func TestStaleConnectorsDropped(t *testing.T) {
	f := newFixture(t, nil)
	c1 := f.connectorCert(t, f.ca, "c1")
	c2 := f.connectorCert(t, f.ca, "c2")
	f.r.SetPolicy(controlapi.RelayPolicy{Revision: 1, Connectors: []controlapi.RelayConnector{
		{ID: "c1", KeySHA256: keyOf(t, c1)}, {ID: "c2", KeySHA256: keyOf(t, c2)}}})
	conn1, w := f.signal(t, &c1, &sigwire.Message{Type: sigwire.TypeHello, Role: sigwire.RoleConnector})
	if w.Type != sigwire.TypeWelcome {
		t.Fatalf("listed connector refused: %+v", w)
	}
	conn2, w := f.signal(t, &c2, &sigwire.Message{Type: sigwire.TypeHello, Role: sigwire.RoleConnector})
	if w.Type != sigwire.TypeWelcome {
		t.Fatalf("listed connector refused: %+v", w)
	}
	// Re-keyed: the old certificate (same id, another key) is refused.
	old := f.connectorCert(t, f.ca, "c1")
	if _, w := f.signal(t, &old, &sigwire.Message{Type: sigwire.TypeHello, Role: sigwire.RoleConnector}); w.Type != sigwire.TypeError {
		t.Fatalf("a connector with a replaced key registered: %+v", w)
	}
	c3 := f.connectorCert(t, f.ca, "c3")
	if _, w := f.signal(t, &c3, &sigwire.Message{Type: sigwire.TypeHello, Role: sigwire.RoleConnector}); w.Type != sigwire.TypeError {
		t.Fatalf("an unlisted connector registered: %+v", w)
	}
	// c1 deleted, c2 re-keyed: both registrations end.
	f.r.SetPolicy(controlapi.RelayPolicy{Revision: 2, Connectors: []controlapi.RelayConnector{{ID: "c2", KeySHA256: keyOf(t, c3)}}})
	for name, c := range map[string]*sigwire.Conn{"deleted": conn1, "re-keyed": conn2} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			_, err := c.Read()
			if err == nil {
				continue
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("%s connector still registered after 5 s", name)
			}
			break
		}
	}
	// The hub unregisters a connection after closing it: wait for that.
	deadline := time.Now().Add(5 * time.Second)
	for f.r.hub.connected("c1") || f.r.hub.connected("c2") {
		if time.Now().After(deadline) {
			t.Fatal("stale connectors still listed in the hub 5 s after their connections closed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// An older snapshot (a heartbeat racing the stream) changes nothing.
	f.r.SetPolicy(controlapi.RelayPolicy{Revision: 1, Connectors: []controlapi.RelayConnector{{ID: "c1", KeySHA256: keyOf(t, c1)}}})
	if _, w := f.signal(t, &c1, &sigwire.Message{Type: sigwire.TypeHello, Role: sigwire.RoleConnector}); w.Type != sigwire.TypeError {
		t.Fatalf("an older policy snapshot was applied: %+v", w)
	}
}

func keyOf(t testing.TB, c tls.Certificate) string {
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return pki.CertDigest(leaf.RawSubjectPublicKeyInfo)
}

// Issue 14 finding 6: the per-principal session quota is checked and
// reserved under one lock, so concurrent hellos never exceed it.
func TestSessionQuotaUnderConcurrency(t *testing.T) {
	const quota, tries = 3, 48
	f := newFixture(t, func(c *Config) { c.MaxSessionsPerPrincipal = quota })
	cc := f.connectorCert(t, f.ca, "c1")
	if _, w := f.signal(t, &cc, &sigwire.Message{Type: sigwire.TypeHello, Role: sigwire.RoleConnector}); w.Type != sigwire.TypeWelcome {
		t.Fatalf("connector: %+v", w)
	}
	_, dev, _ := ed25519.GenerateKey(rand.Reader)
	devCert, _ := pki.SelfSigned(dev, "device", time.Hour)
	tok := f.clientToken(t, "c1", dev, time.Now().Add(time.Minute))
	want := []string{f.r.TLSCertSHA256()}
	// Every client finishes its TLS handshake first, then all send hello at once.
	conns := make([]*sigwire.Conn, tries)
	for i := range conns {
		conf := pki.PinnedPeerConfig(func() []string { return want }, "postern-relay", []string{sigwire.ALPNSignal})
		conf.Certificates = []tls.Certificate{devCert}
		tc, err := tls.Dial("tcp", f.r.TLSAddr().String(), conf)
		if err != nil {
			t.Fatal(err)
		}
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		conns[i] = sigwire.NewConn(tc)
		defer conns[i].Close()
	}
	// All hellos pass authentication before any registers: a quota that is
	// checked at authentication and counted at registration admits them all.
	var arrived atomic.Int32
	all := make(chan struct{})
	f.r.hub.afterAuth = func() {
		if arrived.Add(1) == tries {
			close(all)
		}
		select {
		case <-all:
		case <-time.After(5 * time.Second):
		}
	}
	var welcomed atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := c.Write(&sigwire.Message{Type: sigwire.TypeHello, Role: sigwire.RoleClient, Connector: "c1", Token: tok}); err != nil {
				return
			}
			if m, err := c.Read(); err == nil && m.Type == sigwire.TypeWelcome {
				welcomed.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	if n := welcomed.Load(); n != quota {
		t.Fatalf("%d concurrent sessions admitted with a quota of %d", n, quota)
	}
	f.r.hub.mu.Lock()
	n := f.r.hub.perP["user-1"]
	f.r.hub.mu.Unlock()
	if n != quota {
		t.Fatalf("hub counts %d sessions, want %d", n, quota)
	}
}

func TestResolveRelayIP(t *testing.T) {
	ip := net.ParseIP
	for _, c := range []struct {
		name, listen  string
		public, relay net.IP
		want          string // "" = error
	}{
		{"specific listener", "127.0.0.1:3478", ip("203.0.113.9"), nil, "127.0.0.1"},
		{"explicit relay IP", "0.0.0.0:3478", ip("203.0.113.9"), ip("127.0.0.1"), "127.0.0.1"},
		{"wildcard, public IP local", ":3478", ip("127.0.0.1"), nil, "127.0.0.1"},
		{"wildcard, public IP not local", ":3478", ip("203.0.113.9"), nil, ""},
		{"relay IP not local", "127.0.0.1:3478", ip("127.0.0.1"), ip("203.0.113.9"), ""},
		{"relay IP wildcard", "127.0.0.1:3478", ip("127.0.0.1"), ip("0.0.0.0"), ""},
		{"families differ", "127.0.0.1:3478", ip("2001:db8::1"), nil, ""},
		{"listener host not an IP", "relay.example:3478", ip("127.0.0.1"), nil, ""},
		{"public IP wildcard", "127.0.0.1:3478", ip("0.0.0.0"), nil, ""},
	} {
		got, err := ResolveRelayIP(c.listen, c.public, c.relay)
		switch {
		case c.want == "" && err == nil:
			t.Errorf("%s: got %s, want an error", c.name, got)
		case c.want != "" && (err != nil || got.String() != c.want):
			t.Errorf("%s: got %v %v, want %s", c.name, got, err, c.want)
		}
	}
}

// Both sides behind networks that block UDP: the connector offers its own
// allocation on this relay, and the client's allocation may reach it (the
// relay bridges two allocations of one live session). Nothing else of the
// relay's addresses opens: not the advertised IP without such a session, and
// never through a server-reflexive or host candidate.
func TestRelayBridgesAllocationsOfOneSession(t *testing.T) {
	public := "203.0.113.51"
	f := publicRelay(t, public)
	tc := f.deviceTURN(t, "user-1", "dev-1")
	if err := tc.CreatePermission(udpAddr(public + ":4100")); err == nil {
		t.Fatal("permission to the relay's own address granted without a session")
	}
	f.session(t, sigwire.Candidate{Type: sigwire.CandRelay, Addr: public + ":4100"})
	if err := tc.CreatePermission(udpAddr(public + ":4100")); err != nil {
		t.Fatalf("permission to the connector's allocation on this relay refused: %v", err)
	}
	// Another device of the same user gets nothing from this session.
	other := f.deviceTURN(t, "user-1", "dev-2")
	if err := other.CreatePermission(udpAddr(public + ":4100")); err == nil {
		t.Fatal("another device reached the relay's address through someone else's session")
	}
}

// A TURN-over-TLS endpoint that closed stops counting against its
// principal's quota at once: a client that redials through the relay (a new
// TLS connection each time) is not refused for the endpoints it left. (The
// e2e suite's relay-over-TLS cell ran into the quota after reconnects.)
func TestClosedTLSEndpointsLeaveTheQuota(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxAllocationsPerPrincipal = 2 })
	u, p := deviceCreds("user-1", "dev-1")
	dial := func() (func(), error) {
		_, closeAll, err := f.allocateTLS(u, p)
		return closeAll, err
	}
	var closers []func()
	for i := 0; i < 2; i++ {
		cl, err := dial()
		if err != nil {
			t.Fatalf("allocation %d within the quota: %v", i, err)
		}
		closers = append(closers, cl)
	}
	if cl, err := dial(); err == nil {
		cl()
		t.Fatal("a third live endpoint was admitted over a quota of 2")
	}
	for _, cl := range closers {
		cl()
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.r.auth.endpointsOf("user-1") > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("closed TLS endpoints still count: %d", f.r.auth.endpointsOf("user-1"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	cl, err := dial()
	if err != nil {
		t.Fatalf("allocation after the old endpoints closed: %v", err)
	}
	cl()
}

// A UDP allocation its client deleted (Refresh with lifetime 0, as a
// closing TURN client sends) stops counting against its principal's quota
// at once, as a closed TLS endpoint does: clients open a fresh UDP socket
// per leg, and the e2e suite's repairs ran into the quota while the deleted
// allocations still counted for endpointIdle.
func TestDeletedUDPAllocationsLeaveTheQuota(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxAllocationsPerPrincipal = 2 })
	u, p := deviceCreds("user-1", "dev-1")
	var live []net.PacketConn
	for i := 0; i < 2; i++ {
		relayed, err := f.allocate(t, u, p)
		if err != nil {
			t.Fatalf("allocation %d within the quota: %v", i, err)
		}
		live = append(live, relayed)
	}
	if _, err := f.allocate(t, u, p); err == nil {
		t.Fatal("a third live endpoint was admitted over a quota of 2")
	}
	for _, relayed := range live {
		if err := relayed.Close(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.r.auth.endpointsOf("user-1") > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("deleted UDP allocations still count: %d", f.r.auth.endpointsOf("user-1"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := f.allocate(t, u, p); err != nil {
		t.Fatalf("allocation after the old ones were deleted: %v", err)
	}
}
