package traversal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/pion/logging"
	"github.com/pion/turn/v2"
	"github.com/quic-go/quic-go"
	"golang.org/x/net/ipv4"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/traversal/sigwire"
	"postern.dev/postern/traversal/stunguard"
	"postern.dev/postern/traversal/udpbatch"
)

// allocation is a TURN allocation on a relay and the QUIC transport over it.
type allocation struct {
	relay     controlapi.RelayInfo
	transport string // "udp" or "tls"
	client    *turn.Client
	base      net.PacketConn // the socket to the relay (UDP or STUN-framed TLS)
	conn      net.PacketConn // relayed
	tr        *quic.Transport
	m         *mux
}

func (a *allocation) relayedAddr() string { return a.conn.LocalAddr().String() }

// permit installs TURN permissions so that checks and QUIC from these
// addresses reach the allocation.
func (a *allocation) permit(addrs []*net.UDPAddr) error {
	var as []net.Addr
	for _, x := range addrs {
		as = append(as, x)
	}
	if len(as) == 0 {
		return nil
	}
	if err := a.client.CreatePermission(as...); err != nil {
		return fmt.Errorf("TURN permission on relay %s: %w", a.relay.Name, err)
	}
	return nil
}

func (a *allocation) close() {
	// The relayed socket first: the transport waits for its reader.
	if a.conn != nil {
		a.conn.Close()
	}
	if a.tr != nil {
		a.tr.Close()
	}
	a.client.Close()
	a.base.Close()
}

// allocate makes a TURN allocation on r over transport ("udp" or "tls").
func allocate(ctx context.Context, r controlapi.RelayInfo, transport string, creds controlapi.TURNCredentials) (*allocation, error) {
	var base net.PacketConn
	var fast *turnFastPath
	var rcv *turnReceiver
	// pionConn is base as the TURN client sees it.
	var pionConn net.PacketConn
	switch transport {
	case "udp":
		pc, err := net.ListenPacket("udp", ":0")
		if err != nil {
			return nil, fmt.Errorf("TURN socket: %w", err)
		}
		base, pionConn = pc, pc
		if uc, ok := pc.(*net.UDPConn); ok {
			// As quic-go asks for on its own sockets: a bulk flow through
			// the relay overflowed the default while the client got no CPU
			// for a moment (best effort: the kernel caps it).
			_ = uc.SetReadBuffer(turnSockBuf)
			_ = uc.SetWriteBuffer(turnSockBuf)
			fast = newTurnFastPath(uc)
			rcv = newTurnReceiver(pc, fast)
		}
	case "tls":
		tc, err := dialRelayTLS(ctx, r, sigwire.ALPNTURN, nil)
		if err != nil {
			return nil, err
		}
		base = stunguard.PacketConn(turn.NewSTUNConn(tc))
		pionConn = base
	default:
		return nil, fmt.Errorf("%w: TURN transport %q", ErrBadConfig, transport)
	}
	addr := r.UDPAddr
	if transport == "tls" {
		addr = r.TLSAddr
	}
	if fast != nil {
		base = &fastClosingConn{PacketConn: base, f: fast}
	}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	tn, err := newDualStackNet()
	if err != nil {
		base.Close()
		return nil, err
	}
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: addr, TURNServerAddr: addr,
		Username: creds.Username, Password: creds.Password, Realm: creds.Realm,
		Conn: pionConn, LoggerFactory: lf, RTO: 200 * time.Millisecond, Net: tn,
	})
	if err != nil {
		base.Close()
		return nil, fmt.Errorf("TURN client for relay %s: %w", r.Name, err)
	}
	if fast != nil {
		// Before Listen: the fast path reads the server address from
		// then on.
		if ap, ok := udpbatch.AddrPortOf(c.TURNServerAddr()); ok {
			fast.server = ap
		}
	}
	if rcv != nil {
		// The receiver reads the socket and hands pion what is its.
		rcv.start(c.HandleInbound)
	} else if err := c.Listen(); err != nil {
		c.Close()
		base.Close()
		return nil, fmt.Errorf("TURN client for relay %s: %w", r.Name, err)
	}
	type res struct {
		pc  net.PacketConn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		pc, err := c.Allocate()
		ch <- res{pc, err}
	}()
	select {
	case x := <-ch:
		if x.err != nil {
			c.Close()
			base.Close()
			return nil, fmt.Errorf("TURN allocate on relay %s over %s: %w", r.Name, transport, x.err)
		}
		rc := newRelayPacketConn(x.pc)
		var conn net.PacketConn = rc
		if fast != nil {
			l, ok := x.pc.(interface {
				FindAddrByChannelNumber(uint16) (net.Addr, bool)
			})
			if !ok {
				// The receiver maps channels to peers with it.
				x.pc.Close()
				c.Close()
				base.Close()
				return nil, fmt.Errorf("TURN client for relay %s: relayed socket %T has no channel lookup", r.Name, x.pc)
			}
			fast.setLookup(l.FindAddrByChannelNumber)
			rc.fast, rc.rcv = fast, rcv
			conn = &udpRelayPacketConn{relayPacketConn: rc, base: fast.pending.Conn()}
		}
		return &allocation{relay: r, transport: transport, client: c, base: base, conn: conn}, nil
	case <-ctx.Done():
		c.Close()
		base.Close()
		if x := <-ch; x.pc != nil {
			x.pc.Close()
		}
		return nil, ctx.Err()
	}
}

