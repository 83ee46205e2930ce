package traversal

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/controlapi"
)

// benchConn connects a client to an in-process connector (echo server) over
// the direct or the relayed (TURN over UDP) path on loopback.
func benchConn(b *testing.B, relayed bool) (*quic.Conn, func()) {
	conn, _, done := benchDial(b, relayed)
	return conn, done
}

func benchDial(b *testing.B, relayed bool) (*quic.Conn, *Dialer, func()) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := newWorld(b)
	w.startRelay()
	w.startConnector(ctx)
	cfg := w.dialerConfig([]controlapi.RelayInfo{w.relayInfo})
	cfg.NoDirect = relayed
	d, err := NewDialer(cfg)
	if err != nil {
		b.Fatal(err)
	}
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	conn, p, err := d.Dial(dctx, w.connectorInfo(), w.clientTLS(), &quic.Config{MaxStreamReceiveWindow: 16 << 20, MaxConnectionReceiveWindow: 32 << 20})
	if err != nil {
		b.Fatal(err)
	}
	if want := map[bool]string{true: PathRelay, false: PathDirect}[relayed]; p.Path != want {
		b.Fatalf("path %+v, want %s", p, want)
	}
	return conn, d, func() { conn.CloseWithError(0, ""); d.Close(); cancel() }
}

func benchThroughput(b *testing.B, relayed bool) { benchThroughputPrimed(b, relayed, false) }

// benchThroughputPrimed is benchThroughput; with primers, a low-TTL primer
// leaves the same socket every millisecond during the transfer (to a sink
// on loopback), as during hole punching next to running connections.
func benchThroughputPrimed(b *testing.B, relayed, primers bool) {
	conn, d, done := benchDial(b, relayed)
	defer done()
	if primers {
		sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		defer sink.Close()
		go func() {
			buf := make([]byte, 1500)
			for {
				if _, _, err := sink.ReadFrom(buf); err != nil {
					return
				}
			}
		}()
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			t := time.NewTicker(time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					if err := d.m.prime(sink.LocalAddr().(*net.UDPAddr)); err != nil {
						b.Error(err)
						return
					}
				}
			}
		}()
	}
	s, err := conn.OpenStreamSync(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	go func() { _, _ = io.Copy(io.Discard, s) }()
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func benchRequestResponse(b *testing.B, relayed bool) {
	conn, done := benchConn(b, relayed)
	defer done()
	s, err := conn.OpenStreamSync(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	req, resp := make([]byte, 64), make([]byte, 64)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(s, resp); err != nil {
			b.Fatal(err)
		}
	}
}

// Throughput through the echo connector (upload direction) and 64-byte
// request/response round trips, on the direct and on the relayed path.
func BenchmarkThroughputDirect(b *testing.B) { benchThroughput(b, false) }
func BenchmarkThroughputRelay(b *testing.B)  { benchThroughput(b, true) }

// BenchmarkThroughputDirectWithPrimers: the direct path while primers
// (per-packet TTL 2) leave the same socket; compare with
// BenchmarkThroughputDirect.
func BenchmarkThroughputDirectWithPrimers(b *testing.B) { benchThroughputPrimed(b, false, true) }
func BenchmarkRequestResponse64Direct(b *testing.B)     { benchRequestResponse(b, false) }
func BenchmarkRequestResponse64Relay(b *testing.B)      { benchRequestResponse(b, true) }
