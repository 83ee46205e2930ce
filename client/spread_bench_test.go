package client

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
)

// BenchmarkFlowOpen opens a flow to the echo server, echoes one byte and
// closes it, through the in-process controller and connector, with one
// connection per connector (as before spread.go), with the default and with
// short flows packed (spreadAt 2^20); sequentially and with 64 goroutines.
func BenchmarkFlowOpen(b *testing.B) {
	for _, v := range []struct {
		name            string
		conns, spreadAt int
	}{{"conns=1", 1, 0}, {"default", 0, 0}, {"pack", 0, 1 << 20}} {
		for _, par := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/par=%d", v.name, par), func(b *testing.B) {
				s := newSpreadLab(b, v.conns)
				if v.spreadAt > 0 {
					s.d.currentPool().spreadAt = v.spreadAt
				}
				one := func() error {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					c, err := s.d.DialTCP(ctx, "127.0.0.1", s.port)
					if err != nil {
						return err
					}
					defer c.Close()
					if _, err := c.Write([]byte{1}); err != nil {
						return err
					}
					_, err = io.ReadFull(c, make([]byte, 1))
					return err
				}
				if err := one(); err != nil { // warm: connections up
					b.Fatal(err)
				}
				// CPU per flow (client, connector and echo server: one
				// process) tells more than time per flow on a busy machine.
				cpu0 := processCPU()
				defer func() {
					b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-us/flow")
				}()
				b.ResetTimer()
				if par == 1 {
					for i := 0; i < b.N; i++ {
						if err := one(); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				b.SetParallelism((par + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := one(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// BenchmarkRRUnderBulk measures 64-byte request/response round trips on one
// flow while another flow to the same connector moves bulk data both ways
// (an echo server), with one connection per connector, the default, and
// the default without bulk flows yielding on either side (conns=-1),
// interleaved over rounds. Metrics: p50-us, p99-us.
func BenchmarkRRUnderBulk(b *testing.B) {
	for round := 1; round <= 3; round++ {
		for _, conns := range []int{1, 0, -1} {
			b.Run(fmt.Sprintf("round=%d/conns=%d", round, conns), func(b *testing.B) {
				s := newSpreadLab(b, max(conns, 0), conns < 0)
				if conns < 0 {
					s.d.currentPool().bulkTarget = 0
				}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				bulk, err := s.d.DialTCP(ctx, "127.0.0.1", s.port)
				if err != nil {
					b.Fatal(err)
				}
				defer bulk.Close()
				go func() {
					buf := make([]byte, 64<<10)
					for ctx.Err() == nil {
						if _, err := bulk.Write(buf); err != nil {
							return
						}
					}
				}()
				go func() { _, _ = io.Copy(io.Discard, bulk) }()
				// Let the bulk flow turn bulk and fill its queues.
				p := s.d.currentPool()
				testenv.Eventually(b, 5*time.Second, "bulk flow", func() bool {
					p.loadMu.Lock()
					defer p.loadMu.Unlock()
					return conns == 1 || len(p.bulk) > 0
				})
				rr, err := s.d.DialTCP(ctx, "127.0.0.1", s.port)
				if err != nil {
					b.Fatal(err)
				}
				defer rr.Close()
				p50, p99 := benchRoundTrips(b, rr)
				b.ReportMetric(float64(p50.Microseconds()), "p50-us")
				b.ReportMetric(float64(p99.Microseconds()), "p99-us")
			})
		}
	}
}

// BenchmarkParallelFlows moves 4 MiB each way through each of 16
// concurrent flows (echo server), with one connection per connector, the
// default placement (short flows packed, a connection of their own for
// flows next to a bulk one) and flows spread one per connection
// (spreadAt 1), interleaved over rounds. Metric: aggregate MB/s.
func BenchmarkParallelFlows(b *testing.B) {
	const flows, each = 16, 4 << 20
	for round := 1; round <= 3; round++ {
		for _, v := range []struct {
			name            string
			conns, spreadAt int
		}{{"conns=1", 1, 0}, {"default", 0, 0}, {"spread", 0, 1}} {
			b.Run(fmt.Sprintf("round=%d/%s", round, v.name), func(b *testing.B) {
				s := newSpreadLab(b, v.conns)
				if v.spreadAt > 0 {
					s.d.currentPool().spreadAt = v.spreadAt
				}
				s.warm(b) // connections up
				b.ResetTimer()
				start, cpu0 := time.Now(), processCPU()
				for i := 0; i < b.N; i++ {
					var wg sync.WaitGroup
					errs := make(chan error, flows)
					for f := 0; f < flows; f++ {
						wg.Add(1)
						go func() {
							defer wg.Done()
							c, err := s.d.DialTCP(context.Background(), "127.0.0.1", s.port)
							if err != nil {
								errs <- err
								return
							}
							defer c.Close()
							go func() {
								buf := make([]byte, 64<<10)
								for n := 0; n < each; n += len(buf) {
									if _, err := c.Write(buf); err != nil {
										return
									}
								}
							}()
							if _, err := io.CopyN(io.Discard, c, each); err != nil {
								errs <- err
							}
						}()
					}
					wg.Wait()
					close(errs)
					if err := <-errs; err != nil {
						b.Fatal(err)
					}
				}
				gb := float64(2*flows*each*b.N) / 1e9
				b.ReportMetric(gb*1e3/time.Since(start).Seconds(), "MB/s")
				b.ReportMetric((processCPU()-cpu0).Seconds()/gb, "cpu-s/GB")
			})
		}
	}
}
