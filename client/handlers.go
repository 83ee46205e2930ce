package client

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"postern.dev/postern/netstack"
	"postern.dev/postern/wire"
)

// flowHandler adapts the daemon to netstack.Handler.
type flowHandler struct {
	d    *Daemon
	ctx  context.Context
	echo *echoSessions
}

var _ netstack.Handler = (*flowHandler)(nil)

func newFlowHandler(ctx context.Context, d *Daemon) *flowHandler {
	return &flowHandler{d: d, ctx: ctx, echo: newEchoSessions(ctx, d)}
}

// HandleTCP opens the flow first and completes the application's handshake
// only when the connector says ok; any other answer becomes a RST.
func (h *flowHandler) HandleTCP(r *netstack.TCPRequest) {
	tgt, ok := h.d.table.Load().resolveAddr(r.Dst.Addr(), h.d.names())
	if !ok {
		r.Reject()
		return
	}
	f, err := h.d.openFlow(h.ctx, tgt, wire.ProtoTCP, r.Dst.Port())
	if err != nil {
		h.d.log.Debug("tcp flow refused", "dst", r.Dst, "resource", tgt.res.Name, "err", err)
		r.Reject()
		return
	}
	conn, err := r.Accept()
	if err != nil {
		f.abort()
		return
	}
	spliceReady(conn, f, netstack.ErrWouldBlock)
}

// HandleUDP carries one UDP 5-tuple as length-prefixed datagrams on one
// stream until it is idle.
func (h *flowHandler) HandleUDP(c *netstack.UDPConn) {
	defer c.Close()
	tgt, ok := h.d.table.Load().resolveAddr(c.Dst.Addr(), h.d.names())
	if !ok {
		return
	}
	f, err := h.d.openFlow(h.ctx, tgt, wire.ProtoUDP, c.Dst.Port())
	if err != nil {
		h.d.log.Debug("udp flow refused", "dst", c.Dst, "resource", tgt.res.Name, "err", err)
		return
	}
	idle := udpIdleTimeout
	if c.Dst.Port() == 53 {
		idle = dnsIdleTimeout
	}
	relayDatagrams(c, f, idle)
}

// relayDatagrams copies datagrams between a packet conn and a flow until
// either side ends or nothing moves for idle.
func relayDatagrams(c net.Conn, f *flow, idle time.Duration) {
	defer f.finish()
	var last atomicTime
	last.set(time.Now())
	var once sync.Once
	stop := func() {
		once.Do(func() {
			f.CancelRead(streamErrAborted)
			_ = f.Close()
			_ = c.Close()
		})
	}
	go func() { // connector -> app
		defer stop()
		buf := make([]byte, wire.MaxDatagram)
		for {
			d, err := wire.ReadDatagram(f, buf)
			if err != nil {
				return
			}
			last.set(time.Now())
			if _, err := c.Write(d); err != nil {
				return
			}
		}
	}()
	// Idle timer without a goroutine: it re-arms itself while traffic moves.
	var timer *time.Timer
	var tmu sync.Mutex
	check := func() {
		if rest := idle - time.Since(last.get()); rest > 0 {
			tmu.Lock()
			timer.Reset(rest)
			tmu.Unlock()
			return
		}
		stop()
	}
	tmu.Lock()
	timer = time.AfterFunc(idle, check)
	tmu.Unlock()
	defer timer.Stop()
	buf := make([]byte, wire.MaxDatagram)
	for {
		n, err := c.Read(buf)
		if err != nil {
			break
		}
		last.set(time.Now())
		if err := wire.WriteDatagram(f, buf[:n]); err != nil {
			break
		}
	}
	stop()
}

type atomicTime struct {
	mu sync.Mutex
	t  time.Time
}

func (a *atomicTime) set(t time.Time) { a.mu.Lock(); a.t = t; a.mu.Unlock() }
func (a *atomicTime) get() time.Time  { a.mu.Lock(); defer a.mu.Unlock(); return a.t }

// HandleEcho sends the echo to the connector on the echo session's stream.
func (h *flowHandler) HandleEcho(e *netstack.EchoRequest) {
	h.echo.handle(e)
}

// echoSessions keeps one ICMP stream per (source, destination, identifier).
type echoSessions struct {
	ctx context.Context
	d   *Daemon
	mu  sync.Mutex
	m   map[echoKey]*echoSession
}

type echoKey struct {
	src, dst netip.Addr
	id       uint16
}

type echoSession struct {
	f      *flow
	ready  chan struct{}
	failed bool
	last   atomicTime
	reply  func([]byte) error
	mu     sync.Mutex
}

func newEchoSessions(ctx context.Context, d *Daemon) *echoSessions {
	return &echoSessions{ctx: ctx, d: d, m: map[echoKey]*echoSession{}}
}

