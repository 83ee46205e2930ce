package netstack

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

var (
	app6 = netip.MustParseAddr("fd7a:7073:746e::2")
	res6 = netip.MustParseAddr("2001:db8:100::10")
)

// countingHandler is testHandler that counts the echoes it is given.
type countingHandler struct {
	testHandler
	echoes atomic.Int32
}

func (h *countingHandler) HandleEcho(e *EchoRequest) {
	h.echoes.Add(1)
	h.testHandler.HandleEcho(e)
}

// ipv6Packet builds an IPv6 packet with next header next and payload
// (extension headers included).
func ipv6Packet(src, dst netip.Addr, next uint8, payload []byte) []byte {
	p := make([]byte, header.IPv6MinimumSize+len(payload))
	header.IPv6(p).Encode(&header.IPv6Fields{
		PayloadLength: uint16(len(payload)), TransportProtocol: tcpip.TransportProtocolNumber(next), HopLimit: 64,
		SrcAddr: tcpip.AddrFrom16(src.As16()), DstAddr: tcpip.AddrFrom16(dst.As16()),
	})
	copy(p[header.IPv6MinimumSize:], payload)
	return p
}

// echo6 is an ICMPv6 echo request (checksummed) with identifier id, sequence seq.
func echo6(src, dst netip.Addr, id, seq uint16, data []byte) []byte {
	ic := header.ICMPv6(make([]byte, 8+len(data)))
	ic.SetType(header.ICMPv6EchoRequest)
	binary.BigEndian.PutUint16(ic[4:], id)
	binary.BigEndian.PutUint16(ic[6:], seq)
	copy(ic[8:], data)
	ic.SetChecksum(header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: ic, Src: tcpip.AddrFrom16(src.As16()), Dst: tcpip.AddrFrom16(dst.As16())}))
	return ic
}

// destOpts is an 8-byte destination options header (PadN) before next.
func destOpts(next uint8) []byte { return []byte{next, 0, 1, 4, 0, 0, 0, 0} }

// fragHdr is a fragment header: offset in 8-byte units, more fragments m.
func fragHdr(next uint8, offset uint16, m bool, id uint32) []byte {
	b := make([]byte, 8)
	b[0] = next
	v := offset << 3
	if m {
		v |= 1
	}
	binary.BigEndian.PutUint16(b[2:], v)
	binary.BigEndian.PutUint32(b[4:], id)
	return b
}

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

// echoReplies taps the device's ICMPv4 and ICMPv6 echo replies.
func echoReplies(t *testing.T, h Handler) (func([]byte), chan []byte, *Stack) {
	t.Helper()
	_, dev, ns := startStack(t, h)
	replies := make(chan []byte, 16)
	dev.SetTap(func(p []byte) bool {
		switch header.IPVersion(p) {
		case header.IPv6Version:
			ip := header.IPv6(p)
			if ip.TransportProtocol() == header.ICMPv6ProtocolNumber && header.ICMPv6(ip.Payload()).Type() == header.ICMPv6EchoReply {
				replies <- p
				return true
			}
		case header.IPv4Version:
			ip := header.IPv4(p)
			if ip.Protocol() == uint8(header.ICMPv4ProtocolNumber) && header.ICMPv4(ip.Payload()).Type() == header.ICMPv4EchoReply {
				replies <- p
				return true
			}
		}
		return false
	})
	inject := func(p []byte) {
		t.Helper()
		if err := dev.Inject(p); err != nil {
			t.Fatal(err)
		}
	}
	return inject, replies, ns
}

// nextReplySeq waits for the next echo reply and returns its sequence.
func nextReplySeq(t *testing.T, replies chan []byte) uint16 {
	t.Helper()
	select {
	case p := <-replies:
		var body []byte
		if header.IPVersion(p) == header.IPv6Version {
			body = header.IPv6(p).Payload()
		} else {
			body = header.IPv4(p).Payload()
		}
		return binary.BigEndian.Uint16(body[6:])
	case <-time.After(5 * time.Second):
		t.Fatal("no echo reply")
		return 0
	}
}

