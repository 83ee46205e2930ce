package relay

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v2"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/pki"
	"postern.dev/postern/traversal/sigwire"
)

// labRoundTrip is what a relayed round trip saw.
type labRoundTrip struct {
	relayed  net.Addr // the relayed address the allocation advertised
	seenFrom net.Addr // the source address the peer saw
}

// roundTrip runs a connector in peerNS (its signaling and a UDP socket at
// peerIP) and a client in cliNS (at cliIP) that signals, allocates on the
// relay, sends to the connector's candidate through TURN, and reads the
// connector's echo.
func (f *fixture) roundTrip(t *testing.T, l *nsLab, relayUDP, relayTLS, cliNS, cliIP, peerNS, peerIP string) labRoundTrip {
	t.Helper()
	pin := func() []string { return []string{pki.CertDigest(f.rcert.Certificate[0])} }
	// dial opens the signaling connection; it runs inside a namespace, on
	// another goroutine, so it returns its error.
	dial := func(cert tls.Certificate) (*tls.Conn, error) {
		conf := pki.PinnedPeerConfig(pin, "postern-relay", []string{sigwire.ALPNSignal})
		conf.Certificates = []tls.Certificate{cert}
		d := &net.Dialer{Timeout: 10 * time.Second}
		tc, err := tls.DialWithDialer(d, "tcp", relayTLS, conf)
		if err != nil {
			return nil, fmt.Errorf("dial relay %s: %w", relayTLS, err)
		}
		return tc, nil
	}
	sayHello := func(tc *tls.Conn, hello *sigwire.Message) (*sigwire.Conn, *sigwire.Message) {
		c := sigwire.NewConn(tc)
		t.Cleanup(func() { c.Close() })
		if err := c.Write(hello); err != nil {
			t.Fatal(err)
		}
		_ = tc.SetReadDeadline(time.Now().Add(10 * time.Second))
		m, err := c.Read()
		if err != nil {
			t.Fatalf("hello: %v", err)
		}
		return c, m
	}
	var (
		peer, cpc net.PacketConn
		ptc, ctc  *tls.Conn
	)
	cc := f.connectorCert(t, f.ca, "c1")
	l.in(peerNS, func() error {
		var err error
		if peer, err = net.ListenPacket("udp", peerIP+":0"); err != nil {
			return err
		}
		ptc, err = dial(cc)
		return err
	})
	t.Cleanup(func() { peer.Close() })
	conn, w := sayHello(ptc, &sigwire.Message{Type: sigwire.TypeHello, Role: sigwire.RoleConnector})
	if w.Type != sigwire.TypeWelcome {
		t.Fatalf("connector hello: %+v", w)
	}
	_, dev, _ := ed25519.GenerateKey(rand.Reader)
	devCert, _ := pki.SelfSigned(dev, "device", time.Hour)
	l.in(cliNS, func() error {
		var err error
		if cpc, err = net.ListenPacket("udp", cliIP+":0"); err != nil {
			return err
		}
		ctc, err = dial(devCert)
		return err
	})
	t.Cleanup(func() { cpc.Close() })
	cl, w := sayHello(ctc, &sigwire.Message{Type: sigwire.TypeHello, Role: sigwire.RoleClient, Connector: "c1",
		Token: f.clientToken(t, "c1", dev, time.Now().Add(time.Minute))})
	t.Cleanup(func() { cpc.Close() })
	if w.Type != sigwire.TypeWelcome {
		t.Fatalf("client hello: %+v", w)
	}
	session := w.Session
	if err := cl.Write(&sigwire.Message{Type: sigwire.TypeOffer, Ufrag: "u", Pwd: "p"}); err != nil {
		t.Fatal(err)
	}
	if m, err := conn.Read(); err != nil || m.Type != sigwire.TypeOffer {
		t.Fatalf("offer: %+v %v", m, err)
	}
	if err := conn.Write(&sigwire.Message{Type: sigwire.TypeAnswer, Session: session, Ufrag: "cu", Pwd: "cp",
		Candidates: []sigwire.Candidate{{Type: sigwire.CandHost, Addr: peer.LocalAddr().String()}}}); err != nil {
		t.Fatal(err)
	}
	if m, err := cl.Read(); err != nil || m.Type != sigwire.TypeAnswer {
		t.Fatalf("answer: %+v %v", m, err)
	}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	u := controlapi.TURNDeviceUsername(time.Now().Add(time.Minute), "user-1", "dev-1")
	tc, err := turn.NewClient(&turn.ClientConfig{STUNServerAddr: relayUDP, TURNServerAddr: relayUDP,
		Username: u, Password: controlapi.TURNPassword(secret, u), Conn: cpc, LoggerFactory: lf, RTO: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tc.Close)
	if err := tc.Listen(); err != nil {
		t.Fatal(err)
	}
	relayed, err := tc.Allocate()
	if err != nil {
		t.Fatalf("allocate on %s: %v", relayUDP, err)
	}
	t.Cleanup(func() { relayed.Close() })
	if _, err := relayed.WriteTo([]byte("ping"), peer.LocalAddr()); err != nil {
		t.Fatalf("send through the relay: %v", err)
	}
	buf := make([]byte, 64)
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := peer.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("the connector got no relayed packet: %q %v", buf[:n], err)
	}
	if _, err := peer.WriteTo([]byte("pong"), from); err != nil {
		t.Fatal(err)
	}
	_ = relayed.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, back, err := relayed.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "pong" || back.String() != peer.LocalAddr().String() {
		t.Fatalf("no echo through the relay from %s (sent to %s): %q from %v, %v", peer.LocalAddr(), from, buf[:n], back, err)
	}
	return labRoundTrip{relayed: relayed.LocalAddr(), seenFrom: from}
}

