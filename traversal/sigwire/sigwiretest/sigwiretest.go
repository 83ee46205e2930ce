// Package sigwiretest opens signaling connections to a relay for tests of
// the relay and of the controller's relay policy: the TLS dial pinned to the
// relay's certificate digest, the hello and the relay's answer.
package sigwiretest

import (
	"crypto/tls"
	"testing"

	"postern.dev/postern/pki"
	"postern.dev/postern/traversal/sigwire"
)

// Hello opens a signaling connection to the relay at addr, accepting only a
// certificate with one of the digests in pins and presenting cert when it
// is not nil, sends hello and returns the connection (closed when the test
// ends) with the relay's answer (a welcome or an error). Failing to
// connect, send or read fails the test.
func Hello(t testing.TB, addr string, pins []string, cert *tls.Certificate, hello *sigwire.Message) (*sigwire.Conn, *sigwire.Message) {
	t.Helper()
	conf := pki.PinnedPeerConfig(func() []string { return pins }, "postern-relay", []string{sigwire.ALPNSignal})
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	}
	tc, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		t.Fatalf("dial relay %s: %v", addr, err)
	}
	c := sigwire.NewConn(tc)
	t.Cleanup(func() { c.Close() })
	if err := c.Write(hello); err != nil {
		t.Fatalf("hello to relay %s: %v", addr, err)
	}
	m, err := c.Read()
	if err != nil {
		t.Fatalf("answer to hello from relay %s: %v", addr, err)
	}
	return c, m
}
