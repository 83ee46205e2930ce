package netstack

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// EchoRequest is one ICMP (v4) or ICMPv6 echo request captured from the device.
type EchoRequest struct {
	Src, Dst netip.Addr
	// Body is identifier(2) sequence(2) data, the wire.Datagram form of an echo.
	Body []byte
	TTL  uint8

	ns *Stack
}

// ErrShortBody is returned by Reply for a body without identifier and sequence.
var ErrShortBody = errors.New("netstack: echo body shorter than 4 bytes")

// Reply writes an echo reply with body (identifier, sequence, data) from Dst
// to Src.
func (e *EchoRequest) Reply(body []byte) error {
	if len(body) < 4 {
		return ErrShortBody
	}
	if e.ns.closed.Load() {
		return ErrClosed
	}
	var pkt []byte
	if e.Src.Is4() {
		pkt = buildEcho4(e.Dst, e.Src, body)
	} else {
		pkt = buildEcho6(e.Dst, e.Src, body)
	}
	return e.ns.ep.writeRaw(pkt)
}

// interceptEcho takes echo requests off the packet path. ICMP never reaches
// gVisor, which would otherwise answer an echo itself on behalf of any
// destination (promiscuous mode): an echo the front-end cannot take whole
// (a fragment, a malformed extension header chain) is dropped and counted
// in EchoDropped. TCP and UDP, fragmented or behind extension headers, go to
// gVisor, which reassembles and parses them.
func (ns *Stack) interceptEcho(p []byte) bool {
	switch header.IPVersion(p) {
	case header.IPv4Version:
		if len(p) < header.IPv4MinimumSize {
			return false
		}
		ip := header.IPv4(p)
		if ip.Protocol() != uint8(header.ICMPv4ProtocolNumber) {
			return false
		}
		if !ip.IsValid(len(p)) || ip.More() || ip.FragmentOffset() != 0 {
			// Every IPv4 fragment names its protocol: drop them all.
			ns.echoDropped.Add(1)
			return true
		}
		payload := p[ip.HeaderLength():ip.TotalLength()]
		if len(payload) < header.ICMPv4MinimumSize {
			ns.echoDropped.Add(1)
			return true
		}
		ic := header.ICMPv4(payload)
		if ic.Type() != header.ICMPv4Echo || ic.Code() != 0 {
			return false // errors for gVisor's endpoints
		}
		src, dst := ip.SourceAddress(), ip.DestinationAddress()
		body := append([]byte(nil), payload[4:]...)
		ns.dispatchEcho(&EchoRequest{Src: addrFromTCPIP(src), Dst: addrFromTCPIP(dst), Body: body, TTL: ip.TTL(), ns: ns})
		return true
	case header.IPv6Version:
		if len(p) < header.IPv6MinimumSize {
			return false
		}
		ip := header.IPv6(p)
		end := header.IPv6MinimumSize + int(ip.PayloadLength())
		if end > len(p) {
			return false // gVisor drops it
		}
		payload, verdict := icmp6Payload(p[:end])
		switch verdict {
		case v6NotICMP:
			return false
		case v6Drop:
			ns.echoDropped.Add(1)
			return true
		}
		if len(payload) < header.ICMPv6EchoMinimumSize {
			ns.echoDropped.Add(1)
			return true
		}
		ic := header.ICMPv6(payload)
		if ic.Code() != 0 || ic.Type() != header.ICMPv6EchoRequest {
			return false // neighbour discovery, MLD and errors stay with gVisor
		}
		body := append([]byte(nil), payload[4:]...)
		ns.dispatchEcho(&EchoRequest{Src: addrFromTCPIP(ip.SourceAddress()), Dst: addrFromTCPIP(ip.DestinationAddress()), Body: body, TTL: ip.HopLimit(), ns: ns})
		return true
	}
	return false
}

// icmp6 verdicts: not ICMPv6 (gVisor's), ICMPv6 to drop, ICMPv6 to handle.
const (
	v6NotICMP = iota
	v6Drop
	v6ICMP
)

