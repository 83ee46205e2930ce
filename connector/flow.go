package connector

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/policy"
	"postern.dev/postern/wire"
)

// Flow results beyond the wire statuses.
const (
	resultPolicy = "closed by policy"
	resultIdle   = "idle timeout"
	resultReset  = "reset"
)

// flow is one established stream spliced to a destination.
type flow struct {
	s      *session
	st     *quic.Stream
	hdr    wire.OpenHeader
	claims *ctoken.Claims
	start  time.Time
	dst    io.Closer

	up, down atomic.Int64 // bytes client->resource, resource->client
	killOnce sync.Once
	killedAt atomic.Bool
	result   atomic.Pointer[string]
	// cancelDown ends a download side parked in the readiness set
	// (download.go) when kill closes the destination under it.
	cancelDown atomic.Pointer[func()]
}

func (f *flow) killed() bool { return f.killedAt.Load() }

// kill ends the flow abruptly (policy change, idle timeout).
func (f *flow) kill(result string) {
	f.killOnce.Do(func() {
		f.result.CompareAndSwap(nil, &result)
		code := quic.StreamErrorCode(wire.CodeFlowPolicy)
		if result == resultIdle {
			code = quic.StreamErrorCode(wire.CodeFlowIdle)
		}
		f.st.CancelRead(code)
		f.st.CancelWrite(code)
		if f.dst != nil {
			f.dst.Close()
		}
		f.killedAt.Store(true)
		if c := f.cancelDown.Load(); c != nil {
			(*c)()
		}
	})
}

func (f *flow) setResult(r string) { f.result.CompareAndSwap(nil, &r) }

