package connector

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/wire"
)

func TestDeviceFlowsCount(t *testing.T) {
	d := newDeviceFlows(2)
	if !d.acquire("a") || !d.acquire("a") {
		t.Fatal("two flows under a limit of 2 refused")
	}
	if d.acquire("a") {
		t.Fatal("a third flow over a limit of 2 accepted")
	}
	if !d.acquire("b") {
		t.Fatal("another device refused")
	}
	d.release("a")
	if !d.acquire("a") {
		t.Fatal("a flow after one ended refused")
	}
	d.release("a")
	d.release("a")
	d.release("b")
	if len(d.n) != 0 {
		t.Fatalf("devices without flows still counted: %v", d.n)
	}
	now := time.Unix(1000, 0)
	w := d.warn
	if !w.Allow("a", now) || w.Allow("a", now.Add(time.Second)) || !w.Allow("b", now) {
		t.Fatal("refusals not logged once per device and interval")
	}
}

func TestOpenRefusesNegativeFlowLimit(t *testing.T) {
	_, err := Open(Config{StateDir: t.TempDir(), MaxFlowsPerDevice: -1})
	if err == nil || !strings.Contains(err.Error(), "max flows per device -1") {
		t.Fatalf("Open with MaxFlowsPerDevice -1: %v", err)
	}
}

// TestDeviceFlowLimit: a device's flows over all its connections are bounded;
// more are answered at once with the limit, while its open flows and other
// devices go on; a flood of refused streams leaves nothing behind; a closed
// flow frees its place.
func TestDeviceFlowLimit(t *testing.T) {
	const limit = 4
	e := newEnv(t, func(c *Config) { c.MaxFlowsPerDevice = limit })
	a1, a2 := e.alice.connect(), e.alice.connect()
	echo := e.echoFlow(e.resourceID("echo"))
	var held []*quic.Stream
	for i := 0; i < limit; i++ {
		cc := a1
		if i%2 == 1 {
			cc = a2
		}
		held = append(held, cc.mustOpen(echo, fmt.Sprintf("flow %d", i)))
	}
	for i, cc := range []*clientConn{a1, a2} {
		start := time.Now()
		_, st, msg := cc.open(echo)
		if st != wire.StatusTooManyFlows || !strings.Contains(msg, fmt.Sprintf("%d flows open", limit)) {
			t.Fatalf("flow over the limit on connection %d: %v %q, want too many flows", i+1, st, msg)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("refusal took %v", took)
		}
	}
	for i, f := range held {
		echoRoundTrip(t, f, fmt.Sprintf("held flow %d", i))
	}
	bob := e.login("bob@example.com", "bob-password-12").connect()
	echoRoundTrip(t, bob.mustOpen(wire.OpenHeader{Proto: wire.ProtoTCP, Port: e.echoPort, ResourceID: e.resourceID("crm"), Destination: "127.0.0.1"}, "another device's flow"), "bob")

	// A flood of streams over the limit, 64 at a time.
	base := runtime.NumGoroutine()
	var wg sync.WaitGroup
	var mu sync.Mutex
	wrong := map[string]int{}
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 8; i++ {
				st, err := a1.conn.OpenStreamSync(t.Context())
				if err != nil {
					mu.Lock()
					wrong["open: "+err.Error()]++
					mu.Unlock()
					return
				}
				_ = wire.WriteOpen(st, echo)
				_ = st.SetReadDeadline(time.Now().Add(15 * time.Second))
				s, _, err := wire.ReadStatus(st)
				if err != nil || s != wire.StatusTooManyFlows {
					mu.Lock()
					wrong[fmt.Sprintf("%v %v", s, err)]++
					mu.Unlock()
				}
				st.CancelRead(0)
				st.CancelWrite(0)
			}
		}()
	}
	wg.Wait()
	if len(wrong) > 0 {
		t.Fatalf("flood of 512 streams over the limit: unexpected answers %v", wrong)
	}
	e.eventually(10*time.Second, "goroutines back to where they were before the flood", func() bool {
		return runtime.NumGoroutine() <= base+4
	})
	if n := e.c.devFlows.open(pkiThumb(e.alice.key.Public().(ed25519.PublicKey))); n != limit {
		t.Fatalf("alice counted with %d flows after the flood, want %d", n, limit)
	}

	// A closed flow frees its place.
	held[0].Close()
	held[0].CancelRead(0)
	e.eventually(10*time.Second, "a place freed by a closed flow", func() bool {
		return e.c.devFlows.open(pkiThumb(e.alice.key.Public().(ed25519.PublicKey))) < limit
	})
	echoRoundTrip(t, a2.mustOpen(echo, "flow after one closed"), "again")
}

