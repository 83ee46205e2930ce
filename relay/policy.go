package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"postern.dev/postern/controlapi"
)

// followPolicy keeps the relay policy stream open until ctx ends and applies
// every snapshot, reconnecting with jittered backoff (0.5 s to 15 s).
func (cc *controllerClient) followPolicy(ctx context.Context, r *Relay, log *slog.Logger) {
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		got, err := cc.streamPolicy(ctx, r)
		if ctx.Err() != nil {
			return
		}
		if got {
			backoff = 500 * time.Millisecond
		}
		log.Warn("relay policy stream", "err", err, "retry_in", backoff)
		d := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		backoff = min(backoff*2, 15*time.Second)
	}
}

// streamPolicy reads one policy stream until it breaks or stays silent for
// the stream idle timeout; got reports whether a snapshot arrived.
func (cc *controllerClient) streamPolicy(ctx context.Context, r *Relay) (got bool, err error) {
	err = cc.api.Stream(ctx, controlapi.PathRelayPolicy, r.policyRev.Load(), func(line []byte) error {
		if line == nil {
			return nil
		}
		var p controlapi.RelayPolicy
		if err := json.Unmarshal(line, &p); err != nil {
			return fmt.Errorf("policy line: %w", err)
		}
		if !p.Keepalive {
			got = true
			r.SetPolicy(p)
			// The controller's replicas: calls and streams fail over to
			// them (the enrollment URL stays first).
			if err := cc.api.SetLearned(p.ControllerURLs); err != nil {
				r.log.Warn("controller replicas", "err", err)
			}
		}
		return nil
	})
	return got, fmt.Errorf("%w: policy stream: %w", ErrControllerCall, err)
}
