package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/internal/bulkyield"
	"postern.dev/postern/policy"
	"postern.dev/postern/wire"
)

// Flow timeouts.
const (
	udpIdleTimeout  = 2 * time.Minute
	dnsIdleTimeout  = 15 * time.Second
	echoIdleTimeout = 30 * time.Second
	flowOpenTimeout = 20 * time.Second
)

// Stream error codes the client uses when it aborts a stream.
const (
	streamErrAborted quic.StreamErrorCode = 1
)

// FlowError is returned when a flow cannot be opened. Status is the
// connector's answer, or StatusUnreachable/StatusDenied for local failures.
type FlowError struct {
	Status wire.Status
	Msg    string
	Err    error
}

func (e *FlowError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %v", e.Status, e.Err)
	}
	if e.Msg != "" {
		return fmt.Sprintf("%s: %s", e.Status, e.Msg)
	}
	return e.Status.String()
}

func (e *FlowError) Unwrap() error { return e.Err }

// flow is an open stream to a connector, counted on its connEntry.
type flow struct {
	*quic.Stream
	e    *connEntry
	d    *Daemon
	p    *pool
	conn *quic.Conn
	once sync.Once

	// Bulk detection (spread.go): bytes moved since winStart (Unix ns),
	// and flowInteractive, flowBulk or flowDone.
	winStart atomic.Int64
	winBytes atomic.Int64
	bulk     atomic.Int32
	cls      bulkyield.Flow // request/response or not
}

func (f *flow) Read(p []byte) (int, error) {
	n, err := f.Stream.Read(p)
	f.e.bytesDown.Add(int64(n))
	f.d.bytesDown.Add(int64(n))
	f.account(bulkyield.Down, n)
	return n, err
}

// wait returns once the stream has data, has ended or has failed, without
// reading from it.
func (f *flow) wait() error {
	var b [1]byte
	_, err := f.Stream.Peek(b[:])
	return err
}

func (f *flow) Write(p []byte) (int, error) {
	f.yieldToInteractive()
	n, err := f.Stream.Write(p)
	f.e.bytesUp.Add(int64(n))
	f.d.bytesUp.Add(int64(n))
	f.account(bulkyield.Up, n)
	return n, err
}

// finish releases the flow's counters; it does not touch the stream.
func (f *flow) finish() {
	f.once.Do(func() {
		if f.bulk.Swap(flowDone) == flowBulk {
			f.p.markBulk(f.conn, -1)
		}
		f.e.active.Add(-1)
		f.p.untrack(f.conn)
		f.d.activeFlows.Add(-1)
		f.d.changedSoon()
	})
}

// abort resets both directions and finishes.
func (f *flow) abort() {
	f.CancelRead(streamErrAborted)
	f.CancelWrite(streamErrAborted)
	f.finish()
}