// icmp6Payload walks an IPv6 packet's extension headers (hop-by-hop,
// routing, destination options, fragment) to its upper-layer header. It
// returns the ICMPv6 message of an unfragmented packet; ICMPv6 in a
// fragment and a chain that runs past the packet are v6Drop. A non-first
// fragment (its protocol unknown) is left to gVisor, whose reassembly never
// completes without the first fragment this drops.
func icmp6Payload(p []byte) ([]byte, int) {
	next := p[6] // header.IPv6.NextHeader
	off := header.IPv6MinimumSize
	fragmented := false
	for range 16 { // a bound on the chain; real packets have one or two
		switch tcpip.TransportProtocolNumber(next) {
		case header.ICMPv6ProtocolNumber:
			if fragmented {
				return nil, v6Drop
			}
			return p[off:], v6ICMP
		case tcpip.TransportProtocolNumber(header.IPv6HopByHopOptionsExtHdrIdentifier),
			tcpip.TransportProtocolNumber(header.IPv6RoutingExtHdrIdentifier),
			tcpip.TransportProtocolNumber(header.IPv6DestinationOptionsExtHdrIdentifier):
			if off+2 > len(p) {
				return nil, v6Drop
			}
			n := (int(p[off+1]) + 1) * 8
			if off+n > len(p) {
				return nil, v6Drop
			}
			next, off = p[off], off+n
		case tcpip.TransportProtocolNumber(header.IPv6FragmentExtHdrIdentifier):
			if off+8 > len(p) {
				return nil, v6Drop
			}
			if binary.BigEndian.Uint16(p[off+2:])>>3 != 0 {
				return nil, v6NotICMP
			}
			fragmented = true
			next, off = p[off], off+8
		default:
			return nil, v6NotICMP
		}
	}
	return nil, v6Drop
}

func (ns *Stack) dispatchEcho(e *EchoRequest) {
	if ns.closed.Load() {
		return
	}
	go ns.handler.HandleEcho(e)
}

func buildEcho4(src, dst netip.Addr, body []byte) []byte {
	total := header.IPv4MinimumSize + 4 + len(body)
	pkt := make([]byte, total)
	ip := header.IPv4(pkt)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(total),
		TTL:         64,
		Protocol:    uint8(header.ICMPv4ProtocolNumber),
		SrcAddr:     tcpip.AddrFrom4(src.As4()),
		DstAddr:     tcpip.AddrFrom4(dst.As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	ic := header.ICMPv4(pkt[header.IPv4MinimumSize:])
	ic.SetType(header.ICMPv4EchoReply)
	ic.SetCode(0)
	copy(ic[4:], body)
	ic.SetChecksum(0)
	ic.SetChecksum(^checksum.Checksum(ic, 0))
	return pkt
}

func buildEcho6(src, dst netip.Addr, body []byte) []byte {
	plen := 4 + len(body)
	pkt := make([]byte, header.IPv6MinimumSize+plen)
	ip := header.IPv6(pkt)
	s, d := tcpip.AddrFrom16(src.As16()), tcpip.AddrFrom16(dst.As16())
	ip.Encode(&header.IPv6Fields{
		PayloadLength:     uint16(plen),
		TransportProtocol: header.ICMPv6ProtocolNumber,
		HopLimit:          64,
		SrcAddr:           s,
		DstAddr:           d,
	})
	ic := header.ICMPv6(pkt[header.IPv6MinimumSize:])
	ic.SetType(header.ICMPv6EchoReply)
	ic.SetCode(0)
	copy(ic[4:], body)
	ic.SetChecksum(0)
	ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{
		Header:      ic,
		Src:         s,
		Dst:         d,
		PayloadCsum: 0,
		PayloadLen:  0,
	}))
	return pkt
}

// echoIDSeq returns the identifier and sequence of an echo body.
func echoIDSeq(body []byte) (uint16, uint16) {
	if len(body) < 4 {
		return 0, 0
	}
	return binary.BigEndian.Uint16(body), binary.BigEndian.Uint16(body[2:])
}

// EchoDropped counts ICMP packets from the device that were dropped rather
// than relayed as echo requests: ICMP fragments, truncated ICMP and
// malformed IPv6 extension header chains.
func (ns *Stack) EchoDropped() uint64 { return ns.echoDropped.Load() }
