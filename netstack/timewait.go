package netstack

import (
	"encoding/binary"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// TimeWaitTimeout is how long the stack keeps a connection it closed first
// in TIME_WAIT. The netstack side of a flow is a proxy endpoint on a local,
// in-order link (the TUN queue): no segment of an old incarnation can be
// delayed in a network and arrive after the application's stack has moved
// on, so the Internet's 2×MSL (60 s in gVisor and Linux) only costs memory
// (one endpoint per closed flow: 300,000 at 5,000 connections/s). Five
// seconds still covers several retransmissions of the application's FIN if
// our last ACK were lost. See doc.go for the SYN-in-TIME_WAIT rule.
const TimeWaitTimeout = 5 * time.Second

// tuple is a TCP 4-tuple as seen from the stack (local = the address the
// application connected to).
type tuple struct {
	local, remote tcpip.Address
	lport, rport  uint16
}

// synInfo is what reopenTimeWait needs from an inbound SYN.
type synInfo struct {
	netProto tcpip.NetworkProtocolNumber
	id       stack.TransportEndpointID
	hasTS    bool
	tsVal    uint32
}

// parseSYN recognises a TCP SYN without ACK (a connection request) in a raw
// IP packet. Fragments and malformed packets are not SYNs.
func parseSYN(p []byte) (synInfo, bool) {
	var si synInfo
	var tcpSeg []byte
	switch header.IPVersion(p) {
	case header.IPv4Version:
		if len(p) < header.IPv4MinimumSize {
			return si, false
		}
		ip := header.IPv4(p)
		if ip.Protocol() != uint8(header.TCPProtocolNumber) || !ip.IsValid(len(p)) || ip.More() || ip.FragmentOffset() != 0 {
			return si, false
		}
		tcpSeg = p[ip.HeaderLength():ip.TotalLength()]
		si.netProto = header.IPv4ProtocolNumber
		si.id.LocalAddress, si.id.RemoteAddress = ip.DestinationAddress(), ip.SourceAddress()
	case header.IPv6Version:
		if len(p) < header.IPv6MinimumSize {
			return si, false
		}
		ip := header.IPv6(p)
		// Only the plain case: extension headers in front of TCP are rare on a
		// TUN and not worth parsing here; such SYNs keep gVisor's behaviour.
		if ip.NextHeader() != uint8(header.TCPProtocolNumber) || int(ip.PayloadLength())+header.IPv6MinimumSize > len(p) {
			return si, false
		}
		tcpSeg = p[header.IPv6MinimumSize : header.IPv6MinimumSize+int(ip.PayloadLength())]
		si.netProto = header.IPv6ProtocolNumber
		si.id.LocalAddress, si.id.RemoteAddress = ip.DestinationAddress(), ip.SourceAddress()
	default:
		return si, false
	}
	if len(tcpSeg) < header.TCPMinimumSize {
		return si, false
	}
	t := header.TCP(tcpSeg)
	flags := t.Flags()
	if !flags.Contains(header.TCPFlagSyn) || flags.Intersects(header.TCPFlagAck|header.TCPFlagRst|header.TCPFlagFin) {
		return si, false
	}
	off := int(t.DataOffset())
	if off < header.TCPMinimumSize || off > len(tcpSeg) {
		return si, false
	}
	si.id.LocalPort, si.id.RemotePort = t.DestinationPort(), t.SourcePort()
	opts := header.ParseSynOptions(tcpSeg[header.TCPMinimumSize:off], false)
	si.hasTS, si.tsVal = opts.TS, opts.TSVal
	return si, true
}

// reopenTimeWait lets a new SYN reopen a 4-tuple the stack still holds in
// TIME_WAIT, as RFC 1122 4.2.2.13 and RFC 6191 allow and Linux does. gVisor
// implements that rule only towards a listening endpoint; the forwarder has
// none, so without this the SYN is dropped until TIME_WAIT ends. The rule:
// when both sides use timestamps, a SYN whose TSval is older than the last
// one seen is an old duplicate (PAWS) and is left to gVisor, which drops it;
// any other SYN closes the TIME_WAIT endpoint so that the forwarder sees the
// SYN as a new connection. Called on the read loop before the packet is
// delivered.
func (ns *Stack) reopenTimeWait(p []byte) {
	si, ok := parseSYN(p)
	if !ok {
		return
	}
	te := ns.s.FindTransportEndpoint(si.netProto, tcp.ProtocolNumber, si.id, nicID)
	ep, ok := te.(*tcp.Endpoint)
	if !ok {
		return
	}
	switch ep.EndpointState() {
	case tcp.StateTimeWait, tcp.StateFinWait1, tcp.StateFinWait2, tcp.StateClosing:
		// gVisor sends the ACK of the application's FIN before it moves the
		// endpoint to TIME_WAIT, under the endpoint's lock: a SYN sent by an
		// application that already got that ACK can find the endpoint a
		// moment before TIME_WAIT. Taking the lock waits for the move.
	default:
		return
	}
	ep.LockUser()
	state, sendTS, recent := ep.EndpointState(), ep.SendTSOk, ep.RecentTS
	ep.UnlockUser()
	if state != tcp.StateTimeWait {
		return
	}
	if sendTS && si.hasTS && int32(si.tsVal-recent) < 0 {
		ns.timeWaitRefused.Add(1)
		return
	}
	// Abort frees the tuple (demuxer entry and port reservation) at once. In
	// TIME_WAIT it also emits a RST|ACK carrying the old incarnation's
	// numbers; the application's stack, now in SYN-SENT, would ignore it
	// (its ACK does not cover the new SYN), but it is noise on the wire, so
	// the link endpoint drops it.
	ns.ep.suppressRST(tuple{local: si.id.LocalAddress, remote: si.id.RemoteAddress, lport: si.id.LocalPort, rport: si.id.RemotePort})
	ep.Abort()
	ns.ep.suppressRST(tuple{})
	ns.timeWaitReopened.Add(1)
}

// TimeWaitStats counts SYNs that arrived for a 4-tuple in TIME_WAIT.
type TimeWaitStats struct {
	// Reopened: the TIME_WAIT endpoint was closed and the SYN served.
	Reopened uint64
	// Refused: the SYN carried an older timestamp (an old duplicate).
	Refused uint64
}

// TimeWait returns the SYN-in-TIME_WAIT counters.
func (ns *Stack) TimeWait() TimeWaitStats {
	return TimeWaitStats{Reopened: ns.timeWaitReopened.Load(), Refused: ns.timeWaitRefused.Load()}
}

// rstFilter is the one 4-tuple whose outbound RST the link endpoint drops
// while reopenTimeWait aborts its TIME_WAIT endpoint.
type rstFilter struct {
	active atomic.Bool
	t      atomic.Pointer[tuple]
}

// suppressRST arms (or, with the zero tuple, disarms) the RST filter.
func (e *linkEndpoint) suppressRST(t tuple) {
	if t == (tuple{}) {
		e.rst.active.Store(false)
		e.rst.t.Store(nil)
		return
	}
	e.rst.t.Store(&t)
	e.rst.active.Store(true)
}

// dropRST reports whether p is the RST the filter is armed for.
func (e *linkEndpoint) dropRST(p []byte) bool {
	if !e.rst.active.Load() {
		return false
	}
	want := e.rst.t.Load()
	if want == nil {
		return false
	}
	src, dst, seg, ok := tcpSegment(p)
	if !ok || !seg.Flags().Contains(header.TCPFlagRst) {
		return false
	}
	return src == want.local && dst == want.remote &&
		binary.BigEndian.Uint16(seg[0:2]) == want.lport && binary.BigEndian.Uint16(seg[2:4]) == want.rport
}