func (s *echoSessions) handle(e *netstack.EchoRequest) {
	if len(e.Body) < 4 {
		return
	}
	k := echoKey{src: e.Src, dst: e.Dst, id: uint16(e.Body[0])<<8 | uint16(e.Body[1])}
	s.mu.Lock()
	es, ok := s.m[k]
	if !ok {
		es = &echoSession{ready: make(chan struct{}), reply: e.Reply}
		s.m[k] = es
	}
	s.mu.Unlock()
	if !ok {
		go s.open(k, es, e)
	}
	select {
	case <-es.ready:
	case <-s.ctx.Done():
		return
	}
	if es.failed {
		return
	}
	es.last.set(time.Now())
	es.mu.Lock()
	err := wire.WriteDatagram(es.f, e.Body)
	es.mu.Unlock()
	if err != nil {
		s.d.log.Debug("icmp echo", "dst", e.Dst, "err", err)
	}
}

func (s *echoSessions) open(k echoKey, es *echoSession, e *netstack.EchoRequest) {
	remove := func() {
		s.mu.Lock()
		if s.m[k] == es {
			delete(s.m, k)
		}
		s.mu.Unlock()
	}
	tgt, ok := s.d.table.Load().resolveAddr(e.Dst, s.d.names())
	var f *flow
	var err error
	if ok {
		f, err = s.d.openFlow(s.ctx, tgt, wire.ProtoICMP, 0)
	} else {
		err = ErrNoResource
	}
	if err != nil {
		es.failed = true
		close(es.ready)
		// Forget the failure after a moment so a later ping retries.
		time.AfterFunc(time.Second, remove)
		return
	}
	es.f = f
	es.last.set(time.Now())
	close(es.ready)
	defer remove()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, wire.MaxDatagram)
		for {
			body, err := wire.ReadDatagram(f, buf)
			if err != nil {
				return
			}
			es.last.set(time.Now())
			_ = es.reply(append([]byte(nil), body...))
		}
	}()
	t := time.NewTicker(echoIdleTimeout / 4)
	defer t.Stop()
loop:
	for {
		select {
		case <-s.ctx.Done():
			break loop
		case now := <-t.C:
			if now.Sub(es.last.get()) >= echoIdleTimeout {
				break loop
			}
		}
	}
	remove()
	f.CancelRead(streamErrAborted)
	_ = f.Close()
	wg.Wait()
	f.finish()
}

// DialTCP opens a TCP flow to host:port (a resource name or address) and
// returns it as a net.Conn; SOCKS5 CONNECT uses it.
func (d *Daemon) DialTCP(ctx context.Context, host string, port uint16) (net.Conn, error) {
	tgt, ok := d.table.Load().resolveHost(host, d.names())
	if !ok {
		return nil, &FlowError{Status: wire.StatusDenied, Err: ErrNoResource}
	}
	f, err := d.openFlow(ctx, tgt, wire.ProtoTCP, port)
	if err != nil {
		return nil, err
	}
	return &flowConn{flow: f, remote: flowAddr(net.JoinHostPort(host, strconv.Itoa(int(port))))}, nil
}

// DialUDP opens a UDP flow to host:port; datagrams are exchanged with
// ReadDatagram/WriteDatagram on the returned conn.
func (d *Daemon) DialUDP(ctx context.Context, host string, port uint16) (*DatagramFlow, error) {
	tgt, ok := d.table.Load().resolveHost(host, d.names())
	if !ok {
		return nil, &FlowError{Status: wire.StatusDenied, Err: ErrNoResource}
	}
	f, err := d.openFlow(ctx, tgt, wire.ProtoUDP, port)
	if err != nil {
		return nil, err
	}
	return &DatagramFlow{f: f}, nil
}

// DatagramFlow is a UDP flow opened by DialUDP.
type DatagramFlow struct {
	f    *flow
	wmu  sync.Mutex
	once sync.Once
}

// WriteDatagram sends one datagram.
func (u *DatagramFlow) WriteDatagram(p []byte) error {
	u.wmu.Lock()
	defer u.wmu.Unlock()
	return wire.WriteDatagram(u.f, p)
}

// ReadDatagram reads one datagram into buf (which must hold wire.MaxDatagram bytes).
func (u *DatagramFlow) ReadDatagram(buf []byte) ([]byte, error) {
	return wire.ReadDatagram(u.f, buf)
}

// Close ends the flow.
func (u *DatagramFlow) Close() error {
	u.once.Do(func() {
		u.f.CancelRead(streamErrAborted)
		_ = u.f.Close()
		u.f.finish()
	})
	return nil
}

// flowConn is a TCP flow as a net.Conn with half-close.
type flowConn struct {
	*flow
	remote flowAddr
	once   sync.Once
}

type flowAddr string

func (a flowAddr) Network() string { return "postern" }
func (a flowAddr) String() string  { return string(a) }

func (c *flowConn) LocalAddr() net.Addr  { return flowAddr("postern") }
func (c *flowConn) RemoteAddr() net.Addr { return c.remote }

// CloseWrite sends FIN to the resource.
func (c *flowConn) CloseWrite() error { return c.flow.Close() }

// Close ends both directions.
func (c *flowConn) Close() error {
	c.once.Do(func() {
		c.flow.CancelRead(streamErrAborted)
		_ = c.flow.Close()
		c.flow.finish()
	})
	return nil
}

// errFlowDenied is a convenience for callers mapping FlowError statuses.
func flowStatus(err error) wire.Status {
	var fe *FlowError
	if errors.As(err, &fe) {
		return fe.Status
	}
	return wire.StatusUnreachable
}
