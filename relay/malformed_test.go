package relay

import (
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/pion/stun"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/pki"
	"postern.dev/postern/traversal/sigwire"
)

// sendIndicationEmptyPeer is a Send indication whose last attribute, its
// XOR-PEER-ADDRESS, is empty. It needs no credential, only the 5-tuple of an allocation, and
// pion/stun v0.6.1 panics decoding it (in pion/turn's server read loop,
// which has no recover: the whole relay would stop).
func sendIndicationEmptyPeer(t testing.TB) []byte {
	t.Helper()
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		stun.RawAttribute{Type: stun.AttrData, Value: []byte("x")}, stun.RawAttribute{Type: stun.AttrXORPeerAddress})
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

// Issue 12: one datagram from a client's own address must not crash the
// relay, over UDP or TURN-over-TLS. The guard (traversal/stunguard) drops
// the message before pion and counts it; the relay goes on serving.
func TestMalformedSTUNDoesNotCrashRelay(t *testing.T) {
	f := newFixture(t, nil)
	bad := sendIndicationEmptyPeer(t)
	u, p := creds(time.Now().Add(time.Minute), "user-m", secret)

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.turnClientOn(t, pc, u, p); err != nil {
		t.Fatalf("allocate over UDP: %v", err)
	}
	if _, err := pc.WriteTo(bad, f.r.UDPAddr()); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "the malformed datagram is counted", func() bool {
		return f.r.Stats()["postern_relay_refusals_total"] >= 1
	})

	want := []string{f.r.TLSCertSHA256()}
	tc, err := tls.Dial("tcp", f.r.TLSAddr().String(), pki.PinnedPeerConfig(func() []string { return want }, "postern-relay", []string{sigwire.ALPNTURN}))
	if err != nil {
		t.Fatal(err)
	}
	_, closeAll, err := f.allocateTLSOn(tc, u, p)
	if err != nil {
		t.Fatalf("allocate over TLS: %v", err)
	}
	defer closeAll()
	if _, err := tc.Write(bad); err != nil {
		t.Fatal(err)
	}

	// Still serving on both transports (a panic in pion's read loop
	// would have ended this test binary).
	if _, err := f.allocate(t, u, p); err != nil {
		t.Fatalf("UDP allocation after the malformed messages: %v", err)
	}
	f.turnClientTLS(t, u, p)
}