// openFlow opens a stream for tgt to the best connector of its network and
// waits for the connector's status. When a connection turns out dead before
// the status arrives, it tries the next connector.
func (d *Daemon) openFlow(ctx context.Context, tgt target, proto byte, port uint16) (*flow, error) {
	if !policy.Allows(tgt.res.rules, policy.ProtoName(proto), port) {
		return nil, &FlowError{Status: wire.StatusDenied, Err: fmt.Errorf("%w: %s/%d on %s", ErrPortNotAllowed, policy.ProtoName(proto), port, tgt.res.Name)}
	}
	p := d.currentPool()
	if p == nil {
		return nil, &FlowError{Status: wire.StatusUnreachable, Err: ErrDown}
	}
	t := d.table.Load()
	cands := p.candidates(t.connectors[tgt.res.Network])
	if len(cands) == 0 {
		err := fmt.Errorf("%w: network %q", ErrNoConnector, tgt.res.Network)
		p.refused.warn(d.log, tgt.res.Network, tgt.res.Name, nil, err)
		return nil, &FlowError{Status: wire.StatusUnreachable, Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, flowOpenTimeout)
	defer cancel()
	hdr := wire.OpenHeader{Proto: proto, Port: port, ResourceID: tgt.res.ID, Destination: tgt.dest}
	f, answer, errs := tryCandidates(ctx, cands, func(e *connEntry, firstPass bool) (*flow, error) {
		return d.openOn(ctx, p, e, hdr, firstPass)
	})
	if f != nil {
		return f, nil
	}
	if answer != nil {
		if fe := (*FlowError)(nil); errors.As(answer, &fe) && fe.Status == wire.StatusTooManyFlows {
			p.refused.warnLimit(d.log, tgt.res.Network, tgt.res.Name, fe.Msg)
		}
		return nil, answer
	}
	err := errors.Join(errs...)
	names := make([]string, len(cands))
	for i, e := range cands {
		names[i] = e.info.Name
	}
	p.refused.warn(d.log, tgt.res.Network, tgt.res.Name, names, err)
	return nil, &FlowError{Status: wire.StatusUnreachable, Err: err}
}

// tryCandidates opens a flow on the first candidate connector that takes
// it. The first pass gives up on a connection that turns silent; the second
// pass dials fresh connections to the connectors found silent (the pool
// replaces a suspect connection) and waits for their answer. A connector's
// answer ends the search (answer), except "too many flows": that limit is
// the connector's own, and another connector of the network may take the
// flow; when none does, that refusal is the answer. errs are the failures
// of connectors that did not answer.
func tryCandidates(ctx context.Context, cands []*connEntry, open func(e *connEntry, firstPass bool) (*flow, error)) (f *flow, answer error, errs []error) {
	var limited error
	for pass := 0; pass < 2; pass++ {
		for _, e := range cands {
			if pass == 1 && !e.suspect.Load() {
				continue
			}
			f, err := open(e, pass == 0)
			if err == nil {
				return f, nil, nil
			}
			var fe *FlowError
			if errors.As(err, &fe) {
				if fe.Status != wire.StatusTooManyFlows {
					return nil, err, nil
				}
				limited = err
				continue
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				return nil, limited, errs
			}
		}
	}
	return nil, limited, errs
}

func (d *Daemon) openOn(ctx context.Context, p *pool, e *connEntry, hdr wire.OpenHeader, alternatives bool) (*flow, error) {
	conn, err := p.get(ctx, e)
	if err != nil {
		return nil, err
	}
	conn = p.place(ctx, e, conn) // counts the flow on conn at once (track)
	placed := false
	defer func() {
		if !placed {
			p.untrack(conn)
		}
	}()
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("open stream to connector %s: %w", e.info.Name, err)
	}
	if err := wire.WriteOpen(s, hdr); err != nil {
		s.CancelRead(streamErrAborted)
		s.CancelWrite(streamErrAborted)
		return nil, fmt.Errorf("send flow header to connector %s: %w", e.info.Name, err)
	}
	st, msg, err := awaitStatus(ctx, conn, e, s, alternatives)
	if err != nil {
		return nil, err
	}
	d.totalFlows.Add(1)
	e.total.Add(1)
	if st != wire.StatusOK {
		s.CancelRead(streamErrAborted)
		_ = s.Close()
		d.changedSoon()
		if isAccessStatus(st) {
			// The user can act on these (docs/access.md): say what to do.
			d.log.Warn("access to resource refused", "resource_id", hdr.ResourceID, "dst", hdr.Destination, "status", st.String(), "reason", msg)
		}
		return nil, &FlowError{Status: st, Msg: msg}
	}
	e.active.Add(1)
	placed = true
	d.activeFlows.Add(1)
	d.changedSoon()
	return &flow{Stream: s, e: e, d: d, p: p, conn: conn}, nil
}

// Why awaitStatus stopped waiting (statusWait.why).
const (
	waitReading int32 = iota
	waitAnswered
	waitCanceled
	waitSuspect
)

// suspectCheck is how often a flow waiting for its status looks whether its
// connection turned suspect (silent): then another connector may answer.
const suspectCheck = 100 * time.Millisecond

// statusWait is the state of one awaitStatus.
type statusWait struct {
	ctx          context.Context
	s            *quic.Stream
	e            *connEntry
	alternatives bool
	why          atomic.Int32
	mu           sync.Mutex // orders the timer's re-arming with its Stop
	tm           *time.Timer
}

// abort ends the wait for reason unless the answer came first: it resets the
// stream, which ends the read.
func (w *statusWait) abort(reason int32) {
	if w.why.CompareAndSwap(waitReading, reason) {
		w.s.CancelRead(streamErrAborted)
		w.s.CancelWrite(streamErrAborted)
	}
}

