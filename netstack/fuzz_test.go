package netstack

import (
	"bytes"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"postern.dev/postern/netstack/netstacktest"
)

// fuzzHandler accepts TCP and closes it, closes UDP flows, and hands echo
// requests to a channel after replying with their body.
type fuzzHandler struct{ echoes chan *EchoRequest }

func (h *fuzzHandler) HandleTCP(r *TCPRequest) {
	if c, err := r.Accept(); err == nil {
		c.Close()
	}
}
func (h *fuzzHandler) HandleUDP(c *UDPConn) { c.Close() }
func (h *fuzzHandler) HandleEcho(e *EchoRequest) {
	_ = e.Reply(e.Body)
	select {
	case h.echoes <- e:
	default:
	}
}

func fuzzStack(f *testing.F) (*Stack, *netstacktest.TUN, *fuzzHandler) {
	// Packets are injected straight into the link endpoint (ns.ep.deliver,
	// what the read loop does with each packet it reads).
	dev := netstacktest.NewTUN("fuzz0", 1500)
	h := &fuzzHandler{echoes: make(chan *EchoRequest, 64)}
	ns, err := New(dev, h, Config{MTU: 1500, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { ns.Close() })
	return ns, dev, h
}

// packetSeeds are well-formed packets of each kind the device carries.
func packetSeeds() [][]byte {
	src4, dst4 := netip.MustParseAddr("10.9.0.2"), netip.MustParseAddr("100.96.3.3")
	src6, dst6 := netip.MustParseAddr("fd00::2"), netip.MustParseAddr("fd7a:7073:746e::5")
	echo4 := buildEcho4(src4, dst4, []byte{0, 1, 0, 1, 'p', 'i', 'n', 'g'})
	header.ICMPv4(echo4[header.IPv4MinimumSize:]).SetType(header.ICMPv4Echo)
	echo6 := buildEcho6(src6, dst6, []byte{0, 1, 0, 1, 'p'})
	header.ICMPv6(echo6[header.IPv6MinimumSize:]).SetType(header.ICMPv6EchoRequest)

	tcp4 := make([]byte, header.IPv4MinimumSize+header.TCPMinimumSize)
	ip := header.IPv4(tcp4)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(tcp4)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src4.As4()), DstAddr: tcpip.AddrFrom4(dst4.As4())})
	ip.SetChecksum(^ip.CalculateChecksum())
	tc := header.TCP(tcp4[header.IPv4MinimumSize:])
	tc.Encode(&header.TCPFields{SrcPort: 40000, DstPort: 80, SeqNum: 1, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagSyn, WindowSize: 65535})
	tc.SetChecksum(^tc.CalculateChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), header.TCPMinimumSize)))

	udp4 := make([]byte, header.IPv4MinimumSize+header.UDPMinimumSize+4)
	ip = header.IPv4(udp4)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(udp4)), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src4.As4()), DstAddr: tcpip.AddrFrom4(dst4.As4())})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(udp4[header.IPv4MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: 5353, DstPort: 53, Length: header.UDPMinimumSize + 4})
	copy(udp4[header.IPv4MinimumSize+header.UDPMinimumSize:], "data")

	frag := bytes.Clone(echo4)
	header.IPv4(frag).SetFlagsFragmentOffset(header.IPv4FlagMoreFragments, 0)
	short := bytes.Clone(echo4[:header.IPv4MinimumSize+2])
	liar := bytes.Clone(echo6)
	header.IPv6(liar).SetPayloadLength(60000)
	return [][]byte{echo4, echo6, tcp4, udp4, frag, short, liar, {0x45}, {0x60, 0, 0, 0}, {}}
}

// FuzzTUNPacket injects arbitrary bytes as packets read from the TUN into
// the netstack (interceptor, then gVisor's IPv4/IPv6, TCP, UDP): nothing
// panics or hangs, and the stack still answers a ping afterwards.
func FuzzTUNPacket(f *testing.F) {
	for _, p := range packetSeeds() {
		f.Add(p)
	}
	ns, _, h := fuzzStack(f)
	ping := packetSeeds()[0]
	n := 0
	f.Fuzz(func(t *testing.T, p []byte) {
		ns.ep.deliver(bytes.Clone(p))
		if n++; n%1000 != 0 {
			return
		}
		for len(h.echoes) > 0 {
			<-h.echoes
		}
		ns.ep.deliver(bytes.Clone(ping))
		select {
		case <-h.echoes:
		case <-time.After(5 * time.Second):
			t.Fatal("the stack stopped taking packets")
		}
	})
}