// closeAtEnd re-checks f when its access ends (an approved grant's end) and
// closes it then, unless a newer grant (in a refreshed token or the pushed
// policy) extends it. The returned function stops watching.
func (s *session) closeAtEnd(f *flow, until time.Time) (stop func()) {
	var mu sync.Mutex
	var t *time.Timer
	stopped := false
	var arm func(at time.Time)
	arm = func(at time.Time) {
		t = time.AfterFunc(at.Sub(s.c.now()), func() {
			cl := s.currentClaims()
			if cl == nil {
				cl = f.claims
			}
			d := s.c.policy.Load().authorize(cl, f.hdr, s.c.now(), true)
			if d.status != wire.StatusOK {
				s.log.Info("closing flow at the end of its access", "resource", f.hdr.ResourceID, "dst", f.hdr.Destination, "reason", d.reason)
				f.kill(resultPolicy)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if !stopped && !d.until.IsZero() {
				arm(d.until)
			}
		})
	}
	mu.Lock()
	arm(until)
	mu.Unlock()
	return func() {
		mu.Lock()
		stopped = true
		t.Stop()
		mu.Unlock()
	}
}

// handleFlow reads the flow header, takes the connection's claims (waiting
// for the first token verdict when the stream arrived before it: preauth,
// counted in s.pending until then), checks the header against the policy,
// dials the destination, answers a status and splices.
func (s *session) handleFlow(st *quic.Stream, preauth bool) {
	defer func() {
		if preauth { // left before the verdict
			s.pending.Add(-1)
		}
	}()
	start := time.Now()
	_ = st.SetReadDeadline(start.Add(headerTimeout))
	kind, payload, err := wire.ReadFrame(st)
	if err != nil {
		if isFrameError(err) {
			s.badRequest(st, err.Error())
		} else {
			st.CancelRead(quic.StreamErrorCode(wire.CodeFlowBadRequest))
			st.CancelWrite(quic.StreamErrorCode(wire.CodeFlowBadRequest))
		}
		return
	}
	if kind != wire.KindOpen {
		s.badRequest(st, "flow streams start with an open frame")
		return
	}
	h, err := wire.ParseOpenHeader(payload)
	if err != nil {
		s.badRequest(st, "flow header: "+err.Error())
		return
	}
	_ = st.SetReadDeadline(time.Time{})

	claims := s.currentClaims()
	if preauth {
		claims = s.waitAuth()
		s.pending.Add(-1)
		preauth = false
	}
	if claims == nil {
		s.refuse(st, nil, h, start, wire.StatusUnauthenticated, "unauthenticated", "no valid connection token on this connection")
		return
	}
	p := s.c.policy.Load()
	d := p.authorize(claims, h, s.c.now(), false)
	if d.status != wire.StatusOK {
		s.refuse(st, claims, h, start, d.status, d.reason, d.reason)
		return
	}
	ctx, cancel := context.WithTimeout(s.conn.Context(), s.c.cfg.DialTimeout)
	addrs, status, reason := s.c.resolve(ctx, h)
	if status != wire.StatusOK {
		cancel()
		s.refuse(st, claims, h, start, status, reason, reason)
		return
	}
	f := &flow{s: s, st: st, hdr: h, claims: claims, start: start}
	switch h.Proto {
	case wire.ProtoTCP:
		conn, status, msg := s.c.dialTCP(ctx, addrs, h.Port)
		cancel()
		if status != wire.StatusOK {
			s.refuse(st, claims, h, start, status, "dial "+status.String(), msg)
			return
		}
		f.dst = conn
		s.run(f, func() { f.spliceTCP(conn) })
	case wire.ProtoUDP:
		cancel()
		conn, err := s.c.dialUDP(netip.AddrPortFrom(addrs[0], h.Port))
		if err != nil {
			s.refuse(st, claims, h, start, wire.StatusUnreachable, "unreachable", err.Error())
			return
		}
		f.dst = conn
		s.run(f, func() { f.spliceUDP(conn) })
	case wire.ProtoICMP:
		cancel()
		pc, err := newPinger(addrs[0])
		if err != nil {
			s.refuse(st, claims, h, start, wire.StatusUnreachable, "unreachable", "icmp: "+err.Error())
			return
		}
		f.dst = pc
		s.run(f, func() { f.relayICMP(pc) })
	default:
		cancel()
		s.badRequest(st, "unknown protocol")
	}
}

// run answers ok, registers the flow for policy enforcement, runs it and
// reports its event.
func (s *session) run(f *flow, splice func()) {
	if !s.addFlow(f) {
		f.dst.Close()
		f.st.CancelRead(quic.StreamErrorCode(wire.CodeFlowReset))
		f.st.CancelWrite(quic.StreamErrorCode(wire.CodeFlowReset))
		return
	}
	defer s.removeFlow(f)
	// The policy may have changed while dialing.
	d := s.c.policy.Load().authorize(f.claims, f.hdr, s.c.now(), false)
	if d.status != wire.StatusOK {
		f.dst.Close()
		s.refuse(f.st, f.claims, f.hdr, f.start, d.status, d.reason, d.reason)
		return
	}
	if !d.until.IsZero() {
		defer s.closeAtEnd(f, d.until)()
	}
	if err := sendStatus(f.st, wire.StatusOK, ""); err != nil {
		f.kill(resultReset)
	}
	proto := policy.ProtoName(f.hdr.Proto)
	s.c.met.flowsActive.Inc()
	splice()
	f.dst.Close()
	s.c.met.flowsActive.Dec()
	res := wire.StatusOK.String()
	if r := f.result.Load(); r != nil {
		res = *r
	}
	s.c.met.flows.WithLabelValues(proto, res).Inc()
	s.c.met.bytes.WithLabelValues("up").Add(float64(f.up.Load()))
	s.c.met.bytes.WithLabelValues("down").Add(float64(f.down.Load()))
	s.c.events.add(s.event(f.claims, f.hdr, f.start, res, f.up.Load(), f.down.Load()))
}

func (s *session) event(cl *ctoken.Claims, h wire.OpenHeader, start time.Time, result string, up, down int64) controlapi.FlowEvent {
	ev := controlapi.FlowEvent{
		ResourceID: h.ResourceID, Destination: h.Destination, Port: h.Port, Protocol: policy.ProtoName(h.Proto),
		Start: start.UTC(), DurationMS: time.Since(start).Milliseconds(), BytesUp: up, BytesDown: down, Result: result,
	}
	if cl != nil {
		ev.Principal, ev.Device = cl.Subject, cl.Device
	}
	return ev
}

// refuse answers a refusal status, ends the stream and reports the event.
func (s *session) refuse(st *quic.Stream, cl *ctoken.Claims, h wire.OpenHeader, start time.Time, status wire.Status, reason, msg string) {
	s.answer(st, status, msg, wire.CodeFlowRefused, reason)
	s.c.met.flows.WithLabelValues(policy.ProtoName(h.Proto), status.String()).Inc()
	s.c.events.add(s.event(cl, h, start, status.String(), 0, 0))
}

// sendStatus writes a flow's status and yields: the write readies the
// connection's run loop, which the scheduler queues behind this goroutine
// (runnext) until it blocks. The flow's client waits for the status with
// its application's SYN pending, while this goroutine goes on to set up the
// splice and the flow's bookkeeping (a goroutine start, pollers, metrics):
// yielding lets the run loop pack and send the status first. In-process,
// this took the status's way back to the client from 87-106 µs to 71-74 µs
// (p50, 2,000 flows each). The yield is a hint, not a guarantee (the
// run loop's send can lose the P in its system call), so no test asserts
// its effect on one status: a test that did failed 1 run in 30 under load.
func sendStatus(st *quic.Stream, s wire.Status, msg string) error {
	err := wire.WriteStatus(st, s, msg)
	runtime.Gosched()
	return err
}

// badRequest answers StatusBadRequest and resets the stream; the connection
// and its other streams are not affected.
func (s *session) badRequest(st *quic.Stream, msg string) {
	s.answer(st, wire.StatusBadRequest, msg, wire.CodeFlowBadRequest, "bad header")
}

// answer ends a flow that will not be served: it writes status and msg,
// closes the stream, resets its read side with code (the rest of the
// request is discarded) and counts the refusal under reason.
func (s *session) answer(st *quic.Stream, status wire.Status, msg string, code uint64, reason string) {
	_ = wire.WriteStatus(st, status, msg)
	st.Close()
	st.CancelRead(quic.StreamErrorCode(code))
	s.c.met.refusals.WithLabelValues(status.String(), reason).Inc()
}

// resolve turns the destination into addresses to dial. A name is resolved
// with the host's resolver; loopback, link-local and metadata addresses it
// resolves to are never dialed.
func (c *Connector) resolve(ctx context.Context, h wire.OpenHeader) ([]netip.Addr, wire.Status, string) {
	if ip, ok := h.DestinationAddr(); ok {
		return []netip.Addr{ip.Unmap()}, wire.StatusOK, ""
	}
	network := "ip"
	if h.Proto == wire.ProtoICMP {
		network = "ip4" // ICMP echo relays IPv4 first; see newPinger
	}
	ips, err := c.cfg.Resolver.LookupNetIP(ctx, network, h.Destination)
	if err != nil && h.Proto == wire.ProtoICMP && ctx.Err() == nil {
		ips, err = c.cfg.Resolver.LookupNetIP(ctx, "ip6", h.Destination)
	}
	if err != nil {
		var de *net.DNSError
		if ctx.Err() != nil || (errors.As(err, &de) && de.IsTimeout) {
			return nil, wire.StatusTimeout, "name resolution timed out"
		}
		return nil, wire.StatusUnreachable, "name does not resolve"
	}
	out := ips[:0]
	for _, ip := range ips {
		if ip = ip.Unmap(); !isSpecial(ip) {
			out = append(out, ip)
		}
	}
	if len(out) == 0 {
		return nil, wire.StatusDenied, "name resolves only to loopback or link-local addresses"
	}
	return out, wire.StatusOK, ""
}

// flowKeepAlive is the keep-alive idle time and interval of the connections
// to flows' destinations.
const flowKeepAlive = 15 * time.Second

// dialTCP tries each address in turn within ctx.
func (c *Connector) dialTCP(ctx context.Context, addrs []netip.Addr, port uint16) (net.Conn, wire.Status, string) {
	var last error
	for i, a := range addrs {
		actx := ctx
		if dl, ok := ctx.Deadline(); ok && len(addrs)-i > 1 {
			// Give each remaining address a fair share of the time left.
			var cancel context.CancelFunc
			actx, cancel = context.WithTimeout(ctx, time.Until(dl)/time.Duration(len(addrs)-i))
			defer cancel()
		}
		var conn net.Conn
		var err error
		if c.cfg.Dial != nil {
			conn, err = c.cfg.Dial(actx, "tcp", netip.AddrPortFrom(a, port).String())
		} else {
			conn, err = dialTCPDirect(actx, netip.AddrPortFrom(a, port), flowKeepAlive)
		}
		if err == nil {
			return conn, wire.StatusOK, ""
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	st := dialStatus(last)
	return nil, st, st.String() + ": " + shortErr(last)
}

func dialStatus(err error) wire.Status {
	var ne net.Error
	switch {
	case isRefused(err):
		return wire.StatusRefused
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return wire.StatusTimeout
	}
	return wire.StatusUnreachable
}

func shortErr(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	if err == nil {
		return "no address"
	}
	return err.Error()
}

// spliceTCP copies both ways with half-close: the client's FIN becomes the
// destination's FIN (CloseWrite) and vice versa (stream Close). Flow control
// on both sides gives backpressure.
func (f *flow) spliceTCP(tc net.Conn) {
	// destination -> client through bw: a bulk download yields to
	// request/response flows, which bw tells from both directions
	c := f.s.c
	bw := newBulkWriter(f.st, f.s.conn, &c.interactive, c.bulkTarget)
	if d := startDown(f, tc, bw, c.ready); d != nil {
		f.spliceTCPParked(tc, bw, d)
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // client -> destination
		defer wg.Done()
		f.upload(tc, bw)
	}()
	n, err := pump(bw, tc, waiterFor(tc))
	f.down.Add(n)
	f.endDownload(tc, err)
	wg.Wait()
	tc.Close()
}

// upload copies the client's stream to tc. At the client's end it
// half-closes tc; on a failure it resets tc and the stream's read side and
// reports false.
func (f *flow) upload(tc net.Conn, bw *bulkWriter) bool {
	n, err := pump(bw.requests(tc), f.st, streamWaiter(f.st))
	f.up.Add(n)
	if err != nil {
		f.setResult(resultReset)
		if l, ok := tc.(interface{ SetLinger(int) error }); ok {
			_ = l.SetLinger(0)
		}
		tc.Close()
		f.st.CancelRead(quic.StreamErrorCode(wire.CodeFlowReset))
		return false
	}
	closeWrite(tc)
	return true
}

// endDownload passes the destination's end to the client: its EOF closes
// the stream; an error (err) resets the stream and closes tc.
func (f *flow) endDownload(tc net.Conn, err error) {
	if err != nil {
		f.setResult(resultReset)
		f.st.CancelWrite(quic.StreamErrorCode(wire.CodeFlowReset))
		f.st.CancelRead(quic.StreamErrorCode(wire.CodeFlowReset))
		tc.Close()
		return
	}
	f.st.Close()
}

// spliceTCPParked is spliceTCP with the download side d run by the
// connector's readiness set (download.go): this goroutine copies the upload
// and then waits for the download to end.
func (f *flow) spliceTCPParked(tc net.Conn, bw *bulkWriter, d *downSide) {
	cancel := d.cancel
	f.cancelDown.Store(&cancel) // kill closes tc: no readiness will come
	if f.killed() {
		d.cancel()
	}
	if !f.upload(tc, bw) {
		d.cancel()
	}
	<-d.done
	tc.Close()
}

// closeWrite half-closes c where it can (TCP); a connection that cannot
// (an in-process pipe from Config.Dial) keeps its write side open.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// waiterFor is connWaiter for connections backed by a socket; others are
// read with a buffer held (nil waiter).
func waiterFor(c net.Conn) func() error {
	if sc, ok := c.(syscall.Conn); ok {
		return connWaiter(sc)
	}
	return nil
}

// dialUDP connects a UDP socket to dst, through Config.Dial when set.
func (c *Connector) dialUDP(dst netip.AddrPort) (net.Conn, error) {
	if c.cfg.Dial != nil {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.DialTimeout)
		defer cancel()
		return c.cfg.Dial(ctx, "udp", dst.String())
	}
	return net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
}

const bufSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// pump copies src to dst until EOF (nil error) or an error. It holds a pooled
// buffer only while data moves: before reading after a short read it waits
// for src to become readable without a buffer, so idle flows cost no buffer
// memory.
func pump(dst io.Writer, src io.Reader, wait func() error) (int64, error) {
	var total int64
	var bp *[]byte
	defer func() {
		if bp != nil {
			bufPool.Put(bp)
		}
	}()
	for {
		if bp == nil {
			if wait != nil {
				// The waiter only says src is readable. Its end (io.EOF) is
				// read below like data: a QUIC stream completes, and gives
				// its stream credit back to the peer, only once the FIN is
				// read, never when it is merely peeked.
				if err := wait(); err != nil && err != io.EOF {
					return total, err
				}
			}
			bp = bufPool.Get().(*[]byte)
		}
		buf := *bp
		n, err := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		if n < len(buf) && wait != nil {
			bufPool.Put(bp)
			bp = nil
		}
	}
}

// streamWaiter waits until a stream has data (or has ended) without a buffer.
func streamWaiter(st *quic.Stream) func() error {
	return func() error {
		var b [1]byte
		_, err := st.Peek(b[:])
		return err
	}
}
