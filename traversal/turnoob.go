package traversal

import (
	"fmt"
	"net"

	"golang.org/x/net/ipv4"
)

// quic-go sends a burst of equal-size packets as one buffer with a segment
// size (UDP GSO) only through a socket it recognises as a UDP one: one with
// ReadMsgUDP and WriteMsgUDP whose real socket (SyscallConn) takes
// UDP_SEGMENT. Through any other socket it hands packets one at a time to
// its send goroutine, and each passed through WriteTo, the fast path's lock
// and its queue on its own. The relayed socket of a UDP allocation
// (udpRelayPacketConn) has those methods, so quic-go packs its bursts for it
// as for a UDP socket; the fast path cuts a burst back into datagrams, gives
// each its ChannelData header under one lock, and sends them as one GSO run
// again (udpbatch).
//
// Reading stays with the turnReceiver, so quic-go never reads the real
// socket itself: ReadBatch hands quic-go the datagrams of one socket read
// (a GRO run of the relay) in one call. Control messages quic-go adds (ECN marks) are not carried:
// the relay would not pass them on, so quic-go's ECN validation sees no
// marks come back and stops marking, as on any path that clears them.

// ReadBatch reads datagrams into ms (quic-go's reader): through the
// receiver, as many as its last socket read left, at least one. Their
// addresses are *net.UDPAddr, as quic-go's UDP path needs (turnReceiver.put).
func (c *udpRelayPacketConn) ReadBatch(ms []ipv4.Message, _ int) (int, error) {
	return c.readBatch(ms)
}

// ReadMsgUDP reads one datagram; there are no control messages.
func (c *udpRelayPacketConn) ReadMsgUDP(b, _ []byte) (n, oobn int, flags int, addr *net.UDPAddr, err error) {
	n, a, err := c.ReadFrom(b)
	if err != nil {
		return 0, 0, 0, nil, err
	}
	ua, ok := a.(*net.UDPAddr)
	if !ok { // the receiver hands out no other type
		return 0, 0, 0, nil, fmt.Errorf("relayed socket: a datagram from a %T, not a UDP address", a)
	}
	return n, 0, 0, ua, nil
}

// WriteMsgUDP sends b to addr, as datagrams of the segment size a
// UDP_SEGMENT control message in oob gives (the last may be shorter), or
// as one.
func (c *udpRelayPacketConn) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (n, oobn int, err error) {
	seg := gsoSegment(oob)
	if seg <= 0 || seg >= len(b) {
		n, err := c.WriteTo(b, addr)
		return n, 0, err
	}
	for rest := b; len(rest) > 0; {
		ch, check := c.fast.route(addr)
		if ch != nil {
			if c.closed() {
				return 0, 0, net.ErrClosed
			}
			c.fast.sendRun(ch, rest, seg)
			break
		}
		// pion's turn (or no confirmed channel): one datagram through it,
		// then look again.
		d := rest[:min(seg, len(rest))]
		if _, err := c.viaPion(d, addr, check); err != nil {
			return 0, 0, err
		}
		rest = rest[len(d):]
	}
	return len(b), 0, nil
}
