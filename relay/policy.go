package relay

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"postern.dev/postern/controlapi"
)

// streamSilence is how long a policy stream may stay silent (the controller
// sends keepalives every 15 s) before the relay reconnects.
const streamSilence = 45 * time.Second

// followPolicy keeps the relay policy stream open until ctx ends and applies
// every snapshot, reconnecting with jittered backoff (0.5 s to 15 s).
func (cc *controllerClient) followPolicy(ctx context.Context, r *Relay, log *slog.Logger) {
	// Streams must not be cut by the request timeout of cc.hc.
	hc := &http.Client{Transport: cc.hc.Transport}
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		got, err := cc.streamPolicy(ctx, hc, r)
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

// streamPolicy reads one policy stream until it breaks; got reports whether
// a snapshot arrived.
func (cc *controllerClient) streamPolicy(ctx context.Context, hc *http.Client, r *Relay) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	u := cc.e.id.ControllerURL + controlapi.PathRelayPolicy
	if rev := r.policyRev.Load(); rev > 0 {
		u += "?rev=" + strconv.FormatInt(rev, 10)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := hc.Do(req)
	if err != nil {
		return false, fmt.Errorf("%w: open policy stream: %w", ErrControllerCall, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("%w: open policy stream: HTTP %d", ErrControllerCall, resp.StatusCode)
	}
	watchdog := time.AfterFunc(streamSilence, cancel)
	defer watchdog.Stop()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 32<<20)
	for sc.Scan() {
		watchdog.Reset(streamSilence)
		line := sc.Bytes()
		if len(strings.TrimSpace(string(line))) == 0 {
			continue
		}
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(line, &e) == nil && e.Error != "" {
			return got, fmt.Errorf("%w: controller ended the policy stream: %s", ErrControllerCall, e.Error)
		}
		var p controlapi.RelayPolicy
		if err := json.Unmarshal(line, &p); err != nil {
			return got, fmt.Errorf("%w: policy line: %v", ErrControllerCall, err)
		}
		if p.Keepalive {
			continue
		}
		got = true
		r.SetPolicy(p)
	}
	if err := sc.Err(); err != nil {
		return got, fmt.Errorf("%w: policy stream: %w", ErrControllerCall, err)
	}
	return got, fmt.Errorf("%w: policy stream ended", ErrControllerCall)
}
