package traversal

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"
)

// BenchmarkTURNReceive measures datagrams from a peer through a TURN relay
// (pion's server, in this process) to the client's relayed socket, as
// quic-go reads them: one op is one 1,200-byte datagram, sent in bursts of
// 32 and read back. It uses only allocate and the relayed socket, so it
// runs unchanged on older trees for a comparison.
func BenchmarkTURNReceive(b *testing.B) {
	ri, creds, _ := plainTURN(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	al, err := allocate(ctx, ri, TransportUDP, creds)
	if err != nil {
		b.Fatal(err)
	}
	defer al.close()
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer peer.Close()
	_ = peer.SetWriteBuffer(4 << 20)
	if err := al.permit([]*net.UDPAddr{peer.LocalAddr().(*net.UDPAddr)}); err != nil {
		b.Fatal(err)
	}
	relayed := al.conn.LocalAddr()
	buf := make([]byte, 1452)
	// Round trips until pion's channel binding is surely in place (it
	// binds after the first write to the peer).
	start := time.Now()
	for i := 0; i < 10 || time.Since(start) < 200*time.Millisecond; i++ {
		if _, err := al.conn.WriteTo([]byte("up"), peer.LocalAddr()); err != nil {
			b.Fatal(err)
		}
		_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := peer.ReadFrom(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := peer.WriteTo([]byte("down"), relayed); err != nil {
			b.Fatal(err)
		}
		_ = al.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := al.conn.ReadFrom(buf); err != nil {
			b.Fatal(err)
		}
	}
	msg := bytes.Repeat([]byte{0x5a}, 1200)
	const burst = 32
	lost := 0
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(burst, b.N-done)
		for i := 0; i < n; i++ {
			if _, err := peer.WriteTo(msg, relayed); err != nil {
				b.Fatal(err)
			}
		}
		_ = al.conn.SetReadDeadline(time.Now().Add(time.Second))
		for i := 0; i < n; i++ {
			if _, _, err := al.conn.ReadFrom(buf); err != nil {
				lost += n - i
				break
			}
		}
		done += n
	}
	b.StopTimer()
	if lost > b.N/100 {
		b.Fatalf("%d of %d datagrams lost", lost, b.N)
	}
}