// TestPreAuthFlowsBounded: before its token's verdict a connection holds at
// most maxPendingFlows flows, counted from their arrival: a stream over
// that is reset at once, without a goroutine waiting for its header, while
// the pending ones are served once the token is accepted.
func TestPreAuthFlowsBounded(t *testing.T) {
	e := newEnv(t, nil)
	tr := e.alice.token()
	conn, err := e.alice.dial(tr.CertSHA256)
	if err != nil {
		t.Fatal(err)
	}
	ctrl, err := conn.OpenStreamSync(t.Context()) // no token yet
	if err != nil {
		t.Fatal(err)
	}
	echo := e.echoFlow(e.resourceID("echo"))
	var pending []*quic.Stream
	for i := 0; i < maxPendingFlows; i++ {
		st, err := conn.OpenStreamSync(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := wire.WriteOpen(st, echo); err != nil {
			t.Fatal(err)
		}
		pending = append(pending, st)
	}
	e.eventually(10*time.Second, "pending flows counted", func() bool { return e.sessionPending() == maxPendingFlows })

	// Streams over the bound, without headers: each is reset at once.
	base := runtime.NumGoroutine()
	for i := 0; i < 200; i++ {
		st, err := conn.OpenStreamSync(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = st.Write([]byte{0}) // announce the stream
		_ = st.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = st.Read(make([]byte, 1))
		var se *quic.StreamError
		if !errors.As(err, &se) || uint64(se.ErrorCode) != wire.CodeFlowRefused {
			t.Fatalf("stream %d over the bound: read %v, want a reset with CodeFlowRefused", i, err)
		}
	}
	if n := runtime.NumGoroutine(); n > base+20 {
		t.Fatalf("goroutines %d after 200 refused streams, %d before", n, base)
	}

	// The token: the pending flows are served.
	if err := wire.WriteFrame(ctrl, wire.KindToken, []byte(tr.Token)); err != nil {
		t.Fatal(err)
	}
	if st, msg, err := wire.ReadStatus(ctrl); err != nil || st != wire.StatusOK {
		t.Fatalf("token: %v %v %s", err, st, msg)
	}
	for i, st := range pending {
		_ = st.SetReadDeadline(time.Now().Add(15 * time.Second))
		s, msg, err := wire.ReadStatus(st)
		if err != nil || s != wire.StatusOK {
			t.Fatalf("pending flow %d: %v %v %s", i, err, s, msg)
		}
		_ = st.SetReadDeadline(time.Time{})
		if i%64 == 0 {
			echoRoundTrip(t, st, fmt.Sprintf("pending flow %d", i))
		}
	}
	e.eventually(5*time.Second, "pending count back to zero", func() bool { return e.sessionPending() == 0 })
}

// sessionPending is the pending count of the connector's only session.
func (e *env) sessionPending() int64 {
	e.c.mu.Lock()
	defer e.c.mu.Unlock()
	var n int64
	for s := range e.c.sessions {
		n += s.pending.Load()
	}
	return n
}

// TestNoTokenClosesConnection: a connection that opens its control stream
// and never sends a token is closed after authWait, not kept alive by its
// keepalives.
func TestNoTokenClosesConnection(t *testing.T) {
	e := newEnv(t, nil)
	conn, err := e.alice.dial(e.alice.token().CertSHA256)
	if err != nil {
		t.Fatal(err)
	}
	ctrl, err := conn.OpenStreamSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = ctrl.Write([]byte{0}) // the start of a frame, never finished
	select {
	case <-conn.Context().Done():
	case <-time.After(authWait + 5*time.Second):
		t.Fatalf("connection without a token still open %v after its control stream", authWait+5*time.Second)
	}
	var ae *quic.ApplicationError
	if err := context.Cause(conn.Context()); !errors.As(err, &ae) || uint64(ae.ErrorCode) != wire.CodeUnauthenticated || !strings.Contains(ae.ErrorMessage, "no connection token within") {
		t.Fatalf("close cause %v, want unauthenticated: no connection token within ...", err)
	}
}
