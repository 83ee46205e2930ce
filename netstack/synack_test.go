package netstack

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
)

// tcpPacket builds an IPv4 TCP segment without payload carrying a
// timestamp option.
func tcpPacket(src, dst netip.AddrPort, seq, ack uint32, flags header.TCPFlags, tsVal, tsEcr uint32) []byte {
	opts := []byte{header.TCPOptionNOP, header.TCPOptionNOP, header.TCPOptionTS, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(opts[4:], tsVal)
	binary.BigEndian.PutUint32(opts[8:], tsEcr)
	tcpLen := header.TCPMinimumSize + len(opts)
	p := make([]byte, header.IPv4MinimumSize+tcpLen)
	ip := header.IPv4(p)
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(p)), TTL: 64, Protocol: uint8(header.TCPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.Addr().As4()), DstAddr: tcpip.AddrFrom4(dst.Addr().As4())})
	ip.SetChecksum(^ip.CalculateChecksum())
	tc := header.TCP(p[header.IPv4MinimumSize:])
	tc.Encode(&header.TCPFields{SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: seq, AckNum: ack,
		DataOffset: uint8(tcpLen), Flags: flags, WindowSize: 65535})
	copy(tc[header.TCPMinimumSize:], opts)
	xsum := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(tcpLen))
	tc.SetChecksum(^checksum.Checksum(tc, xsum))
	return p
}

func TestIsSynAck(t *testing.T) {
	a := netip.MustParseAddrPort("10.9.0.2:40000")
	b := netip.MustParseAddrPort("100.96.1.7:80")
	v6 := make([]byte, header.IPv6MinimumSize+header.TCPMinimumSize)
	header.IPv6(v6).Encode(&header.IPv6Fields{PayloadLength: header.TCPMinimumSize, TransportProtocol: header.TCPProtocolNumber,
		HopLimit: 64, SrcAddr: tcpip.AddrFrom16([16]byte{0xfd, 15: 1}), DstAddr: tcpip.AddrFrom16([16]byte{0xfd, 15: 2})})
	header.TCP(v6[header.IPv6MinimumSize:]).Encode(&header.TCPFields{SrcPort: 80, DstPort: 40000, DataOffset: header.TCPMinimumSize,
		Flags: header.TCPFlagSyn | header.TCPFlagAck})
	for _, tc := range []struct {
		name string
		p    []byte
		want bool
	}{
		{"SYN-ACK", tcpPacket(b, a, 1, 2, header.TCPFlagSyn|header.TCPFlagAck, 1, 1), true},
		{"IPv6 SYN-ACK", v6, true},
		{"SYN", tcpPacket(a, b, 1, 0, header.TCPFlagSyn, 1, 0), false},
		{"ACK", tcpPacket(a, b, 1, 2, header.TCPFlagAck, 1, 1), false},
		{"SYN-ACK with RST", tcpPacket(b, a, 1, 2, header.TCPFlagSyn|header.TCPFlagAck|header.TCPFlagRst, 1, 1), false},
		{"truncated", tcpPacket(b, a, 1, 2, header.TCPFlagSyn|header.TCPFlagAck, 1, 1)[:header.IPv4MinimumSize+10], false},
		{"empty", nil, false},
		{"not IP", []byte{0x10, 0, 0, 0}, false},
	} {
		if got := isSynAck(tc.p); got != tc.want {
			t.Errorf("%s: isSynAck = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// acceptSignal accepts every TCP request and reports Accept's outcome.
type acceptSignal struct {
	testHandler
	accepted chan error
	mu       sync.Mutex
	conns    []*TCPConn
}

func (h *acceptSignal) HandleTCP(r *TCPRequest) {
	c, err := r.Accept()
	if c != nil {
		h.mu.Lock()
		h.conns = append(h.conns, c)
		h.mu.Unlock()
	}
	h.accepted <- err
}

// TestSynAckWrittenWithoutEndpointLock: a kernel TUN runs the application's
// stack inside the write of a SYN-ACK, so the handshake's ACK can arrive
// before that write returns. The stack must then complete the handshake
// (the SYN-ACK is written after gVisor released the new endpoint): with the
// write under the endpoint's lock, the ACK waited for the write, and gVisor's
// TCP processor spun on the locked endpoint meanwhile (most of posternd's CPU
// while connections were opened). The device's Write here plays the kernel:
// on the SYN-ACK it injects the ACK and waits for Accept to return.
func TestSynAckWrittenWithoutEndpointLock(t *testing.T) {
	h := &acceptSignal{accepted: make(chan error, 1)}
	_, dev, ns := startStack(t, h)
	t.Cleanup(func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, c := range h.conns {
			c.Close()
		}
	})
	app := netip.AddrPortFrom(hostAddr, 40100)
	dst := netip.MustParseAddrPort("100.96.1.7:80")
	const iss, tsApp = 5000, 777
	type outcome struct {
		completed bool
		err       error
	}
	during := make(chan outcome, 1)
	var once sync.Once
	dev.SetTap(func(p []byte) bool {
		if !isSynAck(p) {
			return false
		}
		once.Do(func() {
			ip := header.IPv4(p)
			seg := header.TCP(ip.Payload())
			opts := header.ParseTCPOptions(seg.Options())
			if seg.AckNumber() != iss+1 || !opts.TS {
				during <- outcome{completed: true, err: fmt.Errorf("SYN-ACK acks %d (want %d), timestamps %v", seg.AckNumber(), iss+1, opts.TS)}
				return
			}
			// The endpoint that sent the SYN-ACK is not locked any more
			// (fenceSynAck): an ACK arriving now is processed at once.
			id := stack.TransportEndpointID{LocalAddress: tcpip.AddrFrom4(dst.Addr().As4()), LocalPort: dst.Port(),
				RemoteAddress: tcpip.AddrFrom4(app.Addr().As4()), RemotePort: app.Port()}
			ep, ok := ns.s.FindTransportEndpoint(ipv4.ProtocolNumber, tcp.ProtocolNumber, id, nicID).(*tcp.Endpoint)
			if !ok {
				during <- outcome{completed: true, err: fmt.Errorf("no endpoint for %v", id)}
				return
			}
			if !ep.TryLock() {
				during <- outcome{completed: true, err: fmt.Errorf("the SYN-ACK is written while its endpoint is locked")}
				return
			}
			ep.ResumeWork() // unlocks
			ack := tcpPacket(app, dst, iss+1, seg.SequenceNumber()+1, header.TCPFlagAck, tsApp+1, opts.TSVal)
			if err := dev.Inject(ack); err != nil {
				t.Errorf("inject ACK: %v", err)
			}
			select {
			case err := <-h.accepted:
				during <- outcome{completed: true, err: err}
			case <-time.After(3 * time.Second):
				during <- outcome{}
			}
		})
		return true
	})
	if err := dev.Inject(synPacket(app, dst, iss, tsApp)); err != nil {
		t.Fatal(err)
	}
	select {
	case o := <-during:
		if !o.completed {
			t.Fatal("the handshake did not complete while the SYN-ACK was being written: the ACK waited for the write")
		}
		if o.err != nil {
			t.Fatalf("Accept: %v", o.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no SYN-ACK was written")
	}
}
