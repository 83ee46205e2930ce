package connector

import (
	"context"
	"net"
	"testing"
	"time"
)

// dialBenchListener accepts and closes connections on loopback until the
// test ends, and returns its address.
func dialBenchListener(tb testing.TB) *net.TCPAddr {
	tb.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr)
}

// BenchmarkDialTCPDirect dials a loopback listener the way a flow dials its
// destination (the kernel finishes the handshake inside connect): one at a
// time and from 64 goroutines.
func BenchmarkDialTCPDirect(b *testing.B) {
	ap := dialBenchListener(b).AddrPort()
	for _, par := range []int{1, 64} {
		b.Run(map[int]string{1: "par=1", 64: "par=64"}[par], func(b *testing.B) {
			b.ReportAllocs()
			dial := func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				c, err := dialTCPDirect(ctx, ap, flowKeepAlive)
				if err != nil {
					b.Error(err)
					return
				}
				c.Close()
			}
			if par == 1 {
				for i := 0; i < b.N; i++ {
					dial()
				}
				return
			}
			b.SetParallelism(par / 2)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					dial()
				}
			})
		})
	}
}