// A relay host with two interfaces, listening on one of them: relayed
// packets to a peer behind the other leave from the listen IP (the address
// the peer was told), not from the interface the route picks. The old relay
// bound relayed sockets to the wildcard and sent from 198.51.100.1.
//
//	cli 203.0.113.2 --- (203.0.113.1 | 198.51.100.1) rel --- 198.51.100.2 peer
func TestLabRelayedPacketsLeaveFromListenIP(t *testing.T) {
	l := newNSLab(t, "cli", "rel", "peer")
	l.link("cli", "eth", "203.0.113.2/24", "rel", "pub", "203.0.113.1/24")
	l.link("peer", "eth", "198.51.100.2/24", "rel", "lan", "198.51.100.1/24")
	l.sh("ip", "-n", l.ns("peer"), "route", "add", "default", "via", "198.51.100.1")
	l.sh("ip", "-n", l.ns("cli"), "route", "add", "default", "via", "203.0.113.1")
	f := newKeys(t)
	l.startRelay(f, "rel", labRelayConfig{ListenUDP: "203.0.113.1:3478", ListenTLS: "203.0.113.1:4443", PublicIP: "203.0.113.1"})
	rt := f.roundTrip(t, l, "203.0.113.1:3478", "203.0.113.1:4443", "cli", "203.0.113.2", "peer", "198.51.100.2")
	if rt.seenFrom.String() != rt.relayed.String() {
		t.Fatalf("relayed packets leave from %s, but the allocation advertised %s", rt.seenFrom, rt.relayed)
	}
	if h, _, _ := net.SplitHostPort(rt.seenFrom.String()); h != "203.0.113.1" {
		t.Fatalf("relayed packets leave from %s, not from the listen IP 203.0.113.1", h)
	}
}

// A relay behind 1:1 NAT (as on cloud VMs): its public IP is no address of
// the host, the listener is a wildcard and --relay-ip names the local
// address the public one maps to. Allocations advertise the public IP, the
// peer sees relayed packets from exactly that address, and its answer comes
// back through the allocation.
//
//	cli 203.0.113.2 --- (203.0.113.254, 203.0.113.1 DNAT/SNAT) nat --- 198.18.0.1 rel
//	                                                           nat --- 198.51.100.2 peer
func TestLabRelayBehindOneToOneNAT(t *testing.T) {
	l := newNSLab(t, "cli", "nat", "rel", "peer")
	l.link("cli", "eth", "203.0.113.2/24", "nat", "pub", "203.0.113.254/24")
	l.sh("ip", "-n", l.ns("nat"), "addr", "add", "203.0.113.1/32", "dev", "pub")
	l.link("nat", "rel", "198.18.0.254/24", "rel", "eth", "198.18.0.1/24")
	l.link("nat", "lan", "198.51.100.254/24", "peer", "eth", "198.51.100.2/24")
	l.sh("ip", "-n", l.ns("cli"), "route", "add", "default", "via", "203.0.113.254")
	l.sh("ip", "-n", l.ns("rel"), "route", "add", "default", "via", "198.18.0.254")
	l.sh("ip", "-n", l.ns("peer"), "route", "add", "default", "via", "198.51.100.254")
	l.sh("ip", "netns", "exec", l.ns("nat"), "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	l.sh("ip", "netns", "exec", l.ns("nat"), "nft", `table ip nat {
		chain pre { type nat hook prerouting priority -100; ip daddr 203.0.113.1 dnat to 198.18.0.1; }
		chain post { type nat hook postrouting priority 100; ip saddr 198.18.0.1 snat to 203.0.113.1; }
	}`)
	f := newKeys(t)
	l.startRelay(f, "rel", labRelayConfig{ListenUDP: "0.0.0.0:3478", ListenTLS: "0.0.0.0:4443", PublicIP: "203.0.113.1", RelayIP: "198.18.0.1"})
	rt := f.roundTrip(t, l, "203.0.113.1:3478", "203.0.113.1:4443", "cli", "203.0.113.2", "peer", "198.51.100.2")
	if h, _, _ := net.SplitHostPort(rt.relayed.String()); h != "203.0.113.1" {
		t.Fatalf("allocation advertised %s, not the public IP", rt.relayed)
	}
	if rt.seenFrom.String() != rt.relayed.String() {
		t.Fatalf("peer saw relayed packets from %s, the allocation advertised %s", rt.seenFrom, rt.relayed)
	}
}
