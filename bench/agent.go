package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"postern.dev/postern/lab"
)

// The agents are the load generators and servers the harness runs inside
// the namespaces as `postern-bench agent NAME FLAGS...`. Each prints one JSON
// object on stdout (servers print nothing and run until killed).

// RRResult is the outcome of the request/response agent.
type RRResult struct {
	Requests int     `json:"requests"`
	P50us    float64 `json:"p50_us"`
	P99us    float64 `json:"p99_us"`
	MeanUs   float64 `json:"mean_us"`
}

// SetupResult is the outcome of the connection-setup agent.
type SetupResult struct {
	Conns      int     `json:"conns"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	PerSec     float64 `json:"per_sec"`
	ConnectP50 float64 `json:"connect_p50_us"`
	ConnectP99 float64 `json:"connect_p99_us"`
	FirstByte  float64 `json:"first_byte_p50_us"`
}

// HoldResult is printed by the idle-flow agent once every flow is open.
type HoldResult struct {
	Opened     int     `json:"opened"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	Seconds    float64 `json:"seconds"`
}

// DNSResult is the outcome of the DNS load agent.
type DNSResult struct {
	Queries    int     `json:"queries"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
	PerSec     float64 `json:"per_sec"`
	P50us      float64 `json:"p50_us"`
	P99us      float64 `json:"p99_us"`
}

// AgentMain runs one agent; args start with its name.
func AgentMain(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: want an agent name (echo-server, rr, setup, short, hold, dns, dns-upstream)", ErrBadAgentArgs)
	}
	name, args := args[0], args[1:]
	fs := flag.NewFlagSet("agent "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addr := fs.String("addr", "", "address ip:port to connect to or listen on")
	size := fs.Int("size", 64, "request/response size in bytes")
	dur := fs.Duration("duration", time.Second, "how long to run")
	workers := fs.Int("workers", 64, "concurrent workers")
	n := fs.Int("n", 1000, "flows to hold open")
	qname := fs.String("name", "", "DNS name to query")
	zone := fs.String("zone", "", "dns-upstream: zone")
	record := fs.String("record", "", "dns-upstream: NAME=IP")
	timeout := fs.Duration("timeout", time.Minute, "hold: stop opening flows after this long")
	count := fs.Int("count", 1000, "short: connections to open in all")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: agent %s: %v", ErrBadAgentArgs, name, err)
	}
	if *addr == "" {
		return fmt.Errorf("%w: agent %s: --addr is required", ErrBadAgentArgs, name)
	}
	var res any
	var err error
	switch name {
	case "echo-server":
		return EchoServer(ctx, *addr)
	case "dns-upstream":
		cfg := lab.DNSConfig{Listen: *addr, Records: map[string]string{}, Logger: slog.New(slog.DiscardHandler)}
		if *zone != "" {
			cfg.Zones = []string{*zone}
		}
		if k, v, ok := strings.Cut(*record, "="); ok {
			cfg.Records[k] = v
		}
		return lab.ServeDNS(ctx, cfg)
	case "rr":
		res, err = RequestResponse(ctx, *addr, *size, *dur)
	case "setup":
		res, err = ConnectionSetup(ctx, *addr, *workers, *dur)
	case "short":
		res, err = ShortConnections(ctx, *addr, *workers, *count)
	case "hold":
		hctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		return Hold(hctx, ctx, *addr, *n, *workers, stdout, os.Stdin)
	case "dns":
		if *qname == "" {
			return fmt.Errorf("%w: agent dns: --name is required", ErrBadAgentArgs)
		}
		res, err = DNSLoad(ctx, *addr, *qname, *workers, *dur)
	default:
		return fmt.Errorf("%w: unknown agent %q", ErrBadAgentArgs, name)
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(res)
}

// EchoServer echoes every byte back on each TCP connection until ctx ends.
func EchoServer(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("echo server listen %s: %w", addr, err)
	}
	return serveEcho(ctx, ln)
}

func serveEcho(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	warned := false
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer func() {
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// Out of descriptors (or another passing condition): back off
			// and keep serving, like net/http does.
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				if !warned {
					fmt.Fprintf(os.Stderr, "echo server accept: %v (%d connections open); retrying\n", err, len(conns))
					warned = true
				}
				time.Sleep(20 * time.Millisecond)
				continue
			}
			return fmt.Errorf("echo server accept: %w", err)
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A plain loop: io.Copy would splice through a pipe, holding two
			// more descriptors per connection.
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					if _, werr := c.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			c.Close()
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
}

// RequestResponse sends size-byte requests one at a time on one connection
// and waits for each echo, for d; it reports latency percentiles.
func RequestResponse(ctx context.Context, addr string, size int, d time.Duration) (RRResult, error) {
	var res RRResult
	var dl net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	c, err := dl.DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		return res, fmt.Errorf("rr dial %s: %w", addr, err)
	}
	defer c.Close()
	req := make([]byte, size)
	resp := make([]byte, size)
	for i := range req {
		req[i] = byte(i)
	}
	lat := make([]time.Duration, 0, 1<<16)
	// A short warm-up that is not recorded.
	warm := time.Now().Add(d / 10)
	end := time.Now().Add(d + d/10)
	_ = c.SetDeadline(end.Add(5 * time.Second))
	for {
		now := time.Now()
		if now.After(end) || ctx.Err() != nil {
			break
		}
		if _, err := c.Write(req); err != nil {
			return res, fmt.Errorf("rr write: %w", err)
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			return res, fmt.Errorf("rr read: %w", err)
		}
		if now.After(warm) {
			lat = append(lat, time.Since(now))
		}
	}
	if len(lat) == 0 {
		return res, fmt.Errorf("rr %s: no response completed", addr)
	}
	p := DurationPercentiles(lat, 50, 99)
	var sum time.Duration
	for _, l := range lat {
		sum += l
	}
	res = RRResult{Requests: len(lat), P50us: p[0], P99us: p[1], MeanUs: float64(sum) / float64(len(lat)) / 1e3}
	return res, nil
}

// ConnectionSetup runs workers that each, for d, open a TCP connection,
// exchange one 64-byte request/response and close it. It reports the
// connect() time, the time to the first response byte, and the rate.
func ConnectionSetup(ctx context.Context, addr string, workers int, d time.Duration) (SetupResult, error) {
	var res SetupResult
	lc, lf := make([][]time.Duration, workers), make([][]time.Duration, workers)
	var errs errCount
	start := time.Now()
	end := start.Add(d)
	parallel(workers, func(w int) {
		buf := make([]byte, 64)
		dl := net.Dialer{Timeout: 5 * time.Second}
		for time.Now().Before(end) && ctx.Err() == nil {
			t0 := time.Now()
			c, err := dl.DialContext(ctx, "tcp", addr)
			if err != nil {
				errs.add(err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			t1 := time.Now()
			err = exchange(c, buf, t1.Add(5*time.Second))
			t2 := time.Now()
			c.Close()
			if err != nil {
				errs.add(err)
				continue
			}
			lc[w] = append(lc[w], t1.Sub(t0))
			lf[w] = append(lf[w], t2.Sub(t0))
		}
	})
	connects, perSec, nerr, first, err := tally("setup "+addr, lc, &errs, start)
	res.Conns, res.PerSec, res.Errors, res.FirstError = len(connects), perSec, nerr, first
	if err != nil {
		return res, err
	}
	p := DurationPercentiles(connects, 50, 99)
	res.ConnectP50, res.ConnectP99 = p[0], p[1]
	res.FirstByte = DurationPercentiles(slices.Concat(lf...), 50)[0]
	return res, nil
}

// Hold opens n connections (workers at a time, until openCtx ends), checks
// each end to end with one 64-byte request/response, prints a HoldResult
// line and keeps them open, idle, until stdin reaches EOF or ctx ends.
func Hold(openCtx, ctx context.Context, addr string, n, workers int, stdout io.Writer, stdin io.Reader) error {
	start := time.Now()
	conns := make([]net.Conn, n)
	var errs errCount
	var next atomic.Int64
	parallel(max(workers, 1), func(int) {
		buf := make([]byte, 64)
		dl := net.Dialer{Timeout: 10 * time.Second}
		for {
			i := int(next.Add(1)) - 1
			if i >= n || openCtx.Err() != nil {
				return
			}
			c, err := dl.DialContext(openCtx, "tcp", addr)
			if err == nil {
				err = exchange(c, buf, time.Now().Add(10*time.Second))
				_ = c.SetDeadline(time.Time{})
			}
			if err != nil {
				errs.add(err)
				if c != nil {
					c.Close()
				}
				continue
			}
			conns[i] = c
		}
	})
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	res := HoldResult{Seconds: time.Since(start).Seconds()}
	res.Errors, res.FirstError = errs.report()
	for _, c := range conns {
		if c != nil {
			res.Opened++
		}
	}
	if err := json.NewEncoder(stdout).Encode(res); err != nil {
		return fmt.Errorf("hold: print result: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, bufio.NewReader(stdin))
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
}

// DNSLoad sends A queries for name to server from workers concurrent UDP
// clients for d and reports queries per second and latency.
func DNSLoad(ctx context.Context, server, name string, workers int, d time.Duration) (DNSResult, error) {
	var res DNSResult
	lw := make([][]time.Duration, workers)
	var errs errCount
	start := time.Now()
	end := start.Add(d)
	parallel(workers, func(w int) {
		cl := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
		conn, err := cl.Dial(server)
		if err != nil {
			errs.add(err)
			return
		}
		defer conn.Close()
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeA)
		for time.Now().Before(end) && ctx.Err() == nil {
			m.Id = dns.Id()
			t0 := time.Now()
			r, _, err := cl.ExchangeWithConnContext(ctx, m, conn)
			if err == nil && r.Rcode != dns.RcodeSuccess {
				err = fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
			}
			if err != nil {
				errs.add(err)
				continue
			}
			lw[w] = append(lw[w], time.Since(t0))
		}
	})
	lat, perSec, nerr, first, err := tally("dns "+name+" @"+server, lw, &errs, start)
	res.Queries, res.PerSec, res.Errors, res.FirstError = len(lat), perSec, nerr, first
	if err != nil {
		return res, err
	}
	p := DurationPercentiles(lat, 50, 99)
	res.P50us, res.P99us = p[0], p[1]
	return res, nil
}
