package bench

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"time"
)

// Short connections in a row (issue 15): a tunnel must never stall a new
// connection, also after tens of thousands of short ones have passed (the
// stall fixed there came from the netstack's TIME_WAIT). ShortConnections
// opens count connections, workers at a time, each connect + one 64-byte
// echo + close, and reports the slowest and how many took over 100 ms.

// ShortConnsResult is printed by the short-connections agent.
type ShortConnsResult struct {
	Workers    int     `json:"workers"`
	Conns      int     `json:"conns"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	PerSec     float64 `json:"per_sec"`
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
	MaxUs      float64 `json:"max_us"`
	Over100ms  int     `json:"over_100ms"`
}

// shortConnSlow is the latency a short connection must stay under.
const shortConnSlow = 100 * time.Millisecond

// ShortConnections runs count connect-echo-close exchanges against addr,
// workers at a time; a failed or timed-out (5 s) connection counts as an
// error, never retried.
func ShortConnections(ctx context.Context, addr string, workers, count int) (ShortConnsResult, error) {
	res := ShortConnsResult{Workers: workers}
	if workers < 1 || count < 1 {
		return res, fmt.Errorf("%w: short: want workers and count >= 1", ErrBadAgentArgs)
	}
	var next atomic.Int64
	var errs errCount
	lat := make([][]time.Duration, workers)
	start := time.Now()
	parallel(workers, func(w int) {
		buf := make([]byte, 64)
		dl := net.Dialer{Timeout: 5 * time.Second}
		for next.Add(1) <= int64(count) && ctx.Err() == nil {
			t0 := time.Now()
			err := func() error {
				c, err := dl.DialContext(ctx, "tcp", addr)
				if err != nil {
					return err
				}
				defer c.Close()
				return exchange(c, buf, t0.Add(5*time.Second))
			}()
			if err != nil {
				errs.add(err)
				continue
			}
			lat[w] = append(lat[w], time.Since(t0))
		}
	})
	all, perSec, nerr, first, err := tally("short "+addr, lat, &errs, start)
	res.Conns, res.PerSec, res.Errors, res.FirstError = len(all), perSec, nerr, first
	if err != nil {
		return res, err
	}
	p := DurationPercentiles(all, 50, 99, 100)
	res.P50us, res.P99us, res.MaxUs = p[0], p[1], p[2]
	for _, l := range all {
		if l > shortConnSlow {
			res.Over100ms++
		}
	}
	return res, nil
}

// shortConnWorkers are the concurrencies the issue names.
var shortConnWorkers = []int{1, 8, 64}

// Metric keys of the short-connections phase (+ the worker count).
const (
	MShortConns  = "short_conns_"
	MShortP50    = "short_p50_us_"
	MShortP99    = "short_p99_us_"
	MShortMaxUs  = "short_max_us_"
	MShortOver   = "short_over_100ms_"
	MShortErrors = "short_errors_"
	MShortRate   = "short_conns_per_s_"
)
