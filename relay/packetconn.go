package relay

import (
	"net"
	"sync"

	"github.com/pion/turn/v2"
	"github.com/prometheus/client_golang/prometheus"

	"postern.dev/postern/traversal/udpbatch"
	"postern.dev/postern/traversal/udpgro"
)

// countingGenerator wraps a RelayAddressGenerator so every relayed socket
// counts the bytes it carries and reads in batches (batch.go). With flush
// set (the generator of the UDP listener, whose relayed sockets are written
// only by pion's one read loop on the TURN socket), writes to peers are
// queued and sent together when that read loop is about to block.
type countingGenerator struct {
	turn.RelayAddressGenerator
	toPeer, fromPeer     prometheus.Counter
	toPeerPkt, fromPeerP prometheus.Counter
	flush                *flushSet
}

func (g *countingGenerator) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	pc, addr, err := g.RelayAddressGenerator.AllocatePacketConn(network, requestedPort)
	if err != nil {
		return nil, nil, err
	}
	// Relayed datagrams keep the size their sender chose: the endpoints
	// run path MTU discovery through the relay (best effort).
	_ = setDontFragment(pc)
	c := &countingConn{PacketConn: pc, g: g}
	// Connectors send GSO runs: read them coalesced (UDP GRO), through
	// buffers shared by all allocations and held only while datagrams
	// wait (udpgro.ForShared), so an idle allocation holds no read buffer.
	if bio := udpgro.SharedBatchIO(pc); bio != nil {
		setSockBufs(pc)
		c.rd = udpbatch.NewReader(bio, relayedBatch)
		if g.flush != nil {
			c.wr = newBatchWriter(pc.(*net.UDPConn))
			// Counted when the kernel took them, not when queued.
			c.wr.w.Sent = func(n, bytes int) {
				g.toPeer.Add(float64(bytes))
				g.toPeerPkt.Add(float64(n))
			}
		}
	}
	return c, addr, nil
}

// countingConn is a relayed socket. Its one reader is the allocation's
// packet handler in pion/turn.
type countingConn struct {
	net.PacketConn
	g  *countingGenerator
	rd *udpbatch.Reader // nil: one datagram per read
	wr *batchWriter     // nil: every write sent at once
	// bp, set before pion starts reading (udpReleaser), carries datagrams
	// of peers with a channel to the client past pion (bypass.go); nil:
	// every datagram goes to pion.
	bp *bypass
}

func (c *countingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if c.bp == nil || c.rd == nil {
		n, a, err := udpbatch.ReadFrom(c.rd, c.PacketConn, b)
		c.count(n)
		return n, a, err
	}
	c.bp.settle()
	for {
		d, a, err := c.rd.Next()
		if err != nil {
			return 0, nil, err
		}
		// What pion's buffer would take.
		d = d[:min(len(d), len(b))]
		c.count(len(d))
		if c.bp.take(d, a) {
			continue
		}
		c.bp.handOff(a, len(d))
		return copy(b, d), a, nil
	}
}

func (c *countingConn) count(n int) {
	if n > 0 {
		c.g.fromPeer.Add(float64(n))
		c.g.fromPeerP.Inc()
	}
}

func (c *countingConn) WriteTo(b []byte, a net.Addr) (int, error) {
	if c.bp != nil {
		c.bp.upWritten(len(b), a, c) // pion's write: the bypass learns from it
	}
	return c.write(b, a)
}

// write queues b for a (sent before the read loop blocks) or sends it.
func (c *countingConn) write(b []byte, a net.Addr) (int, error) {
	if c.wr != nil && c.wr.queue(b, a) {
		c.g.flush.mark(c.wr)
		return len(b), nil
	}
	n, err := c.PacketConn.WriteTo(b, a)
	if n > 0 {
		c.g.toPeer.Add(float64(n))
		c.g.toPeerPkt.Inc()
	}
	return n, err
}

// udpReleaser wraps the generator of the UDP listener: the relayed socket of
// an allocation closes when the TURN server deletes the allocation (a
// Refresh with lifetime 0, or expiry), and its client endpoint then stops
// counting against its principal's quota at once, as a closed TLS endpoint
// does (trackTURN). Without it every leg a client opened and closed (each
// on a fresh UDP socket) counted for endpointIdle, and a client that redials
// and repairs paths often (roaming, UDP coming and going) hit the quota and
// could not move a dying connection onto the relay (seen in CI).
type udpReleaser struct {
	turn.RelayAddressGenerator
	src     *filterConn      // whose packet the TURN server is handling
	release func(key string) // turnAuth.release
}

func (g *udpReleaser) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	pc, addr, err := g.RelayAddressGenerator.AllocatePacketConn(network, requestedPort)
	if err != nil {
		return nil, nil, err
	}
	src := g.src.current.Load()
	if src == nil {
		return pc, addr, nil
	}
	key := endpointKey(*src)
	release := func() { g.release(key) }
	if cc, ok := pc.(*countingConn); ok && cc.rd != nil {
		// What the allocation's packet handler sends its client is queued
		// (filterConn.WriteTo) and sent when the handler is about to wait
		// for the next datagram from a peer.
		if bp := g.src.addClient(*src); bp != nil {
			cc.rd.BeforeBlock = bp.w.flush
			cc.bp = bp
			client := *src
			release = func() { g.release(key); g.src.dropClient(client, bp) }
		}
	}
	return &releasingConn{PacketConn: pc, release: release}, addr, nil
}

type releasingConn struct {
	net.PacketConn
	once    sync.Once
	release func()
}

func (c *releasingConn) Close() error {
	c.once.Do(c.release)
	return c.PacketConn.Close()
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
