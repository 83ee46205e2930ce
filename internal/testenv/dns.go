package testenv

import (
	"net"
	"testing"

	"github.com/miekg/dns"
)

// ServeDNS serves h on a free loopback UDP port until the test ends and
// returns the address; the server answers by the time ServeDNS returns.
func ServeDNS(t testing.TB, h dns.Handler) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dns.Server{PacketConn: pc, Handler: h}
	started := make(chan struct{})
	s.NotifyStartedFunc = func() { close(started) }
	go func() { _ = s.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = s.Shutdown() })
	return pc.LocalAddr().String()
}
