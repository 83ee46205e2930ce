// Package quictest connects QUIC endpoints over loopback for tests: a
// client connection with the server's side of it, and a flow stream opened
// with its header as the client opens one. It is apart from testenv because
// it needs pki, whose own tests use testenv.
package quictest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/pki"
	"postern.dev/postern/wire"
)

// ALPN is the protocol both ends of a Pair negotiate.
const ALPN = "quictest"

// Pair returns a client connection, dialled with clientConf (nil: quic-go's
// defaults), and the server's side of it, over loopback UDP. Both close
// when the test ends.
func Pair(t testing.TB, clientConf *quic.Config) (client, server *quic.Conn) {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.SelfSigned(key, "quictest", time.Hour)
	if err != nil {
		t.Fatalf("quictest: server certificate: %v", err)
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{ALPN}},
		&quic.Config{MaxIdleTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("quictest: listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, err = quic.DialAddr(ctx, ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{ALPN}}, clientConf)
	if err != nil {
		t.Fatalf("quictest: dial %s: %v", ln.Addr(), err)
	}
	t.Cleanup(func() { client.CloseWithError(0, "") })
	server, err = ln.Accept(ctx)
	if err != nil {
		t.Fatalf("quictest: accept: %v", err)
	}
	t.Cleanup(func() { server.CloseWithError(0, "") })
	return client, server
}

// OpenFlow opens a stream on c, writes h on it as a client opens a flow,
// and returns it with s's side of it, whose header has been read and which
// has not answered.
func OpenFlow(t testing.TB, c, s *quic.Conn, h wire.OpenHeader) (cs, ss *quic.Stream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cs, err := c.OpenStreamSync(ctx)
	if err != nil {
		t.Fatalf("quictest: open stream: %v", err)
	}
	if err := wire.WriteOpen(cs, h); err != nil {
		t.Fatalf("quictest: write header: %v", err)
	}
	ss, err = s.AcceptStream(ctx)
	if err != nil {
		t.Fatalf("quictest: accept stream: %v", err)
	}
	if _, _, err := wire.ReadFrame(ss); err != nil {
		t.Fatalf("quictest: read header: %v", err)
	}
	return cs, ss
}
