package traversal

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
)

// blackholeProxy forwards TCP to target until blackhole is called; from
// then on the connections it had go silent both ways without being closed
// (a NAT mapping that vanished), while new connections are forwarded.
type blackholeProxy struct {
	ln       net.Listener
	accepted atomic.Int32
	mu       sync.Mutex
	gen      int
	dead     chan struct{} // closed by blackhole for the current generation
}

func newBlackholeProxy(t *testing.T, target string) *blackholeProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &blackholeProxy{ln: ln, dead: make(chan struct{})}
	var conns sync.WaitGroup
	t.Cleanup(func() { ln.Close(); p.blackhole(); conns.Wait() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.accepted.Add(1)
			p.mu.Lock()
			dead := p.dead
			p.mu.Unlock()
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				pipe := func(dst, src net.Conn) {
					buf := make([]byte, 32<<10)
					for {
						n, err := src.Read(buf)
						if err != nil {
							return
						}
						select {
						case <-dead:
							continue // swallowed: the path is gone
						default:
						}
						if _, err := dst.Write(buf[:n]); err != nil {
							return
						}
					}
				}
				go func() { pipe(up, c); up.Close(); c.Close() }()
				pipe(c, up)
			}()
		}
	}()
	return p
}

// blackhole silences every connection made so far.
func (p *blackholeProxy) blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.dead:
	default:
		close(p.dead)
	}
	p.dead = make(chan struct{})
}

// TestConnectorRedialsSilentSignalingLink: a connector's signaling link
// whose path went silent (no reset: a NAT mapping that vanished) is noticed
// within a few pings and dialed again, instead of staying "up" while every
// client's offer through that relay is lost (ci22: a relayed dial failed
// for 20 s after the lab flushed conntrack).
func TestConnectorRedialsSilentSignalingLink(t *testing.T) {
	w := newWorld(t)
	w.startRelay()
	p := newBlackholeProxy(t, w.relayInfo.TLSAddr)
	w.relayInfo.TLSAddr = p.ln.Addr().String()
	w.signalPing = 100 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, _ := w.startConnector(ctx)
	if n := p.accepted.Load(); n != 1 {
		t.Fatalf("%d signaling connections before the fault, want 1", n)
	}
	p.blackhole()
	testenv.Eventually(t, 10*time.Second, "the connector to dial its silent signaling link again", func() bool {
		return p.accepted.Load() >= 2 && a.Connected()[w.relayInfo.ID]
	})
}