// check runs every suspectCheck while the answer is pending.
func (w *statusWait) check() {
	switch {
	case w.why.Load() != waitReading:
		return
	case w.ctx.Err() != nil:
		w.abort(waitCanceled)
		return
	case w.alternatives && w.e.suspect.Load():
		w.abort(waitSuspect)
		return
	}
	w.mu.Lock()
	w.tm.Reset(suspectCheck)
	w.mu.Unlock()
}

// awaitStatus reads the connector's answer to a flow header on s, on the
// calling goroutine. The status usually arrives within a round trip and a
// dial: no goroutine, channel or ticker is set up for it (each cost a
// scheduler hand-off or more on every flow opening). Instead, a timer every
// suspectCheck resets the stream, which ends the read, once ctx is done
// (its deadline passed or it was canceled: noticed within suspectCheck) or,
// with alternatives, once the connection turned suspect (another connector
// may answer). A read deadline would cost a timer per blocking read inside
// quic-go besides this one. The connection's end ends the read by itself. Whichever of the
// answer and the timer comes first decides (why).
func awaitStatus(ctx context.Context, conn *quic.Conn, e *connEntry, s *quic.Stream, alternatives bool) (wire.Status, string, error) {
	w := &statusWait{ctx: ctx, s: s, e: e, alternatives: alternatives}
	w.mu.Lock()
	w.tm = time.AfterFunc(suspectCheck, w.check)
	w.mu.Unlock()
	st, msg, err := wire.ReadStatus(s)
	answered := w.why.CompareAndSwap(waitReading, waitAnswered)
	w.mu.Lock()
	w.tm.Stop()
	w.mu.Unlock()
	switch {
	case !answered && w.why.Load() == waitSuspect:
		return 0, "", fmt.Errorf("connector %s stopped answering while opening flow", e.info.Name)
	case !answered, err != nil && ctx.Err() != nil:
		s.CancelRead(streamErrAborted)
		s.CancelWrite(streamErrAborted)
		cause := context.Cause(ctx)
		if cause == nil {
			cause = context.DeadlineExceeded
		}
		return 0, "", &FlowError{Status: wire.StatusTimeout, Err: fmt.Errorf("connector %s did not answer: %w", e.info.Name, cause)}
	case err != nil && conn.Context().Err() != nil:
		return 0, "", fmt.Errorf("connection to connector %s lost while opening flow: %w", e.info.Name, err)
	case err != nil:
		s.CancelRead(streamErrAborted)
		s.CancelWrite(streamErrAborted)
		return 0, "", fmt.Errorf("read flow status from connector %s: %w", e.info.Name, err)
	}
	return st, msg, nil
}

// Copy buffers: an idle flow holds no buffer (it waits for the stream
// without one) or a small one (a source that cannot be waited on); a busy
// or woken flow borrows a large pooled buffer while data keeps coming.
const (
	smallCopyBuf = 1 << 10
	largeCopyBuf = 64 << 10
)

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, largeCopyBuf); return &b }}

