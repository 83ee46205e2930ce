package client

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/internal/testenv/quictest"
	"postern.dev/postern/wire"
)

// quicPair returns a client connection, with the pool's QUIC settings, and
// the server's side of it, over loopback UDP.
func quicPair(t *testing.T) (client, server *quic.Conn) {
	return quictest.Pair(t, quicConfig())
}

// openPending opens a flow stream with a header and returns it with the
// server's side of it, which has not answered.
func openPending(t *testing.T, c, s *quic.Conn) (*quic.Stream, *quic.Stream) {
	t.Helper()
	return quictest.OpenFlow(t, c, s, wire.OpenHeader{Proto: wire.ProtoTCP, Port: 80, ResourceID: "r", Destination: "192.0.2.1"})
}

// streamReset reports whether the peer reset ss's receive side (a read
// fails with a stream error) within a few seconds.
func streamReset(t *testing.T, ss *quic.Stream) bool {
	t.Helper()
	_ = ss.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := ss.Read(make([]byte, 1))
	var se *quic.StreamError
	return errors.As(err, &se) && se.ErrorCode == streamErrAborted
}

func TestAwaitStatusAnswer(t *testing.T) {
	c, s := quicPair(t)
	for _, want := range []wire.Status{wire.StatusOK, wire.StatusRefused} {
		cs, ss := openPending(t, c, s)
		if err := wire.WriteStatus(ss, want, "msg"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, msg, err := awaitStatus(ctx, c, &connEntry{}, cs, true)
		cancel()
		if err != nil || st != want || msg != "msg" {
			t.Fatalf("awaitStatus = %v %q %v, want %v", st, msg, err, want)
		}
		// The stream stays usable after the answer, also once the
		// deadline and the suspect check would have fired.
		time.Sleep(2 * suspectCheck)
		if _, err := cs.Write([]byte("x")); err != nil {
			t.Fatalf("write after the answer: %v", err)
		}
		b := make([]byte, 1)
		_ = ss.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := ss.Read(b); err != nil || b[0] != 'x' {
			t.Fatalf("read after the answer: %v", err)
		}
	}
}

func TestAwaitStatusTimeout(t *testing.T) {
	c, s := quicPair(t)
	cs, ss := openPending(t, c, s)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := awaitStatus(ctx, c, &connEntry{}, cs, false)
	var fe *FlowError
	if !errors.As(err, &fe) || fe.Status != wire.StatusTimeout || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a StatusTimeout FlowError", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("gave up after %v", took)
	}
	if !streamReset(t, ss) {
		t.Fatal("the stream was not reset after the timeout")
	}
}