// FuzzICMPIntercept: the interceptor takes exactly the well-formed,
// unfragmented ICMP/ICMPv6 echo requests, hands on their addresses and body
// unchanged, and the reply it writes is a well-formed echo reply.
func FuzzICMPIntercept(f *testing.F) {
	for _, p := range packetSeeds() {
		f.Add(p)
	}
	ns, dev, h := fuzzStack(f)
	f.Fuzz(func(t *testing.T, p []byte) {
		for len(h.echoes) > 0 {
			<-h.echoes
		}
		for len(dev.Outbound()) > 0 {
			<-dev.Outbound()
		}
		want, wantOK := parseEcho(p)
		dropped := ns.EchoDropped()
		got := ns.interceptEcho(bytes.Clone(p))
		if wantOK && (!got || ns.EchoDropped() != dropped) {
			t.Fatalf("intercepted=%v (dropped %d), want the echo handed on for %x", got, ns.EchoDropped()-dropped, p)
		}
		if !wantOK {
			// Not an echo to hand on: either left to gVisor or dropped
			// (ICMP fragments, malformed headers) and counted.
			if got && ns.EchoDropped() != dropped+1 {
				t.Fatalf("intercepted a non-echo without counting a drop: %x", p)
			}
			return
		}
		var e *EchoRequest
		select {
		case e = <-h.echoes:
		case <-time.After(5 * time.Second):
			t.Fatal("echo request not handed to the handler")
		}
		if e.Src != want.Src || e.Dst != want.Dst || !bytes.Equal(e.Body, want.Body) {
			t.Fatalf("got %v->%v %x, want %v->%v %x", e.Src, e.Dst, e.Body, want.Src, want.Dst, want.Body)
		}
		if len(e.Body) < 4 {
			return // Reply refuses a body without identifier and sequence
		}
		var r []byte
		select {
		case r = <-dev.Outbound():
		case <-time.After(5 * time.Second):
			t.Fatal("no reply written")
		}
		checkReply(t, r, e)
	})
}

// parseEcho is an independent reading of an echo request.
func parseEcho(p []byte) (EchoRequest, bool) {
	if len(p) == 0 {
		return EchoRequest{}, false
	}
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return EchoRequest{}, false
		}
		ihl := int(p[0]&0xf) * 4
		total := int(p[2])<<8 | int(p[3])
		if ihl < 20 || total < ihl || total > len(p) || p[9] != 1 || p[6]&0x20 != 0 || (int(p[6]&0x1f)<<8|int(p[7])) != 0 {
			return EchoRequest{}, false
		}
		icmp := p[ihl:total]
		if len(icmp) < 8 || icmp[0] != 8 || icmp[1] != 0 {
			return EchoRequest{}, false
		}
		src, _ := netip.AddrFromSlice(p[12:16])
		dst, _ := netip.AddrFromSlice(p[16:20])
		return EchoRequest{Src: src, Dst: dst, Body: icmp[4:]}, true
	case 6:
		if len(p) < 40 {
			return EchoRequest{}, false
		}
		end := 40 + (int(p[4])<<8 | int(p[5]))
		if end > len(p) {
			return EchoRequest{}, false
		}
		// Skip hop-by-hop, routing and destination options headers; an
		// echo in a fragment, or behind more than 15 headers, is never
		// handed on.
		next, off := p[6], 40
		for n := 0; next == 0 || next == 43 || next == 60; n++ {
			if off+2 > end || n == 15 {
				return EchoRequest{}, false
			}
			next, off = p[off], off+(int(p[off+1])+1)*8
			if off > end {
				return EchoRequest{}, false
			}
		}
		if next != 58 {
			return EchoRequest{}, false
		}
		icmp := p[off:end]
		if len(icmp) < 8 || icmp[0] != 128 || icmp[1] != 0 {
			return EchoRequest{}, false
		}
		src, _ := netip.AddrFromSlice(p[8:24])
		dst, _ := netip.AddrFromSlice(p[24:40])
		return EchoRequest{Src: src, Dst: dst, Body: icmp[4:]}, true
	}
	return EchoRequest{}, false
}

func checkReply(t *testing.T, r []byte, e *EchoRequest) {
	t.Helper()
	if e.Src.Is4() {
		ip := header.IPv4(r)
		if len(r) < header.IPv4MinimumSize || !ip.IsValid(len(r)) || !ip.IsChecksumValid() || int(ip.TotalLength()) != len(r) {
			t.Fatalf("reply is no valid IPv4 packet: %x", r)
		}
		if addrFromTCPIP(ip.SourceAddress()) != e.Dst || addrFromTCPIP(ip.DestinationAddress()) != e.Src {
			t.Fatalf("reply %v -> %v", ip.SourceAddress(), ip.DestinationAddress())
		}
		ic := header.ICMPv4(ip.Payload())
		if ic.Type() != header.ICMPv4EchoReply || !bytes.Equal(ic[4:], e.Body) {
			t.Fatalf("reply ICMP %x", []byte(ic))
		}
		return
	}
	ip := header.IPv6(r)
	if len(r) < header.IPv6MinimumSize || int(ip.PayloadLength())+header.IPv6MinimumSize != len(r) {
		t.Fatalf("reply is no valid IPv6 packet: %x", r)
	}
	ic := header.ICMPv6(ip.Payload())
	if ic.Type() != header.ICMPv6EchoReply || !bytes.Equal(ic[4:], e.Body) {
		t.Fatalf("reply ICMPv6 %x", []byte(ic))
	}
}
