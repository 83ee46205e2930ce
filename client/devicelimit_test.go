package client

import (
	"io"
	"net"
	"testing"

	"postern.dev/postern/client/socks5"
	"postern.dev/postern/connector"
	"postern.dev/postern/internal/testenv"
)

// TestFlowLimitFallsOverToAnotherConnector: with two connectors in the
// network, each allowing this device one flow, the second flow is taken by
// whichever connector is not at its limit, and the third is refused with
// the limit (a SOCKS5 general failure) while both earlier flows keep
// echoing.
func TestFlowLimitFallsOverToAnotherConnector(t *testing.T) {
	_, echoPort := testenv.EchoTCP(t, "127.0.0.1:0")
	l := newLab(t, renderYAML(echoPort, 1))
	one := func(c *connector.Config) { c.MaxFlowsPerDevice = 1 }
	l.startConnectorWith("corp-a", nil, one)
	l.startConnectorWith("corp-b", nil, one)
	d, fe := l.newDaemon()
	l.login(d, "alice@example.com", "alice-password-1")
	waitConnectors(t, d, 2)

	var held []net.Conn
	for i := 0; i < 2; i++ {
		c, code, err := socksConnect(fe, "127.0.0.1", echoPort)
		if err != nil || code != 0 {
			t.Fatalf("flow %d: SOCKS reply %d, err %v; want one flow on each connector", i+1, code, err)
		}
		t.Cleanup(func() { c.Close() })
		held = append(held, c)
	}
	c, code, err := socksConnect(fe, "127.0.0.1", echoPort)
	if err == nil && code == 0 {
		c.Close()
		t.Fatal("a third flow was accepted with both connectors at their limit of one")
	}
	if code != socks5.ReplyGeneralFailure {
		t.Fatalf("third flow: SOCKS reply %d (err %v), want general failure (%d)", code, err, socks5.ReplyGeneralFailure)
	}
	for i, c := range held {
		msg := []byte("still here")
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("held flow %d: %v", i+1, err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
			t.Fatalf("held flow %d echo %q, %v", i+1, got, err)
		}
	}
}
