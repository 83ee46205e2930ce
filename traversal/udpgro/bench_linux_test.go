package udpgro

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// BenchmarkQUICUpload moves b.N MiB over one QUIC stream on loopback with
// the receiver's socket plain or wrapped (compare the two sub-benchmarks'
// MB/s and CPU in one run).
func BenchmarkQUICUpload(b *testing.B) {
	for _, gro := range []bool{false, true} {
		name := "plain"
		if gro {
			name = "gro"
		}
		b.Run(name, func(b *testing.B) {
			t := &testing.T{}
			a, c := listen(t), listen(t)
			defer a.Close()
			defer c.Close()
			var rx net.PacketConn = a
			if gro {
				rx = Wrap(a)
			}
			srvConf, cliConf := tlsConfigs(t)
			srvTr, cliTr := &quic.Transport{Conn: rx}, &quic.Transport{Conn: c}
			defer srvTr.Close()
			defer cliTr.Close()
			ln, err := srvTr.Listen(srvConf, &quic.Config{})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			done := make(chan int64, 1)
			go func() {
				conn, err := ln.Accept(ctx)
				if err != nil {
					done <- -1
					return
				}
				s, err := conn.AcceptStream(ctx)
				if err != nil {
					done <- -1
					return
				}
				n, _ := io.Copy(io.Discard, s)
				done <- n
			}()
			conn, err := cliTr.Dial(ctx, a.LocalAddr(), cliConf, &quic.Config{})
			if err != nil {
				b.Fatal(err)
			}
			defer conn.CloseWithError(0, "")
			s, err := conn.OpenStreamSync(ctx)
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 1<<20)
			b.SetBytes(1 << 20)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			s.Close()
			if n := <-done; n != int64(b.N)<<20 {
				b.Fatalf("received %d bytes of %d", n, int64(b.N)<<20)
			}
		})
	}
}
