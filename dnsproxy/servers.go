package dnsproxy

import (
	"context"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Servers is a group of miekg/dns servers started together by StartServers
// and stopped together by Stop: the proxy's UDP and TCP servers, or those of
// another DNS server built on miekg/dns (the lab's).
type Servers struct {
	servers []*dns.Server
	stopped chan error
	wg      sync.WaitGroup
}

// StartServers runs each server's ActivateAndServe in its own goroutine and
// returns once every one has started listening or failed to start.
//
// The wait matters: miekg/dns ignores a Shutdown that arrives before a server
// marked itself started, and that server then serves on for good. After
// StartServers, Stop always stops them all, however soon it is called.
func StartServers(servers ...*dns.Server) *Servers {
	g := &Servers{servers: servers, stopped: make(chan error, len(servers))}
	for _, s := range servers {
		started := make(chan struct{})
		var once sync.Once
		notify := s.NotifyStartedFunc
		s.NotifyStartedFunc = func() {
			if notify != nil {
				notify()
			}
			once.Do(func() { close(started) })
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			err := s.ActivateAndServe()
			once.Do(func() { close(started) }) // it never started
			g.stopped <- err
		}()
		<-started
	}
	return g
}

// Stopped delivers what ActivateAndServe returned, once for each server as
// it stops: by itself (a transport failed; nil when a server gave up
// without an error) or through Stop.
func (g *Servers) Stopped() <-chan error { return g.stopped }

// Stop shuts every server down, giving the queries being handled up to
// grace, closes the servers' sockets (also of a server that never started
// or already stopped) and waits until every ActivateAndServe has returned.
func (g *Servers) Stop(grace time.Duration) {
	for _, s := range g.servers {
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		_ = s.ShutdownContext(ctx) // an error: not started or already stopped, nothing to do
		cancel()
	}
	for _, s := range g.servers {
		if s.PacketConn != nil {
			s.PacketConn.Close()
		}
		if s.Listener != nil {
			s.Listener.Close()
		}
	}
	g.wg.Wait()
}
