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

// interceptEcho takes echo requests off the packet path.
func (ns *Stack) interceptEcho(p []byte) bool {
	switch header.IPVersion(p) {
	case header.IPv4Version:
		if len(p) < header.IPv4MinimumSize {
			return false
		}
		ip := header.IPv4(p)
		if ip.Protocol() != uint8(header.ICMPv4ProtocolNumber) || !ip.IsValid(len(p)) || ip.More() || ip.FragmentOffset() != 0 {
			return false
		}
		payload := p[ip.HeaderLength():ip.TotalLength()]
		if len(payload) < header.ICMPv4MinimumSize {
			return false
		}
		ic := header.ICMPv4(payload)
		if ic.Type() != header.ICMPv4Echo || ic.Code() != 0 {
			return false
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
		if ip.NextHeader() != uint8(header.ICMPv6ProtocolNumber) {
			return false
		}
		end := header.IPv6MinimumSize + int(ip.PayloadLength())
		if end > len(p) {
			return false
		}
		payload := p[header.IPv6MinimumSize:end]
		if len(payload) < header.ICMPv6EchoMinimumSize {
			return false
		}
		ic := header.ICMPv6(payload)
		if ic.Type() != header.ICMPv6EchoRequest || ic.Code() != 0 {
			return false
		}
		body := append([]byte(nil), payload[4:]...)
		ns.dispatchEcho(&EchoRequest{Src: addrFromTCPIP(ip.SourceAddress()), Dst: addrFromTCPIP(ip.DestinationAddress()), Body: body, TTL: ip.HopLimit(), ns: ns})
		return true
	}
	return false
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