// An ICMPv6 echo behind a destination options header is relayed like any
// echo: the front-end walks the extension headers.
func TestEcho6BehindExtensionHeader(t *testing.T) {
	h := &countingHandler{}
	inject, replies, _ := echoReplies(t, h)
	inject(ipv6Packet(app6, res6, uint8(header.IPv6DestinationOptionsExtHdrIdentifier),
		cat(destOpts(uint8(header.ICMPv6ProtocolNumber)), echo6(app6, res6, 0x4242, 9, []byte("ext")))))
	select {
	case p := <-replies:
		ip := header.IPv6(p)
		if addrFromTCPIP(ip.SourceAddress()) != res6 || addrFromTCPIP(ip.DestinationAddress()) != app6 {
			t.Errorf("reply %v -> %v", ip.SourceAddress(), ip.DestinationAddress())
		}
		if id, seq := echoIDSeq(ip.Payload()[4:]); id != 0x4242 || seq != 9 || string(ip.Payload()[8:]) != "ext" {
			t.Errorf("reply body %x", ip.Payload())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no echo reply for an echo behind a destination options header")
	}
	if h.echoes.Load() != 1 {
		t.Errorf("handler saw %d echoes, want 1", h.echoes.Load())
	}
}

// Fragmented echoes (IPv6 and IPv4) and a truncated extension header chain
// are dropped and counted: no reply (gVisor must not answer for the
// destination), no handler call, no panic. A whole echo sent after them is
// answered first and alone.
func TestFragmentedAndMalformedEchoDropped(t *testing.T) {
	h := &countingHandler{}
	inject, replies, ns := echoReplies(t, h)
	icmp6 := uint8(header.ICMPv6ProtocolNumber)
	frag6 := uint8(header.IPv6FragmentExtHdrIdentifier)
	msg := echo6(app6, res6, 7, 1, make([]byte, 24)) // 32 bytes: two 16-byte fragments
	inject(ipv6Packet(app6, res6, frag6, cat(fragHdr(icmp6, 0, true, 77), msg[:16])))
	inject(ipv6Packet(app6, res6, frag6, cat(fragHdr(icmp6, 2, false, 77), msg[16:])))
	// The same echo in one fragment (offset 0, no more fragments).
	inject(ipv6Packet(app6, res6, frag6, cat(fragHdr(icmp6, 0, false, 78), echo6(app6, res6, 7, 2, nil))))
	// Destination options claiming 64 bytes in a 20-byte payload.
	inject(ipv6Packet(app6, res6, uint8(header.IPv6DestinationOptionsExtHdrIdentifier), cat([]byte{icmp6, 7, 1, 4, 0, 0, 0, 0}, echo6(app6, res6, 7, 3, nil))))
	// A chain of extension headers that never ends within the packet.
	var chain []byte
	for range 40 {
		chain = append(chain, destOpts(uint8(header.IPv6DestinationOptionsExtHdrIdentifier))...)
	}
	inject(ipv6Packet(app6, res6, uint8(header.IPv6DestinationOptionsExtHdrIdentifier), chain))
	// IPv4: an echo in two fragments.
	src4, dst4 := netip.MustParseAddr("10.9.0.2"), netip.MustParseAddr("198.18.7.7")
	whole := buildEcho4(src4, dst4, append([]byte{0, 7, 0, 4}, make([]byte, 20)...))
	ic := header.ICMPv4(whole[header.IPv4MinimumSize:])
	ic.SetType(header.ICMPv4Echo)
	ic.SetChecksum(0)
	ic.SetChecksum(^checksum.Checksum(ic, 0))
	for i, part := range [][]byte{ic[:16], ic[16:]} {
		p := make([]byte, header.IPv4MinimumSize+len(part))
		ip := header.IPv4(p)
		flags := uint8(0)
		if i == 0 {
			flags = header.IPv4FlagMoreFragments
		}
		ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(p)), ID: 99, Flags: flags, FragmentOffset: uint16(i * 16), TTL: 64,
			Protocol: uint8(header.ICMPv4ProtocolNumber), SrcAddr: tcpip.AddrFrom4(src4.As4()), DstAddr: tcpip.AddrFrom4(dst4.As4())})
		ip.SetChecksum(^ip.CalculateChecksum())
		copy(p[header.IPv4MinimumSize:], part)
		inject(p)
	}
	// The sentinel: a whole echo, answered by the handler.
	inject(ipv6Packet(app6, res6, icmp6, echo6(app6, res6, 7, 100, nil)))
	if seq := nextReplySeq(t, replies); seq != 100 {
		t.Fatalf("first echo reply has sequence %d, want only the sentinel's (100): a fragment or malformed echo was answered", seq)
	}
	if n := h.echoes.Load(); n != 1 {
		t.Errorf("handler saw %d echoes, want only the sentinel", n)
	}
	// 2 IPv6 first fragments, 2 malformed chains, 2 IPv4 fragments.
	if got := ns.EchoDropped(); got != 6 {
		t.Errorf("EchoDropped = %d, want 6", got)
	}
}

