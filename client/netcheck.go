package client

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"postern.dev/postern/traversal"
)

// netcheckTimeout bounds a netcheck (its relay probes take at most 2 s).
const netcheckTimeout = 10 * time.Second

// Netcheck reports what the traversal dialer sees of the network: relays
// reachable over UDP and TLS with their round trips, the NAT's mapping
// behaviour, server-reflexive addresses and, per connector, the candidate
// pairs checked and the outcome (postern netcheck).
func (d *Daemon) Netcheck(ctx context.Context) (traversal.Diagnosis, error) {
	d.mu.Lock()
	dl := d.dialer
	d.mu.Unlock()
	if dl == nil {
		return traversal.Diagnosis{}, fmt.Errorf("%w: not connected (run postern up first)", ErrBadRequest)
	}
	td, ok := dl.(traversalDialer)
	if !ok {
		return traversal.Diagnosis{}, fmt.Errorf("%w: the daemon dials connectors directly (no relays), there is nothing to check", ErrBadRequest)
	}
	ctx, cancel := context.WithTimeout(ctx, netcheckTimeout)
	defer cancel()
	return td.t.Diagnose(ctx), nil
}

// netcheck serves GET /v1/netcheck.
func (s *LocalAPIServer) netcheck(w http.ResponseWriter, r *http.Request) {
	rep, err := s.d.Netcheck(r.Context())
	if err != nil {
		s.errorResponse(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}
