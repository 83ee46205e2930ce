package netstack

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/netstack/netstacktest"
)

var hostAddr = netip.MustParseAddr("10.9.0.2")

// newHost builds the application-side stack and the in-memory device.
func newHost(t *testing.T) (*stack.Stack, *netstacktest.TUN) {
	t.Helper()
	h, err := netstacktest.NewHost(hostAddr, 1500)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h.Stack, h.TUN
}

// testHandler accepts TCP port 80 (echo), rejects everything else, echoes
// UDP and answers echo requests with the request body.
type testHandler struct {
	gate chan struct{} // when set, Accept waits for it
}

func (h *testHandler) HandleTCP(r *TCPRequest) {
	if r.Dst.Port() != 80 {
		r.Reject()
		return
	}
	if h.gate != nil {
		<-h.gate
	}
	c, err := r.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	_, _ = io.Copy(c, c)
	_ = c.CloseWrite()
}

func (h *testHandler) HandleUDP(c *UDPConn) {
	defer c.Close()
	buf := make([]byte, 2048)
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		return
	}
	_, _ = c.Write(append([]byte("re:"), buf[:n]...))
}

func (h *testHandler) HandleEcho(e *EchoRequest) { _ = e.Reply(e.Body) }

func toFull(ap netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(ap.Addr().As4()), Port: ap.Port()}
}

func startStack(t *testing.T, h Handler) (*stack.Stack, *netstacktest.TUN, *Stack) {
	t.Helper()
	host, dev := newHost(t)
	ns, err := New(dev, h, Config{MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return host, dev, ns
}

func TestTCPAcceptAndHalfClose(t *testing.T) {
	host, _, _ := startStack(t, &testHandler{})
	dst := netip.MustParseAddrPort("100.96.1.7:80")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := gonet.DialContextTCP(ctx, host, toFull(dst), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	msg := strings.Repeat("postern ", 100000)
	go func() {
		_, _ = io.WriteString(c, msg)
		_ = c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != msg {
		t.Fatalf("echo: %d bytes, err %v", len(got), err)
	}
}

func TestTCPRejectIsRST(t *testing.T) {
	host, _, _ := startStack(t, &testHandler{})
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := gonet.DialContextTCP(ctx, host, toFull(netip.MustParseAddrPort("100.96.1.7:81")), ipv4.ProtocolNumber)
	if err == nil {
		t.Fatal("dial to a rejected port succeeded")
	}
	if !strings.Contains(err.Error(), "refused") {
		t.Errorf("error %v, want connection refused", err)
	}
	if el := time.Since(start); el > 100*time.Millisecond {
		t.Errorf("refusal took %v", el)
	}
}

func TestHandshakeWaitsForHandler(t *testing.T) {
	h := &testHandler{gate: make(chan struct{})}
	host, _, _ := startStack(t, h)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := gonet.DialContextTCP(ctx, host, toFull(netip.MustParseAddrPort("100.96.1.8:80")), ipv4.ProtocolNumber)
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("handshake completed before the handler accepted: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(h.gate)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dial after accept: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handshake did not complete after accept")
	}
}

func TestUDPFlow(t *testing.T) {
	host, _, _ := startStack(t, &testHandler{})
	c, err := gonet.DialUDP(host, nil, &tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4([4]byte{100, 96, 2, 9}), Port: 53}, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("query")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "re:query" {
		t.Fatalf("udp reply %q %v", buf[:n], err)
	}
}

func TestICMPEchoIntercepted(t *testing.T) {
	_, dev, _ := startStack(t, &testHandler{})
	replies := make(chan []byte, 1)
	dev.SetTap(func(p []byte) bool {
		if header.IPVersion(p) == 4 && header.IPv4(p).Protocol() == uint8(header.ICMPv4ProtocolNumber) {
			replies <- p
			return true
		}
		return false
	})
	src, dst := netip.MustParseAddr("10.9.0.2"), netip.MustParseAddr("100.96.3.3")
	req := buildEcho4(src, dst, []byte{0x12, 0x34, 0, 7, 'h', 'i'})
	header.ICMPv4(req[header.IPv4MinimumSize:]).SetType(header.ICMPv4Echo)
	ic := header.ICMPv4(req[header.IPv4MinimumSize:])
	ic.SetChecksum(0)
	if err := dev.Inject(req); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-replies:
		ip := header.IPv4(p)
		if !ip.IsChecksumValid() {
			t.Error("bad IPv4 checksum on reply")
		}
		if addrFromTCPIP(ip.SourceAddress()) != dst || addrFromTCPIP(ip.DestinationAddress()) != src {
			t.Errorf("reply %v -> %v", ip.SourceAddress(), ip.DestinationAddress())
		}
		r := header.ICMPv4(ip.Payload())
		if r.Type() != header.ICMPv4EchoReply {
			t.Errorf("type %d", r.Type())
		}
		if id, seq := echoIDSeq(r[4:]); id != 0x1234 || seq != 7 || string(r[8:]) != "hi" {
			t.Errorf("reply body %x", []byte(r))
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no echo reply")
	}
}

func TestEcho6Checksum(t *testing.T) {
	src, dst := netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd7a::5")
	p := buildEcho6(src, dst, []byte{0, 1, 0, 2, 'x'})
	ip := header.IPv6(p)
	ic := header.ICMPv6(ip.Payload())
	want := ic.Checksum()
	ic.SetChecksum(0)
	got := header.ICMPv6Checksum(header.ICMPv6ChecksumParams{Header: ic, Src: ip.SourceAddress(), Dst: ip.DestinationAddress()})
	if got != want {
		t.Errorf("ICMPv6 checksum %x, want %x", want, got)
	}
}

func TestCloseStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	host, dev := newHost(t)
	ns, err := New(dev, &testHandler{}, Config{MTU: 1500})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := gonet.DialContextTCP(ctx, host, toFull(netip.MustParseAddrPort("100.96.1.7:80")), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := ns.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		t.Fatal(err)
	}
	testenv.WaitGoroutines(t, before+8, 5*time.Second)
}

func TestBadConfig(t *testing.T) {
	_, dev := newHost(t)
	if _, err := New(dev, &testHandler{}, Config{MTU: 100}); err == nil {
		t.Error("MTU 100 accepted")
	}
	if _, err := New(nil, &testHandler{}, Config{}); err == nil {
		t.Error("nil device accepted")
	}
}
