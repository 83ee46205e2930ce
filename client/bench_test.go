package client

import (
	"io"
	"net"
	"testing"
)

// sinkServer discards what it reads and, for each connection, first sends n
// bytes if the client asks with one byte 'd'.
func sourceServer(t testing.TB) (uint16, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 256<<10)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for {
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return uint16(ln.Addr().(*net.TCPAddr).Port), func() { ln.Close() }
}

// BenchmarkTunnelThroughputSOCKS5 measures one TCP flow's download through
// the client core, QUIC on loopback and a real connector (no TUN).
func BenchmarkTunnelThroughputSOCKS5(b *testing.B) {
	port, stop := sourceServer(b)
	defer stop()
	l := newLab(b, renderYAML(port, 1))
	l.startConnector("corp-a", nil)
	d, fe := l.newDaemon()
	l.login(d, "alice@example.com", "alice-password-1")
	waitConnectors(b, d, 1)
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
