package netstack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// closeFirstHandler plays a private server that answers and closes first,
// so the netstack side ends in TIME_WAIT: it reads 64 bytes, writes them
// back and closes.
type closeFirstHandler struct{ testHandler }

func (h *closeFirstHandler) HandleTCP(r *TCPRequest) {
	c, err := r.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	buf := make([]byte, 64)
	if _, err := io.ReadFull(c, buf); err != nil {
		return
	}
	_, _ = c.Write(buf)
}

// dialFrom connects from a fixed host port, as an application whose kernel
// reuses a source port would.
func dialFrom(ctx context.Context, s *stack.Stack, lport uint16, dst netip.AddrPort) (*gonet.TCPConn, tcpip.Endpoint, *waiter.Queue, error) {
	wq := new(waiter.Queue)
	ep, terr := s.NewEndpoint(tcp.ProtocolNumber, ipv4.ProtocolNumber, wq)
	if terr != nil {
		return nil, nil, nil, fmt.Errorf("new endpoint: %s", terr)
	}
	ep.SocketOptions().SetReuseAddress(true)
	entry, ready := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	if terr := ep.Bind(tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(hostAddr.As4()), Port: lport}); terr != nil {
		ep.Close()
		return nil, nil, nil, fmt.Errorf("bind port %d: %s", lport, terr)
	}
	terr = ep.Connect(toFull(dst))
	if _, ok := terr.(*tcpip.ErrConnectStarted); ok {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, nil, nil, fmt.Errorf("connect from port %d: %w", lport, ctx.Err())
		case <-ready:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, nil, nil, fmt.Errorf("connect from port %d: %s", lport, terr)
	}
	return gonet.NewTCPConn(wq, ep), ep, wq, nil
}

