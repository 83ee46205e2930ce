package client

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/testenv"
)

// changingPolicy is a PolicySource a test publishes snapshots on.
type changingPolicy struct {
	mu   sync.Mutex
	p    *controlapi.ClientPolicy
	next chan struct{}
}

func newChangingPolicy() *changingPolicy { return &changingPolicy{next: make(chan struct{})} }

func (c *changingPolicy) Current() (*controlapi.ClientPolicy, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.p, c.next
}

func (c *changingPolicy) publish(p *controlapi.ClientPolicy) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.p = p
	close(c.next)
	c.next = make(chan struct{})
}

// newIdleDaemon is a signed-out daemon (SOCKS5 front-end when up), closed
// when the test ends.
func newIdleDaemon(t *testing.T) *Daemon {
	t.Helper()
	d, err := New(Config{StateDir: t.TempDir(), Logger: testenv.Logger(t),
		NewFrontend: func() (Frontend, error) { return NewSOCKS5Frontend("127.0.0.1:0"), nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestFlowLayerFollowsPolicySource drives the daemon's flow layer through
// its PolicySource seam alone, no session: each published snapshot becomes
// the route table, resource list and relays, and withdrawing it (sign-out)
// leaves nothing routable.
func TestFlowLayerFollowsPolicySource(t *testing.T) {
	d := newIdleDaemon(t)
	src := newChangingPolicy()
	d.mu.Lock()
	d.policy = src
	d.mu.Unlock()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); d.followPolicy(src, stop) }()
	t.Cleanup(func() { close(stop); <-done })

	routes := func(host string) string {
		tgt, ok := d.table.Load().resolveHost(host, nil)
		if !ok {
			return ""
		}
		return tgt.res.ID
	}
	p := testPolicy()
	p.Relays = []controlapi.RelayInfo{{ID: "rel_1"}}
	src.publish(p)
	testenv.Eventually(t, 5*time.Second, "the first snapshot applied", func() bool { return routes("db.corp.internal") == "r-db" })
	if rs := d.Resources(); len(rs) != len(p.Resources) {
		t.Errorf("resources: %d, want %d", len(rs), len(p.Resources))
	}
	if r := d.currentRelays(); len(r) != 1 || r[0].ID != "rel_1" {
		t.Errorf("relays %+v, want rel_1", r)
	}

	p2 := &controlapi.ClientPolicy{Revision: 8, Resources: []controlapi.PolicyResource{{ID: "r-only", Name: "only", Address: "only.corp.internal", Network: "corp"}}}
	src.publish(p2)
	testenv.Eventually(t, 5*time.Second, "the second snapshot applied", func() bool { return routes("only.corp.internal") == "r-only" })
	if got := routes("db.corp.internal"); got != "" {
		t.Errorf("db.corp.internal still routes to %q after the policy dropped it", got)
	}
	if r := d.currentRelays(); len(r) != 0 {
		t.Errorf("relays %+v after a policy without relays", r)
	}

	src.publish(nil)
	testenv.Eventually(t, 5*time.Second, "the withdrawn snapshot applied", func() bool { return len(d.Resources()) == 0 })
	if got := routes("only.corp.internal"); got != "" {
		t.Errorf("only.corp.internal routes to %q with no policy", got)
	}
	if _, err := d.DialTCP(context.Background(), "only.corp.internal", 443); !errors.Is(err, ErrNoResource) {
		t.Errorf("dial with no policy: %v, want ErrNoResource", err)
	}
}
