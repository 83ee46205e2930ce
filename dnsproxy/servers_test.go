package dnsproxy

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// stopWithin calls g.Stop and fails the test when it has not returned
// within limit.
func stopWithin(t *testing.T, g *Servers, limit time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { g.Stop(time.Second); close(done) }()
	select {
	case <-done:
	case <-time.After(limit):
		t.Fatalf("Stop did not return within %v", limit)
	}
}

// TestServersStopAtOnce: servers stopped the moment StartServers returns
// are shut down cleanly (ActivateAndServe returns nil: the Shutdown took
// effect, the server did not merely die on its closed socket) and their
// sockets are closed. Without the wait for each server to mark itself
// started, miekg/dns ignores the Shutdown.
func TestServersStopAtOnce(t *testing.T) {
	checkGoroutines(t)
	for i := 0; i < 50; i++ {
		pc, ln := listenBoth(t)
		h := dns.HandlerFunc(staticAnswer)
		g := StartServers(&dns.Server{PacketConn: pc, Handler: h}, &dns.Server{Listener: ln, Handler: h})
		stopWithin(t, g, 10*time.Second)
		for j := 0; j < 2; j++ {
			select {
			case err := <-g.Stopped():
				if err != nil {
					t.Fatalf("run %d: server %d ended with %v, want a clean shutdown", i, j, err)
				}
			default:
				t.Fatalf("run %d: %d of 2 servers reported stopping after Stop returned", i, j)
			}
		}
		if _, _, err := pc.ReadFrom(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("run %d: UDP socket still open after Stop: read gave %v", i, err)
		}
		if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("run %d: TCP listener still open after Stop: accept gave %v", i, err)
		}
	}
}

// TestServersAnswerUntilStopped: both servers answer once StartServers
// returns, and no longer after Stop.
func TestServersAnswerUntilStopped(t *testing.T) {
	checkGoroutines(t)
	pc, ln := listenBoth(t)
	h := dns.HandlerFunc(staticAnswer)
	g := StartServers(&dns.Server{PacketConn: pc, Handler: h}, &dns.Server{Listener: ln, Handler: h})
	addr := pc.LocalAddr().String()
	for _, netw := range []string{"udp", "tcp"} {
		if got := answerAddrs(query(t, netw, addr, "www.example.com.", dns.TypeA)); len(got) != 1 || got[0] != "192.0.2.99" {
			t.Errorf("%s answer %v, want [192.0.2.99]", netw, got)
		}
	}
	stopWithin(t, g, 10*time.Second)
	m := new(dns.Msg)
	m.SetQuestion("www.example.com.", dns.TypeA)
	for _, netw := range []string{"udp", "tcp"} {
		c := &dns.Client{Net: netw, Timeout: 300 * time.Millisecond}
		if r, _, err := c.Exchange(m, addr); err == nil {
			t.Errorf("%s query answered after Stop: %v", netw, r.Answer)
		}
	}
}

// TestStartServersWhenOneCannotStart: a server that fails to start neither
// blocks StartServers nor the others; its error comes out of Stopped, and
// a NotifyStartedFunc the caller set is still called for the one that
// started.
func TestStartServersWhenOneCannotStart(t *testing.T) {
	checkGoroutines(t)
	pc, ln := listenBoth(t)
	ln.Close()
	notified := make(chan struct{}, 1)
	good := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(staticAnswer), NotifyStartedFunc: func() { notified <- struct{}{} }}
	bad := &dns.Server{Handler: dns.HandlerFunc(staticAnswer)} // no socket: ActivateAndServe fails at once
	g := StartServers(bad, good)
	select {
	case err := <-g.Stopped():
		if err == nil {
			t.Error("a server without a socket stopped without an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the failed server's error did not come out of Stopped")
	}
	select {
	case <-notified:
	default:
		t.Error("the caller's NotifyStartedFunc was not called")
	}
	if got := answerAddrs(query(t, "udp", pc.LocalAddr().String(), "www.example.com.", dns.TypeA)); len(got) != 1 {
		t.Errorf("the server that started does not answer: %v", got)
	}
	stopWithin(t, g, 10*time.Second)
}

// staticAnswer answers like staticUpstream over any transport.
func staticAnswer(w dns.ResponseWriter, r *dns.Msg) { staticUpstream("", w, r) }
