package relay

import (
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	m := &dto.Metric{}
	if err := c.Write(m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// Bytes and packets to peers count when they leave, not when the relay
// queues them: nothing before the flush, everything after it, and nothing
// for a datagram the kernel refused.
func TestRelayCountsBytesToPeersWhenSent(t *testing.T) {
	m := newMetrics(func() float64 { return 0 })
	g := &countingGenerator{
		RelayAddressGenerator: &familyGenerator{publicIP: net.IPv4(127, 0, 0, 1), relayIP: net.IPv4(127, 0, 0, 1)},
		toPeer:                m.bytes.WithLabelValues("to_peer"),
		fromPeer:              m.bytes.WithLabelValues("from_peer"),
		toPeerPkt:             m.packets.WithLabelValues("to_peer"),
		fromPeerP:             m.packets.WithLabelValues("from_peer"),
		flush:                 &flushSet{},
	}
	pc, _, err := g.AllocatePacketConn("udp4", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if pc.(*countingConn).wr == nil {
		if runtime.GOOS == "linux" {
			t.Fatal("writes to peers of a relayed socket on Linux are not queued")
		}
		t.Skip("writes are queued only where reads are batched (Linux)")
	}
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	for i := 0; i < 3; i++ {
		if _, err := pc.WriteTo(make([]byte, 100), peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	// The kernel refuses this one at flush (an IPv6 peer of an IPv4 socket).
	if _, err := pc.WriteTo(make([]byte, 50), &net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 9}); err != nil {
		t.Fatal(err)
	}
	if b, p := counterValue(t, g.toPeer), counterValue(t, g.toPeerPkt); b != 0 || p != 0 {
		t.Fatalf("before the flush: %v bytes, %v packets counted as sent; want 0", b, p)
	}
	g.flush.flush()
	buf := make([]byte, 200)
	for i := 0; i < 3; i++ {
		_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := peer.ReadFrom(buf); err != nil {
			t.Fatalf("datagram %d at the peer: %v", i, err)
		}
	}
	if b, p := counterValue(t, g.toPeer), counterValue(t, g.toPeerPkt); b != 300 || p != 3 {
		t.Fatalf("after the flush: %v bytes, %v packets; want 300, 3", b, p)
	}
}
