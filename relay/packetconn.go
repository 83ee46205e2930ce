package relay

import (
	"net"

	"github.com/pion/turn/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// countingGenerator wraps a RelayAddressGenerator so every relayed socket
// counts the bytes it carries.
type countingGenerator struct {
	turn.RelayAddressGenerator
	toPeer, fromPeer     prometheus.Counter
	toPeerPkt, fromPeerP prometheus.Counter
}

func (g *countingGenerator) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	pc, addr, err := g.RelayAddressGenerator.AllocatePacketConn(network, requestedPort)
	if err != nil {
		return nil, nil, err
	}
	return &countingConn{PacketConn: pc, g: g}, addr, nil
}

type countingConn struct {
	net.PacketConn
	g *countingGenerator
}

func (c *countingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	if n > 0 {
		c.g.fromPeer.Add(float64(n))
		c.g.fromPeerP.Inc()
	}
	return n, a, err
}

func (c *countingConn) WriteTo(b []byte, a net.Addr) (int, error) {
	n, err := c.PacketConn.WriteTo(b, a)
	if n > 0 {
		c.g.toPeer.Add(float64(n))
		c.g.toPeerPkt.Inc()
	}
	return n, err
}

// chanListener is a net.Listener fed with connections accepted elsewhere (the
// TLS listener hands it the connections that negotiated TURN).
type chanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	closed chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// deliver hands c to Accept; it closes c if the listener is closed.
func (l *chanListener) deliver(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.closed:
		c.Close()
	}
}

func (l *chanListener) Close() error {
	select {
	case <-l.closed:
	default:
		close(l.closed)
	}
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
