package netstack

import (
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// Why SYN-ACKs leave on their own goroutine.
//
// gVisor sends a SYN-ACK from (*tcp.ForwarderRequest).CreateEndpoint with
// the new endpoint's lock held, and a TUN write is synchronous: the kernel
// runs the application's TCP stack inside the write system call, which
// answers with the handshake's ACK (and the application's first bytes)
// before the write returns. The read loop delivers that ACK at once; the
// TCP processor goroutine finds the endpoint locked by a goroutine that is
// not a user call, re-enqueues it and loops without blocking until the
// write returns. On a loaded 2-core machine the writer can be preempted by
// the woken application meanwhile: a CPU profile of posternd while
// connections were opened one after the other showed 70 % of its CPU in
// that loop (tcp.(*processor).start), taken from the application, the
// connector and the QUIC run loops on the same cores.
//
// WritePackets therefore queues a lone SYN-ACK for synAckWriter, which
// writes it once the lock is released: the writer first takes and releases
// the endpoint's lock as a user (Stack.fenceSynAck), parking, not spinning,
// while the goroutine that sends the SYN-ACK still holds it (on a loaded
// machine its thread can be descheduled right there). That goroutine blocks
// for the handshake right after sending, so the writer usually runs next
// on its P (one scheduler hand-off). Ordering is kept where it matters:
// nothing else of the connection is sent before its SYN-ACK, and a
// retransmitted SYN-ACK takes the same queue.

// synAckQueue bounds the SYN-ACKs waiting for synAckWriter. When it is full,
// WritePackets writes synchronously (the old behaviour).
const synAckQueue = 256

// isSynAck reports whether p, a raw outbound IP packet, is a TCP segment
// with SYN and ACK set (and no RST or FIN).
func isSynAck(p []byte) bool {
	_, _, seg, ok := tcpSegment(p)
	if !ok {
		return false
	}
	f := seg.Flags()
	return f.Contains(header.TCPFlagSyn|header.TCPFlagAck) && !f.Intersects(header.TCPFlagRst|header.TCPFlagFin)
}

// tcpSegment returns the addresses and TCP header of p, a raw IPv4 or IPv6
// packet (no IPv6 extension headers: the netstack sends none); ok is false
// for anything else, a fragment, or a packet too short for its headers.
func tcpSegment(p []byte) (src, dst tcpip.Address, seg header.TCP, ok bool) {
	switch header.IPVersion(p) {
	case header.IPv4Version:
		if len(p) < header.IPv4MinimumSize {
			return
		}
		ip := header.IPv4(p)
		hl := int(ip.HeaderLength())
		if ip.Protocol() != uint8(header.TCPProtocolNumber) || hl < header.IPv4MinimumSize || hl > len(p) || ip.FragmentOffset() != 0 {
			return
		}
		src, dst, seg = ip.SourceAddress(), ip.DestinationAddress(), p[hl:]
	case header.IPv6Version:
		if len(p) < header.IPv6MinimumSize {
			return
		}
		ip := header.IPv6(p)
		if ip.NextHeader() != uint8(header.TCPProtocolNumber) {
			return
		}
		src, dst, seg = ip.SourceAddress(), ip.DestinationAddress(), p[header.IPv6MinimumSize:]
	default:
		return
	}
	if len(seg) < header.TCPMinimumSize {
		return tcpip.Address{}, tcpip.Address{}, nil, false
	}
	return src, dst, seg, true
}

// queueSynAck hands b (tunOffset bytes of headroom, then the packet) to
// synAckWriter. It reports false when the queue is full or closed.
func (e *linkEndpoint) queueSynAck(b []byte) bool {
	e.synMu.Lock()
	defer e.synMu.Unlock()
	if e.synClosed {
		return false
	}
	select {
	case e.synAcks <- b:
		return true
	default:
		return false
	}
}

// synAckWriter writes queued SYN-ACKs, several per call when they pile up,
// until closeSynAcks.
func (e *linkEndpoint) synAckWriter() {
	defer e.wg.Done()
	bufs := make([][]byte, 0, 16)
	for b := range e.synAcks {
		bufs = append(bufs[:0], b)
	more:
		for len(bufs) < cap(bufs) {
			select {
			case b, ok := <-e.synAcks:
				if !ok {
					break more
				}
				bufs = append(bufs, b)
			default:
				break more
			}
		}
		if e.fence != nil {
			for _, b := range bufs {
				e.fence(b[tunOffset:])
			}
		}
		if _, err := e.dev.Write(bufs, tunOffset); err != nil && !isClosedErr(err) {
			e.log.Debug("tun write (SYN-ACK)", "err", err)
		}
	}
}

// closeSynAcks ends synAckWriter after it wrote what is queued.
func (e *linkEndpoint) closeSynAcks() {
	e.synMu.Lock()
	defer e.synMu.Unlock()
	if !e.synClosed {
		e.synClosed = true
		close(e.synAcks)
	}
}

// fenceSynAck waits until the endpoint that sent the SYN-ACK p (a raw IP
// packet) is not locked by the goroutine that sent it: it takes and
// releases the endpoint's lock as a user, which parks while the lock is
// held. Unknown endpoints (closed meanwhile) are not waited for.
func (ns *Stack) fenceSynAck(p []byte) {
	var id stack.TransportEndpointID
	var seg header.TCP
	var proto tcpip.NetworkProtocolNumber
	switch header.IPVersion(p) {
	case header.IPv4Version:
		ip := header.IPv4(p)
		proto, id.LocalAddress, id.RemoteAddress = header.IPv4ProtocolNumber, ip.SourceAddress(), ip.DestinationAddress()
		seg = header.TCP(p[ip.HeaderLength():])
	case header.IPv6Version:
		ip := header.IPv6(p)
		proto, id.LocalAddress, id.RemoteAddress = header.IPv6ProtocolNumber, ip.SourceAddress(), ip.DestinationAddress()
		seg = header.TCP(p[header.IPv6MinimumSize:])
	default:
		return
	}
	id.LocalPort, id.RemotePort = seg.SourcePort(), seg.DestinationPort()
	if ep, ok := ns.s.FindTransportEndpoint(proto, tcp.ProtocolNumber, id, nicID).(*tcp.Endpoint); ok {
		ep.LockUser()
		ep.UnlockUser()
	}
}