// TestSYNReopensTimeWait is the regression test for the stall of issue 15:
// short connections whose source ports come back while the netstack still
// holds their 4-tuple in TIME_WAIT (the netstack closed first). gVisor alone
// drops the new SYN and the application waits in SYN retransmissions (1, 2,
// 4 s...) until TIME_WAIT ends: a reused port costs at least 7 s with the
// 5 s TIME_WAIT and 60 s with gVisor's default. Every connection here must
// finish within 5 s, a bound that holds with the race detector on a loaded
// machine; the 1 s bound is asserted through the real TUN by
// client.TestTUNShortConnectionsReuseSourcePorts. Every SYN that met
// TIME_WAIT must have reopened it.
func TestSYNReopensTimeWait(t *testing.T) {
	const (
		workers        = 4
		portsPerWorker = 2
		total          = 5000
		limit          = 5 * time.Second
	)
	host, dev, ns := startStack(t, &closeFirstHandler{})
	dst := netip.MustParseAddrPort("100.96.9.9:7")
	// No RST may reach the application: the aborted TIME_WAIT endpoint's
	// RST is kept off the wire, and no connection is refused.
	var rsts, hostStuck atomic.Int64
	dev.SetTap(func(p []byte) bool {
		if header.IPVersion(p) == 4 && header.IPv4(p).Protocol() == uint8(header.TCPProtocolNumber) {
			if header.TCP(header.IPv4(p).Payload()).Flags().Contains(header.TCPFlagRst) {
				rsts.Add(1)
			}
		}
		return false
	})
	payload := bytes.Repeat([]byte("p"), 64)

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	var mu sync.Mutex
	var slowest time.Duration
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < total/workers; i++ {
				lport := uint16(40000 + w*portsPerWorker + i%portsPerWorker)
				el, err := oneShortConn(host, lport, dst, payload, limit)
				if errors.Is(err, errHostStuck) {
					hostStuck.Add(1)
					err = nil
				}
				if err != nil {
					errs <- fmt.Errorf("worker %d connection %d after %v: %w", w, i, el, err)
					return
				}
				mu.Lock()
				slowest = max(slowest, el)
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	tw := ns.TimeWait()
	t.Logf("%d connections over %d source ports: slowest %v, TIME_WAIT reopened %d, refused %d; host endpoints aborted after close: %d",
		total, workers*portsPerWorker, slowest, tw.Reopened, tw.Refused, hostStuck.Load())
	// (An aborted host endpoint's late segments are answered with RSTs.)
	if n := rsts.Load(); n != 0 && hostStuck.Load() == 0 {
		t.Errorf("%d RST segments reached the application", n)
	}
	if tw.Refused != 0 {
		t.Errorf("%d SYNs refused in TIME_WAIT: the host's timestamps only grow", tw.Refused)
	}
	if tw.Reopened == 0 {
		t.Error("no SYN met a TIME_WAIT endpoint: the test did not reuse 4-tuples")
	}
	if slowest > limit {
		t.Errorf("slowest connection took %v, want under %v", slowest, limit)
	}
}

// oneShortConn connects from lport, writes payload, reads it back and the
// server's FIN, closes, and returns how long that took (which must stay
// within limit: a SYN dropped in TIME_WAIT costs the application's SYN
// retransmission timeout, 1 s). It then waits until the host stack has
// released the port (its LAST_ACK answered), so the next connection can
// reuse it; that wait is the test's own bookkeeping and gets more time on a
// loaded machine.
func oneShortConn(host *stack.Stack, lport uint16, dst netip.AddrPort, payload []byte, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	c, ep, wq, err := dialFrom(ctx, host, lport, dst)
	if err != nil {
		return time.Since(start), err
	}
	closed, hup := waiter.NewChannelEntry(waiter.EventHUp)
	wq.EventRegister(&closed)
	defer wq.EventUnregister(&closed)
	_ = c.SetDeadline(start.Add(limit))
	if _, err := c.Write(payload); err != nil {
		c.Close()
		return time.Since(start), fmt.Errorf("write: %w", err)
	}
	got, err := io.ReadAll(c)
	took := time.Since(start)
	c.Close()
	if err != nil || !bytes.Equal(got, payload) {
		return took, fmt.Errorf("read %d bytes: %v", len(got), err)
	}
	released := time.NewTimer(2 * time.Second)
	defer released.Stop()
	aborted := false
	for tcp.EndpointState(ep.State()) != tcp.StateClose && tcp.EndpointState(ep.State()) != tcp.StateError {
		select {
		case <-hup:
		case <-released.C:
			if aborted {
				return took, fmt.Errorf("host endpoint stuck in %v after an abort", tcp.EndpointState(ep.State()))
			}
			// The host's gVisor stack, when starved (race detector on a
			// loaded machine), can mistake a retransmitted FIN for a new
			// one and wait in FIN-WAIT2 forever. That is the test client's
			// own trouble, not the netstack's: free its port.
			aborted = true
			ep.Abort()
			released.Reset(2 * time.Second)
		}
	}
	if aborted {
		return took, errHostStuck
	}
	return took, nil
}

// errHostStuck: the host stack's endpoint had to be aborted after close.
var errHostStuck = errors.New("host endpoint stuck after close; aborted")

func TestParseSYN(t *testing.T) {
	if _, ok := parseSYN([]byte{0x45}); ok {
		t.Error("a 1-byte packet parsed as a SYN")
	}
	if _, ok := parseSYN(nil); ok {
		t.Error("an empty packet parsed as a SYN")
	}
}

// synPacket builds an IPv4 TCP SYN with a timestamp option.
func synPacket(src, dst netip.AddrPort, seq, tsVal uint32) []byte {
	return tcpPacket(src, dst, seq, 0, header.TCPFlagSyn, tsVal, 0)
}

// TestSYNInTimeWaitPAWS: a SYN whose timestamp is older than the last one
// the TIME_WAIT endpoint saw is an old duplicate and is refused; a newer
// one reopens the tuple.
func TestSYNInTimeWaitPAWS(t *testing.T) {
	host, dev, ns := startStack(t, &closeFirstHandler{})
	dst := netip.MustParseAddrPort("100.96.9.10:7")
	const lport = 41000
	if _, err := oneShortConn(host, lport, dst, bytes.Repeat([]byte("x"), 64), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	id := stack.TransportEndpointID{LocalAddress: tcpip.AddrFrom4(dst.Addr().As4()), LocalPort: dst.Port(),
		RemoteAddress: tcpip.AddrFrom4(hostAddr.As4()), RemotePort: lport}
	var ep *tcp.Endpoint
	deadline := time.Now().Add(3 * time.Second)
	for {
		if te, ok := ns.s.FindTransportEndpoint(ipv4.ProtocolNumber, tcp.ProtocolNumber, id, nicID).(*tcp.Endpoint); ok && te.EndpointState() == tcp.StateTimeWait {
			ep = te
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the netstack side never reached TIME_WAIT")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ep.LockUser()
	sendTS, recent := ep.SendTSOk, ep.RecentTS
	ep.UnlockUser()
	if !sendTS {
		t.Fatal("the test connection negotiated no timestamps")
	}
	src := netip.AddrPortFrom(hostAddr, lport)
	waitCount := func(what string, f func() uint64, want uint64) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for f() < want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: counter %d, want %d", what, f(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if err := dev.Inject(synPacket(src, dst, 12345, recent-1000)); err != nil {
		t.Fatal(err)
	}
	waitCount("old duplicate SYN", func() uint64 { return ns.TimeWait().Refused }, 1)
	if ep.EndpointState() != tcp.StateTimeWait {
		t.Errorf("an old duplicate SYN ended TIME_WAIT (state %v)", ep.EndpointState())
	}
	if err := dev.Inject(synPacket(src, dst, 99999, recent+1000)); err != nil {
		t.Fatal(err)
	}
	waitCount("newer SYN", func() uint64 { return ns.TimeWait().Reopened }, 1)
}
