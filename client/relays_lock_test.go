package client

import (
	"testing"
	"time"

	"postern.dev/postern/controlapi"
)

// TestRelaysReadableWhileDaemonLocked: the dialer's relay list is read by
// pool goroutines that pool.close waits for while the daemon's lock is held
// (signing out after the controller ended the session); reading it must not
// take that lock, or sign-out deadlocks.
func TestRelaysReadableWhileDaemonLocked(t *testing.T) {
	d := newIdleDaemon(t)
	d.mu.Lock()
	d.policy = fakePolicy{&controlapi.ClientPolicy{Revision: 1, Relays: []controlapi.RelayInfo{{ID: "rel_1"}}}}
	d.syncPolicyLocked()
	got := make(chan []controlapi.RelayInfo, 1)
	go func() { got <- d.currentRelays() }()
	select {
	case r := <-got:
		if len(r) != 1 || r[0].ID != "rel_1" {
			t.Errorf("relays %+v, want rel_1", r)
		}
	case <-time.After(5 * time.Second):
		t.Error("reading the relays blocked on the daemon's lock")
	}
	d.mu.Unlock()
}

// fakePolicy is a PolicySource holding one snapshot.
type fakePolicy struct{ p *controlapi.ClientPolicy }

func (f fakePolicy) Current() (*controlapi.ClientPolicy, <-chan struct{}) { return f.p, nil }
