package traversal

import (
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
// receiver, as many as its last socket read left, at least one.
func (c *udpRelayPacketConn) ReadBatch(ms []ipv4.Message, _ int) (int, error) {
	for {
		n, err := c.readBatch(ms)
		if err != nil || n == 0 {
			return n, err
		}
		// quic-go's UDP path asserts *net.UDPAddr for the addresses it
		// writes back to; the receiver hands out no other, so one
		// skipped is a bug's symptom, not traffic.
		// The buffers stay where quic-go put them: a kept datagram is
		// copied down over a skipped one.
		k := 0
		for i := range n {
			if _, ok := ms[i].Addr.(*net.UDPAddr); !ok {
				continue
			}
			if k != i {
				ms[k].N = copy(ms[k].Buffers[0], ms[i].Buffers[0][:ms[i].N])
				ms[k].Addr = ms[i].Addr
			}
			k++
		}
		if k > 0 {
			return k, nil
		}
	}
}

// ReadMsgUDP reads one datagram; there are no control messages.
func (c *udpRelayPacketConn) ReadMsgUDP(b, _ []byte) (n, oobn, flags int, addr *net.UDPAddr, err error) {
	n, addr, err = c.readUDP(b)
	return n, 0, 0, addr, err
}

// readUDP reads the next datagram whose sender is a UDP address (quic-go's
// UDP path asserts that type for the addresses it writes back to; the
// receiver hands out no other, so a skipped datagram is a bug's symptom,
// not traffic).
func (c *udpRelayPacketConn) readUDP(b []byte) (int, *net.UDPAddr, error) {
	for {
		n, a, err := c.ReadFrom(b)
		if err != nil {
			return 0, nil, err
		}
		if ua, ok := a.(*net.UDPAddr); ok {
			return n, ua, nil
		}
	}
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
