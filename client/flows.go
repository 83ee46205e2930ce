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
}

func (f *flow) Read(p []byte) (int, error) {
	n, err := f.Stream.Read(p)
	f.e.bytesDown.Add(int64(n))
	f.d.bytesDown.Add(int64(n))
	f.account(n)
	return n, err
}

func (f *flow) Write(p []byte) (int, error) {
	f.yieldToInteractive()
	n, err := f.Stream.Write(p)
	f.e.bytesUp.Add(int64(n))
	f.d.bytesUp.Add(int64(n))
	f.account(n)
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
	names := make([]string, len(cands))
	for i, e := range cands {
		names[i] = e.info.Name
	}
	ctx, cancel := context.WithTimeout(ctx, flowOpenTimeout)
	defer cancel()
	hdr := wire.OpenHeader{Proto: proto, Port: port, ResourceID: tgt.res.ID, Destination: tgt.dest}
	var errs []error
	// The first pass gives up on a connection that turns silent; the second
	// pass dials fresh connections to the connectors found silent (the pool
	// replaces a suspect connection) and waits for their answer.
passes:
	for pass := 0; pass < 2; pass++ {
		for _, e := range cands {
			if pass == 1 && !e.suspect.Load() {
				continue
			}
			f, err := d.openOn(ctx, p, e, hdr, pass == 0)
			if err == nil {
				return f, nil
			}
			var fe *FlowError
			if errors.As(err, &fe) {
				return nil, err // the connector answered: that is the answer
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				break passes
			}
		}
	}
	err := errors.Join(errs...)
	p.refused.warn(d.log, tgt.res.Network, tgt.res.Name, names, err)
	return nil, &FlowError{Status: wire.StatusUnreachable, Err: err}
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
	type res struct {
		st  wire.Status
		msg string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		st, msg, err := wire.ReadStatus(s)
		ch <- res{st, msg, err}
	}()
	// While waiting, a connection that turns silent gives way to another
	// connector (when there is one): the application's SYN is still pending.
	var suspect <-chan time.Time
	if alternatives {
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		suspect = tk.C
	}
	var r res
wait:
	select {
	case r = <-ch:
	case <-suspect:
		if !e.suspect.Load() {
			goto wait
		}
		s.CancelRead(streamErrAborted)
		s.CancelWrite(streamErrAborted)
		<-ch
		return nil, fmt.Errorf("connector %s stopped answering while opening flow", e.info.Name)
	case <-ctx.Done():
		s.CancelRead(streamErrAborted)
		s.CancelWrite(streamErrAborted)
		<-ch
		return nil, &FlowError{Status: wire.StatusTimeout, Err: fmt.Errorf("connector %s did not answer: %w", e.info.Name, ctx.Err())}
	case <-conn.Context().Done():
		s.CancelRead(streamErrAborted)
		s.CancelWrite(streamErrAborted)
		<-ch
		return nil, fmt.Errorf("connection to connector %s lost while opening flow", e.info.Name)
	}
	if r.err != nil {
		s.CancelRead(streamErrAborted)
		s.CancelWrite(streamErrAborted)
		return nil, fmt.Errorf("read flow status from connector %s: %w", e.info.Name, r.err)
	}
	d.totalFlows.Add(1)
	e.total.Add(1)
	if r.st != wire.StatusOK {
		s.CancelRead(streamErrAborted)
		_ = s.Close()
		d.changedSoon()
		if isAccessStatus(r.st) {
			// The user can act on these (docs/access.md): say what to do.
			d.log.Warn("access to resource refused", "resource_id", hdr.ResourceID, "dst", hdr.Destination, "status", r.st.String(), "reason", r.msg)
		}
		return nil, &FlowError{Status: r.st, Msg: r.msg}
	}
	e.active.Add(1)
	placed = true
	d.activeFlows.Add(1)
	d.changedSoon()
	return &flow{Stream: s, e: e, d: d, p: p, conn: conn}, nil
}

// Copy buffers: an idle flow holds only a small buffer per direction; a
// busy one borrows a large pooled buffer while data keeps coming.
const (
	smallCopyBuf = 1 << 10
	largeCopyBuf = 64 << 10
)

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, largeCopyBuf); return &b }}

// adaptiveCopy copies src to dst until EOF (nil error) or an error.
func adaptiveCopy(dst io.Writer, src io.Reader) error {
	var small [smallCopyBuf]byte
	for {
		n, err := src.Read(small[:])
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
		// Busy: drain with a large buffer until reads come back short.
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
	var pending atomic.Int32
	pending.Store(2)
	end := func() {
		if pending.Add(-1) == 0 {
			_ = app.Close()
			f.finish()
		}
	}
	go func() { // app -> connector
		defer end()
		if err := adaptiveCopy(f, app); err != nil {
			// The application reset: reset the flow both ways.
			f.CancelWrite(streamErrAborted)
			f.CancelRead(streamErrAborted)
		} else {
			_ = f.Close() // FIN
		}
	}()
	go func() { // connector -> app
		defer end()
		if err := adaptiveCopy(app, f); err != nil {
			f.CancelRead(streamErrAborted)
			_ = app.Close() // reset the application side
		} else if cw, ok := app.(closeWriter); ok {
			_ = cw.CloseWrite()
		} else {
			_ = app.Close()
		}
	}()
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
func spliceReady(app readyConn, f *flow, wouldBlock error) {
	var pending atomic.Int32
	pending.Store(2)
	end := func() {
		if pending.Add(-1) == 0 {
			_ = app.Close()
			f.finish()
		}
	}
	go func() { // connector -> app
		defer end()
		if err := adaptiveCopy(app, f); err != nil {
			f.CancelRead(streamErrAborted)
			_ = app.Close()
		} else {
			_ = app.CloseWrite()
		}
	}()

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
	kick()
}