// TCP behind a destination options header, and a UDP datagram in two IPv6
// fragments, reach the handler through gVisor (which parses and reassembles
// them).
func TestTCPAndUDPBehindExtensionHeaders(t *testing.T) {
	_, dev, _ := startStack(t, &testHandler{})
	synAck := make(chan struct{}, 1)
	udpReply := make(chan []byte, 1)
	dev.SetTap(func(p []byte) bool {
		if header.IPVersion(p) != header.IPv6Version {
			return false
		}
		ip := header.IPv6(p)
		switch ip.TransportProtocol() {
		case header.TCPProtocolNumber:
			if f := header.TCP(ip.Payload()).Flags(); f.Contains(header.TCPFlagSyn | header.TCPFlagAck) {
				synAck <- struct{}{}
			}
			return true
		case header.UDPProtocolNumber:
			udpReply <- append([]byte(nil), header.UDP(ip.Payload()).Payload()...)
			return true
		}
		return false
	})
	src, dst := tcpip.AddrFrom16(app6.As16()), tcpip.AddrFrom16(res6.As16())
	syn := header.TCP(make([]byte, header.TCPMinimumSize))
	syn.Encode(&header.TCPFields{SrcPort: 40000, DstPort: 80, SeqNum: 1, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagSyn, WindowSize: 65535})
	syn.SetChecksum(^syn.CalculateChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, src, dst, uint16(len(syn)))))
	if err := dev.Inject(ipv6Packet(app6, res6, uint8(header.IPv6DestinationOptionsExtHdrIdentifier), cat(destOpts(uint8(header.TCPProtocolNumber)), syn))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-synAck:
	case <-time.After(5 * time.Second):
		t.Fatal("no SYN-ACK for a SYN behind a destination options header")
	}

	payload := []byte("sixteen-byte-msg-and-eight") // 8 + 26 = 34 bytes: fragments of 16 and 18
	u := header.UDP(make([]byte, header.UDPMinimumSize+len(payload)))
	u.Encode(&header.UDPFields{SrcPort: 40001, DstPort: 53, Length: uint16(len(u))})
	copy(u.Payload(), payload)
	u.SetChecksum(^u.CalculateChecksum(checksum.Checksum(payload, header.PseudoHeaderChecksum(header.UDPProtocolNumber, src, dst, uint16(len(u))))))
	udp := uint8(header.UDPProtocolNumber)
	frag6 := uint8(header.IPv6FragmentExtHdrIdentifier)
	for _, p := range [][]byte{
		ipv6Packet(app6, res6, frag6, cat(fragHdr(udp, 0, true, 5), u[:16])),
		ipv6Packet(app6, res6, frag6, cat(fragHdr(udp, 2, false, 5), u[16:])),
	} {
		if err := dev.Inject(p); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case got := <-udpReply:
		if string(got) != "re:"+string(payload) {
			t.Fatalf("UDP reply %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no reply to a UDP datagram in two IPv6 fragments")
	}
}