// adaptiveCopy copies src to dst until EOF (nil error) or an error. With a
// wait function, which returns once src is readable without reading it, an
// idle src holds no buffer; without one, a 1 KiB buffer.
func adaptiveCopy(dst io.Writer, src io.Reader, wait func() error) error {
	var small []byte
	if wait == nil {
		small = make([]byte, smallCopyBuf)
	}
	for {
		var (
			n   int
			err error
		)
		if wait != nil {
			// Readable: data, an error, or the end. The end is read below
			// like data: a QUIC stream completes only once its FIN is read.
			if err := wait(); err != nil && err != io.EOF {
				return err
			}
		} else {
			n, err = src.Read(small)
			if n > 0 {
				if _, werr := dst.Write(small[:n]); werr != nil {
					return werr
				}
			}
			if err != nil {
				if err == io.EOF {
					return nil
				}
				return err
			}
			if n < len(small) {
				continue
			}
		}
		// Busy, or woken: read with a large buffer until reads come back
		// short.
		bp := copyBufPool.Get().(*[]byte)
		big := *bp
		for {
			n, err = src.Read(big)
			if n > 0 {
				if _, werr := dst.Write(big[:n]); werr != nil {
					copyBufPool.Put(bp)
					return werr
				}
			}
			if err != nil || n < len(big)/4 {
				break
			}
		}
		copyBufPool.Put(bp)
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

type closeWriter interface{ CloseWrite() error }

// splice copies both ways between an application connection and a flow,
// with half-close: EOF from one side becomes a FIN on the other; both are
// closed when both directions are done. It returns at once: the copies run
// on two fresh goroutines, so a long-lived idle flow keeps only two small
// stacks (not the deeper one that set the flow up).
func splice(app net.Conn, f *flow) {
	end := endAfterBoth(app, f)
	go func() { // app -> connector
		defer end()
		if err := adaptiveCopy(f, app, nil); err != nil {
			// The application reset: reset the flow both ways.
			f.CancelWrite(streamErrAborted)
			f.CancelRead(streamErrAborted)
		} else {
			_ = f.Close() // FIN
		}
	}()
	go toApp(app, f, end)
}

// endAfterBoth returns what each direction of a spliced flow calls when it
// ends: the second call closes the application side and finishes the flow.
func endAfterBoth(app net.Conn, f *flow) func() {
	var pending atomic.Int32
	pending.Store(2)
	return func() {
		if pending.Add(-1) == 0 {
			_ = app.Close()
			f.finish()
		}
	}
}

// toApp copies the connector's bytes to the application: the connector's
// FIN becomes a half-close (or a close, for a connection without one), a
// reset resets the application side. It calls end when done.
func toApp(app net.Conn, f *flow, end func()) {
	defer end()
	if err := adaptiveCopy(app, f, f.wait); err != nil {
		f.CancelRead(streamErrAborted)
		_ = app.Close() // reset the application side
	} else if cw, ok := app.(closeWriter); ok {
		_ = cw.CloseWrite()
	} else {
		_ = app.Close()
	}
}

// readyConn is an application connection that can be drained without a
// parked goroutine (netstack.TCPConn).
type readyConn interface {
	net.Conn
	closeWriter
	ReadNonBlocking(p []byte) (int, error)
	Readable() bool
	NotifyReadable(fn func()) (cancel func())
}

// spliceReady is splice for a netstack connection: the application ->
// connector direction runs a goroutine only while data is buffered, so an
// idle flow holds one goroutine (blocked on the QUIC stream) instead of two.
// It drains what is already buffered before it returns (the caller's
// goroutine sends the application's first bytes), then returns.
func spliceReady(app readyConn, f *flow, wouldBlock error) {
	end := endAfterBoth(app, f)
	go toApp(app, f, end)

	var (
		running atomic.Bool
		done    atomic.Bool
		cancel  func()
		once    sync.Once
		mu      sync.Mutex // orders cancel's assignment before its use
	)
	finishUp := func(err error) {
		once.Do(func() {
			done.Store(true)
			mu.Lock()
			c := cancel
			mu.Unlock()
			if c != nil {
				c()
			}
			if err != nil {
				// The application reset: reset the flow both ways.
				f.CancelWrite(streamErrAborted)
				f.CancelRead(streamErrAborted)
			} else {
				_ = f.Close() // FIN
			}
			end()
		})
	}
	drain := func() {
		bp := copyBufPool.Get().(*[]byte)
		defer copyBufPool.Put(bp)
		buf := *bp
		for !done.Load() {
			n, err := app.ReadNonBlocking(buf)
			if n > 0 {
				if _, werr := f.Write(buf[:n]); werr != nil {
					finishUp(werr)
					return
				}
			}
			switch {
			case err == nil:
				continue
			case errors.Is(err, wouldBlock):
				running.Store(false)
				// A notification that came after the read saw running set
				// and did nothing: look again before leaving.
				if !app.Readable() || !running.CompareAndSwap(false, true) {
					return
				}
			case errors.Is(err, io.EOF):
				finishUp(nil)
				return
			default:
				finishUp(err)
				return
			}
		}
	}
	kick := func() {
		if !done.Load() && running.CompareAndSwap(false, true) {
			go drain()
		}
	}
	c := app.NotifyReadable(kick)
	mu.Lock()
	cancel = c
	mu.Unlock()
	if done.Load() {
		c()
	}
	// The first drain runs on the caller's goroutine, which is done with
	// the flow's setup: the application's first bytes (sent right after
	// its handshake) go out without a goroutine start and hand-off.
	if !done.Load() && running.CompareAndSwap(false, true) {
		drain()
	}
}