func TestAwaitStatusSuspect(t *testing.T) {
	c, s := quicPair(t)
	cs, ss := openPending(t, c, s)
	e := &connEntry{}
	e.info.Name = "corp-a"
	time.AfterFunc(250*time.Millisecond, func() { e.suspect.Store(true) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err := awaitStatus(ctx, c, e, cs, true)
	var fe *FlowError
	if err == nil || errors.As(err, &fe) || ctx.Err() != nil {
		t.Fatalf("err = %v, want a plain error before the deadline (try the next connector)", err)
	}
	if !streamReset(t, ss) {
		t.Fatal("the stream was not reset after the connection turned suspect")
	}

	// Without alternatives, a suspect connection is waited for.
	cs, ss = openPending(t, c, s)
	time.AfterFunc(3*suspectCheck, func() { _ = wire.WriteStatus(ss, wire.StatusOK, "") })
	if st, _, err := awaitStatus(ctx, c, e, cs, false); err != nil || st != wire.StatusOK {
		t.Fatalf("without alternatives: %v %v", st, err)
	}
}

func TestAwaitStatusConnectionLost(t *testing.T) {
	c, s := quicPair(t)
	cs, _ := openPending(t, c, s)
	time.AfterFunc(50*time.Millisecond, func() { s.CloseWithError(0, "gone") })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err := awaitStatus(ctx, c, &connEntry{}, cs, false)
	var fe *FlowError
	if err == nil || errors.As(err, &fe) || ctx.Err() != nil {
		t.Fatalf("err = %v, want a plain error at once (try the next connector)", err)
	}
}

// TestAwaitStatusNoGoroutine: waiting for the status parks no goroutine
// besides the caller's (the hand-off each flow opening used to pay).
func TestAwaitStatusNoGoroutine(t *testing.T) {
	c, s := quicPair(t)
	cs, ss := openPending(t, c, s)
	done := make(chan error, 1)
	go func() {
		_, _, err := awaitStatus(context.Background(), c, &connEntry{}, cs, true)
		done <- err
	}()
	var stacks string
	testenv.Eventually(t, 5*time.Second, "awaitStatus blocked in its read", func() bool {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		return strings.Contains(stacks, "wire.ReadStatus")
	})
	// Judged by the goroutines' creators, not by their number: quic-go and
	// the runtime start and end goroutines of their own at any time.
	if strings.Contains(stacks, "created by postern.dev/postern/client.awaitStatus") {
		t.Errorf("awaitStatus started a goroutine:\n%s", stacks)
	}
	_ = wire.WriteStatus(ss, wire.StatusOK, "")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// bufferedApp is a readyConn holding bytes the application sent before the
// flow was spliced; it records whether the first read ran on the goroutine
// that called spliceReady.
type bufferedApp struct {
	net.Conn
	mu       sync.Mutex
	data     []byte
	inline   atomic.Int32 // 1: first read inline, 2: on another goroutine
	closedCh chan struct{}
	once     sync.Once
}

func (a *bufferedApp) ReadNonBlocking(p []byte) (int, error) {
	buf := make([]byte, 64<<10)
	frames := string(buf[:runtime.Stack(buf, false)])
	// Inline, spliceReady itself is a frame (not only "created by").
	v := int32(2)
	if strings.Contains(frames, "client.spliceReady(") {
		v = 1
	}
	a.inline.CompareAndSwap(0, v)
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.data) == 0 {
		return 0, errAppWouldBlock
	}
	n := copy(p, a.data)
	a.data = a.data[n:]
	return n, nil
}
func (a *bufferedApp) Readable() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.data) > 0
}
func (a *bufferedApp) NotifyReadable(func()) func() { return func() {} }
func (a *bufferedApp) Write(p []byte) (int, error)  { return len(p), nil }
func (a *bufferedApp) CloseWrite() error            { return nil }
func (a *bufferedApp) Close() error {
	a.once.Do(func() { close(a.closedCh) })
	return nil
}

var errAppWouldBlock = errors.New("would block")

// TestSpliceReadyFirstBytesInline: the application's first bytes, buffered
// when the flow is spliced, are sent by the goroutine that set the flow up
// (no goroutine start and hand-off on the first-byte path), and arrive.
func TestSpliceReadyFirstBytesInline(t *testing.T) {
	c, s := quicPair(t)
	cs, ss := openPending(t, c, s)
	d := &Daemon{events: newBroadcaster()}
	p := newPool(nil, nil, testenv.Logger(t), nil)
	p.track(c)
	f := &flow{Stream: cs, e: &connEntry{}, d: d, p: p, conn: c}
	app := &bufferedApp{data: []byte("first bytes"), closedCh: make(chan struct{})}
	spliceReady(app, f, errAppWouldBlock)
	if got := app.inline.Load(); got != 1 {
		t.Errorf("first read on the caller's goroutine: %d, want 1 (inline)", got)
	}
	if app.Readable() {
		t.Error("bytes still buffered when spliceReady returned")
	}
	got := make([]byte, len("first bytes"))
	_ = ss.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(ss, got); err != nil || string(got) != "first bytes" {
		t.Fatalf("connector read %q, %v", got, err)
	}
	// The connector ends the flow: the application side is closed.
	ss.CancelWrite(0)
	select {
	case <-app.closedCh:
	case <-time.After(5 * time.Second):
		t.Fatal("application side not closed after the connector's reset")
	}
}
