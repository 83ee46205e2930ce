package client

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/internal/testenv/netnstest"
)

// closeFirstServer runs, in namespace ns, a server that reads 64 bytes,
// writes them back and closes first, as many private servers do: the
// netstack then closes first too and holds the 4-tuple in TIME_WAIT.
func closeFirstServer(t *testing.T, ns, addr string) {
	var ln net.Listener
	netnstest.In(t, ns, func() {
		var err error
		ln, err = net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("listen %s in %s: %v", addr, ns, err)
		}
	})
	if ln == nil {
		t.FailNow()
	}
	testenv.Serve(t, ln, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 64)
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, buf); err == nil {
			_, _ = c.Write(buf)
		}
	})
}

// TestTUNShortConnectionsReuseSourcePorts is the regression test for the
// stall of issue 15 through the real TUN daemon: 5,000 short
// connect-write-read-close connections, in phases of 1, 8 and 64 concurrent
// workers as in the report, from 256 source ports, so that the
// kernel reuses a port while the netstack still holds the old 4-tuple in
// TIME_WAIT. None may fail: the connect must finish within 1 s (the
// kernel's first SYN retransmission, which is what a dropped SYN costs) and
// the echo within 1 s after it. The total per connection is logged, not
// judged: on a machine loaded far beyond its cores (load 15 on 2) the two
// steps together took 1.37 s once with no drop, and the 100 ms target for
// short connections is make bench's, on an idle machine.
func TestTUNShortConnectionsReuseSourcePorts(t *testing.T) {
	if testing.Short() {
		t.Skip("network-namespace test")
	}
	const (
		ports  = 256
		limit  = time.Second
		target = "198.19.0.10:7001"
	)
	phases := []struct{ workers, conns int }{{1, 1000}, {8, 2000}, {64, 2000}}
	l := newNetLab(t)
	l.build()
	l.startServer()
	closeFirstServer(t, l.srv, target)
	l.startControlPlane()
	l.startDaemon("tun", "--tun", "pst0")
	testenv.Eventually(t, 30*time.Second, "first connection through the TUN", func() bool {
		return netnstest.Do(l.cli, func() error { return shortConn(0, target, limit) }) == nil
	})

	total := 0
	for _, ph := range phases {
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			slowest time.Duration
			busy    int // EADDRNOTAVAIL: the kernel's previous socket on the port was still in LAST_ACK
			errs    []error
		)
		start := time.Now()
		for w := 0; w < ph.workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				// Worker w of W uses ports w, w+W, w+2W... of the pool.
				mine := ports / ph.workers
				err := netnstest.Do(l.cli, func() error {
					for i := 0; i < ph.conns/ph.workers; i++ {
						// Below the kernel's ephemeral range (32768-60999):
						// a port the kernel gave one of posternd's own
						// connections (to the controller) would fail the
						// bind with EADDRINUSE.
						port := 22000 + w + (i%mine)*ph.workers
						s := time.Now()
						err := shortConn(port, target, limit)
						if errors.Is(err, syscall.EADDRNOTAVAIL) {
							mu.Lock()
							busy++
							mu.Unlock()
							continue
						}
						if err != nil {
							return fmt.Errorf("connection %d from port %d after %v: %w", i, port, time.Since(s), err)
						}
						mu.Lock()
						slowest = max(slowest, time.Since(s))
						mu.Unlock()
					}
					return nil
				})
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%d workers, worker %d: %w", ph.workers, w, err))
					mu.Unlock()
				}
			}(w)
		}
		wg.Wait()
		el := time.Since(start)
		total += ph.conns
		t.Logf("%d workers: %d connections from %d source ports in %v (%.0f/s), slowest %v, %d skipped while the kernel held the port",
			ph.workers, ph.conns, ports, el.Round(time.Millisecond), float64(ph.conns)/el.Seconds(), slowest, busy)
		for _, err := range errs {
			t.Error(err)
		}
		if busy > ph.conns/10 {
			t.Errorf("%d workers: %d of %d connections could not reuse their port: the test did not exercise reuse", ph.workers, busy, ph.conns)
		}
	}
	if total < 5000 {
		t.Fatalf("only %d connections", total)
	}
}

// shortConn connects to addr from local port (0: any) with SO_REUSEADDR,
// writes 64 bytes, reads them back and the server's FIN, and closes.
func shortConn(port int, addr string, limit time.Duration) error {
	d := net.Dialer{
		Timeout:   limit,
		LocalAddr: &net.TCPAddr{Port: port},
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
			})
			return errors.Join(err, serr)
		},
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(limit))
	msg := bytes.Repeat([]byte{'s'}, 64)
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo: got %d bytes", len(got))
	}
	return nil
}
