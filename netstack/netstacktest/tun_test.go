package netstacktest

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func TestTUNInjectReadWrite(t *testing.T) {
	dev := NewTUN("mem0", 1400)
	if ev := <-dev.Events(); ev != tun.EventUp {
		t.Fatalf("first event %v, want up", ev)
	}
	for _, p := range []string{"a", "bb", "ccc"} {
		if err := dev.Inject([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	bufs := [][]byte{make([]byte, 16), make([]byte, 16), make([]byte, 16), make([]byte, 16)}
	sizes := make([]int, len(bufs))
	n, err := dev.Read(bufs, sizes, 2)
	if err != nil || n != 3 || string(bufs[2][2:2+sizes[2]]) != "ccc" {
		t.Fatalf("Read: %d packets, %v, third %q", n, err, bufs[2][2:2+sizes[2]])
	}
	if _, err := dev.Write([][]byte{[]byte("..out")}, 2); err != nil {
		t.Fatal(err)
	}
	if got := <-dev.Outbound(); string(got) != "out" {
		t.Fatalf("Outbound %q", got)
	}
	dev.SetTap(func(p []byte) bool { return string(p) == "tapped" })
	for i := 0; i < outQueue+3; i++ {
		_, _ = dev.Write([][]byte{[]byte("tapped"), []byte("kept")}, 0)
	}
	if dev.Dropped() != 3 || len(dev.Outbound()) != outQueue {
		t.Fatalf("dropped %d, queued %d; want 3 dropped and the tapped ones consumed", dev.Dropped(), len(dev.Outbound()))
	}
	dev.Close()
	if err := dev.Inject([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Inject after Close: %v", err)
	}
	if _, err := dev.Read(bufs, sizes, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
}

// TestHostUDPRoundTrip: what a host socket sends comes out of the device as
// an IP packet; a packet written to the device reaches the host socket.
func TestHostUDPRoundTrip(t *testing.T) {
	h, err := NewHost(netip.MustParseAddr("10.9.0.2"), 1500)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	dst := netip.MustParseAddrPort("100.96.0.53:53")
	c, err := h.DialUDP(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("query")); err != nil {
		t.Fatal(err)
	}
	bufs, sizes := [][]byte{make([]byte, 1500)}, []int{0}
	if _, err := h.TUN.Read(bufs, sizes, 0); err != nil {
		t.Fatal(err)
	}
	ip := header.IPv4(bufs[0][:sizes[0]])
	u := header.UDP(ip.Payload())
	if ip.DestinationAddress() != tcpip.AddrFrom4(dst.Addr().As4()) || u.DestinationPort() != 53 || string(u.Payload()) != "query" {
		t.Fatalf("device read %v:%d %q", ip.DestinationAddress(), u.DestinationPort(), u.Payload())
	}
	// Answer: swap the addresses and ports.
	reply := make([]byte, header.IPv4MinimumSize+header.UDPMinimumSize+len("answer"))
	rip := header.IPv4(reply)
	rip.Encode(&header.IPv4Fields{TotalLength: uint16(len(reply)), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
		SrcAddr: ip.DestinationAddress(), DstAddr: ip.SourceAddress()})
	rip.SetChecksum(^rip.CalculateChecksum())
	ru := header.UDP(rip.Payload())
	ru.Encode(&header.UDPFields{SrcPort: 53, DstPort: u.SourcePort(), Length: uint16(header.UDPMinimumSize + len("answer"))})
	copy(ru.Payload(), "answer")
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, rip.SourceAddress(), rip.DestinationAddress(), ru.Length())
	ru.SetChecksum(^ru.CalculateChecksum(checksum.Checksum(ru.Payload(), xsum)))
	if _, err := h.TUN.Write([][]byte{reply}, 0); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "answer" {
		t.Fatalf("host read %q, %v", buf[:n], err)
	}
}
