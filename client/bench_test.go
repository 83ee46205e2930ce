package client

import (
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
)

// sourceServer sends on every connection until the client goes away.
func sourceServer(t testing.TB) (uint16, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Serve(t, ln, sourceConn)
	return uint16(ln.Addr().(*net.TCPAddr).Port), func() { ln.Close() }
}

// sourceConn writes to c until the peer goes away.
func sourceConn(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 256<<10)
	for {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// sinkConn reads c to its end.
func sinkConn(c net.Conn) {
	defer c.Close()
	_, _ = io.CopyBuffer(io.Discard, c, make([]byte, 256<<10))
}

// echoConn writes back what it reads, in small reads (request/response).
func echoConn(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

// BenchmarkTunnelThroughputSOCKS5 measures one TCP flow's download through
// the client core, QUIC on loopback and a real connector (no TUN).
func BenchmarkTunnelThroughputSOCKS5(b *testing.B) {
	port, stop := sourceServer(b)
	defer stop()
	l := newLab(b, renderYAML(port, 1))
	l.startConnector("corp-a", nil)
	_, fe := l.aliceOnline(1)
	c, code, err := socksConnect(fe, "127.0.0.1", port)
	if err != nil || code != 0 {
		b.Fatalf("connect: %d %v", code, err)
	}
	defer c.Close()
	const chunk = 1 << 20
	b.SetBytes(chunk)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := io.CopyN(io.Discard, c, chunk); err != nil {
			b.Fatal(err)
		}
	}
}

// benchRoundTrips times b.N round trips of a 64-byte message through c to
// an echo server (each sent once the one before came back), from a reset
// benchmark timer, and returns the median and 99th percentile.
func benchRoundTrips(b *testing.B, c io.ReadWriter) (p50, p99 time.Duration) {
	msg, got := make([]byte, 64), make([]byte, 64)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100]
}
