package connector

import (
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/wire"
)

func (l *lab) flowCount() int {
	n := 0
	l.c.eachSession(func(s *session) {
		s.mu.Lock()
		n += len(s.flows)
		s.mu.Unlock()
	})
	return n
}

// TestIdleFlowsHoldOneGoroutine: on Linux an established TCP flow whose
// destination is silent holds one goroutine at the connector (its upload
// side, waiting on the stream); its download side waits in the shared
// readiness set and wakes for every answer.
func TestIdleFlowsHoldOneGoroutine(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the shared readiness set is Linux's")
	}
	e := newEnv(t, func(c *Config) { c.parkAfter = 50 * time.Millisecond })
	cc := e.alice.connect()
	const n = 100
	// Every flow echoes once, so both sides have run, and then idles.
	var sts []*quic.Stream
	for i := 0; i < n; i++ {
		st := cc.mustOpen(e.echoFlow(e.resourceID("echo")), fmt.Sprintf("flow %d", i))
		echoRoundTrip(t, st, "hello")
		sts = append(sts, st)
	}
	testenv.Eventually(t, 10*time.Second, "the flows' download sides parked", func() bool { return e.c.ready.parked.Load() == n })
	base := runtime.NumGoroutine()
	for _, st := range sts[:10] {
		st.Close()
	}
	testenv.Eventually(t, 10*time.Second, "ten closed flows gone", func() bool { return e.flowCount() == n-10 })
	// Ten flows ended: each took its connector goroutine (one) and the
	// in-process echo server's (one) with it. Two goroutines a flow at the
	// connector would make it thirty.
	var freed int
	testenv.Eventually(t, 10*time.Second, "the closed flows' goroutines ended", func() bool { freed = base - runtime.NumGoroutine(); return freed >= 20 })
	if freed > 25 {
		t.Fatalf("ten idle flows held %d goroutines (connector and echo server), want about 20", freed)
	}
	// The parked ones still wake for every answer.
	for round := 0; round < 3; round++ {
		for i, st := range sts[10:] {
			echoRoundTrip(t, st, fmt.Sprintf("again %d %d", round, i))
		}
	}
	if got := e.c.ready.registered(); got != n-10 {
		t.Fatalf("%d download sides registered, want %d", got, n-10)
	}
	testenv.Eventually(t, 10*time.Second, "the answered flows parked again", func() bool { return e.c.ready.parked.Load() == n-10 })
}

// TestKilledFlowEndsWhileDownloadParked: a flow whose client half-closed
// (upload done) and whose destination stays open and silent has only its
// download side left, parked in the readiness set. Closing the flow by
// policy closes the destination under it, which the set never reports; the
// flow must still end.
func TestKilledFlowEndsWhileDownloadParked(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.parkAfter = time.Millisecond })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	gotEOF := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c) // the client's half-close; then stay open and silent
		gotEOF <- c
	}()
	cc := e.alice.connect()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	st := cc.mustOpen(wire.OpenHeader{Proto: wire.ProtoTCP, Port: port, ResourceID: e.resourceID("lab"), Destination: "127.0.0.1"}, "flow to a silent server")
	st.Close()
	var held net.Conn
	select {
	case held = <-gotEOF:
		defer held.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the client's half-close did not reach the destination")
	}
	if runtime.GOOS == "linux" {
		testenv.Eventually(t, 10*time.Second, "the download side parked", func() bool { return e.c.ready.parked.Load() == 1 })
	}
	e.c.eachSession(func(s *session) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for f := range s.flows {
			go f.kill(resultPolicy)
		}
	})
	testenv.Eventually(t, 10*time.Second, "the killed flow gone", func() bool { return e.flowCount() == 0 })
	_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = st.Read(make([]byte, 1))
	var se *quic.StreamError
	if !errors.As(err, &se) || uint64(se.ErrorCode) != wire.CodeFlowPolicy {
		t.Fatalf("the client's read after the kill: %v, want a reset with the policy code", err)
	}
}