// relayPacketConn is the relayed socket as quic-go sees it. It behaves like a
// UDP socket on a lossy link when the relay goes away: writes that fail are
// dropped and reads block, until the allocation is closed on purpose. (quic-go
// closes every connection of a transport whose socket fails; a connection
// whose relay restarts must survive until it has moved to a new path.) It
// also has the buffer-size methods quic-go looks for: the real socket is
// inside the TURN client, so they are no-ops.
type relayPacketConn struct {
	net.PacketConn
	fast *turnFastPath // nil: every packet through pion (TURN over TLS)
	rcv  *turnReceiver // nil: pion reads every packet (TURN over TLS)
	done chan struct{}
	once sync.Once
}

// turnSockBuf is the buffer size asked for on a TURN client's UDP socket.
const turnSockBuf = 4 << 20

// fastClosingConn is the base socket of an allocation with a fast path:
// closing it stops the fast path's sender.
type fastClosingConn struct {
	net.PacketConn
	f *turnFastPath
}

func (c *fastClosingConn) Close() error {
	c.f.close()
	return c.PacketConn.Close()
}

func newRelayPacketConn(pc net.PacketConn) *relayPacketConn {
	return &relayPacketConn{PacketConn: pc, done: make(chan struct{})}
}

func (c *relayPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	var n int
	var a net.Addr
	var err error
	if c.rcv != nil {
		n, a, err = c.rcv.ReadFrom(b)
	} else {
		n, a, err = c.PacketConn.ReadFrom(b)
	}
	if err != nil {
		return 0, nil, c.readErr(err)
	}
	return n, a, nil
}

// readBatch reads datagrams through the receiver (fast path only).
func (c *relayPacketConn) readBatch(ms []ipv4.Message) (int, error) {
	n, err := c.rcv.ReadBatch(ms)
	if err != nil {
		return 0, c.readErr(err)
	}
	return n, nil
}

// readErr returns what a read that failed with err reports: a deadline
// (quic-go unblocking its reader) as it is; anything else only once the
// allocation is closed on purpose, as net.ErrClosed, blocking until then.
func (c *relayPacketConn) readErr(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	<-c.done
	return net.ErrClosed
}

func (c *relayPacketConn) WriteTo(b []byte, a net.Addr) (int, error) {
	var check func()
	if c.fast != nil {
		var ch *fastChan
		if ch, check = c.fast.route(a); ch != nil {
			if c.closed() {
				return 0, net.ErrClosed
			}
			c.fast.send(ch, b)
			return len(b), nil
		}
	}
	return c.viaPion(b, a, check)
}

// viaPion sends b through pion's relayed socket; check, when not nil, runs
// after it (route's look at pion's channel).
func (c *relayPacketConn) viaPion(b []byte, a net.Addr, check func()) (int, error) {
	_, err := c.PacketConn.WriteTo(b, a)
	if check != nil {
		check()
	}
	if err != nil && c.closed() {
		return 0, net.ErrClosed
	}
	return len(b), nil // an error: lost on the way, like UDP
}

// closed reports whether the allocation was closed on purpose.
func (c *relayPacketConn) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *relayPacketConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return c.PacketConn.Close()
}

func (*relayPacketConn) SetReadBuffer(int) error  { return nil }
func (*relayPacketConn) SetWriteBuffer(int) error { return nil }

// udpRelayPacketConn is the relayed socket of an allocation over UDP, with
// the fast path. quic-go sets the don't-fragment bit and the buffer sizes
// on its UDP socket to the relay, as on its own sockets, and so runs path
// MTU discovery on the relayed path too: QUIC packets grow from 1200 bytes
// up to what fits the path with the 4-byte ChannelData header (a probe too
// large for the first hop fails at sendmsg and counts as lost; one too large
// further on is lost there).
type udpRelayPacketConn struct {
	*relayPacketConn
	base *net.UDPConn
}

func (c *udpRelayPacketConn) SyscallConn() (syscall.RawConn, error) { return c.base.SyscallConn() }
func (c *udpRelayPacketConn) SetReadBuffer(n int) error             { return c.base.SetReadBuffer(n) }
func (c *udpRelayPacketConn) SetWriteBuffer(n int) error            { return c.base.SetWriteBuffer(n) }

// SetReadDeadline and SetDeadline bound reads: the receiver reads the base
// socket (quic-go sets a deadline to stop its reader). Writes have none, as
// on quic-go's own sockets.
func (c *udpRelayPacketConn) SetReadDeadline(t time.Time) error { return c.base.SetReadDeadline(t) }
func (c *udpRelayPacketConn) SetDeadline(t time.Time) error     { return c.base.SetReadDeadline(t) }
