package connector

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"sync"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/pki"
	"postern.dev/postern/version"
)

// controlClient talks to the controller with the enrolled mTLS credential.
type controlClient struct {
	c   *Connector
	api *controlapi.Client

	mu       sync.Mutex
	interval time.Duration
	lastBeat time.Time
	prevUp   int64
	prevDown int64
	prevAt   time.Time
	cpu      cpuSampler
}

func newControlClient(c *Connector) (*controlClient, error) {
	st := c.state.Load()
	api, err := controlapi.NewClient(controlapi.ClientConfig{
		URL:         st.ControllerURL,
		Roots:       pki.CAPool(st.ca),
		Certificate: c.ClientCertificate,
		CallTimeout: 15 * time.Second,
		// Keepalives come every 15 s: a stream silent for longer is dead.
		StreamIdleTimeout: controlapi.DefaultStreamIdleTimeout,
	})
	if err != nil {
		return nil, fmt.Errorf("stored controller URL: %w", err)
	}
	cc := &controlClient{c: c, api: api, interval: controlapi.HeartbeatInterval}
	if p := c.policy.Load(); p != nil {
		// The replicas the last policy (maybe from policy.json) named.
		cc.learnControllers(p.raw.ControllerURLs)
	}
	return cc, nil
}

// learnControllers adds the controller's replicas, as its policy names
// them, to the URLs calls and streams fail over to (the enrollment URL
// stays first; the deployment CA still verifies them all).
func (cc *controlClient) learnControllers(urls []string) {
	if err := cc.api.SetLearned(urls); err != nil {
		cc.c.log.Warn("controller replicas", "err", err)
	}
}

func (cc *controlClient) close() { cc.api.Close() }

// heartbeat reports the serving certificate digests, addresses and load.
func (cc *controlClient) heartbeat(ctx context.Context) error {
	c := cc.c
	hb := controlapi.Heartbeat{
		CertSHA256: capList(c.certs.digests(), maxHeartbeatDigests),
		Version:    version.Version,
		Addrs:      capList(c.AdvertisedAddrs(), maxHeartbeatAddrs),
		Load:       cc.load(),
	}
	var resp controlapi.HeartbeatResponse
	if err := cc.api.Call(ctx, http.MethodPost, controlapi.PathConnectorHeartbeat, hb, &resp); err != nil {
		c.controllerOK.Store(false)
		c.met.controllerErrors.WithLabelValues("heartbeat").Inc()
		return fmt.Errorf("heartbeat: %w", err)
	}
	c.controllerOK.Store(true)
	c.met.lastHeartbeat.SetToCurrentTime()
	cc.mu.Lock()
	cc.lastBeat = time.Now()
	if resp.IntervalSeconds > 0 && resp.IntervalSeconds <= 300 {
		cc.interval = time.Duration(resp.IntervalSeconds) * time.Second
	}
	cc.mu.Unlock()
	return nil
}

// Limits the controller accepts in a heartbeat.
const (
	maxHeartbeatDigests = 8
	maxHeartbeatAddrs   = 32
)

func capList(l []string, n int) []string {
	if len(l) > n {
		return l[:n]
	}
	return l
}

func (cc *controlClient) load() controlapi.ConnectorLoad {
	c := cc.c
	c.mu.Lock()
	conns := len(c.sessions)
	c.mu.Unlock()
	up, down := c.met.totalBytes()
	now := time.Now()
	cc.mu.Lock()
	defer cc.mu.Unlock()
	var bps float64
	if !cc.prevAt.IsZero() {
		if dt := now.Sub(cc.prevAt).Seconds(); dt > 0 {
			bps = float64(up+down-cc.prevUp-cc.prevDown) / dt
		}
	}
	cc.prevUp, cc.prevDown, cc.prevAt = up, down, now
	return controlapi.ConnectorLoad{
		ActiveFlows: int(c.met.activeFlows()),
		Connections: conns,
		BytesPerSec: bps,
		CPUFraction: cc.cpu.sample(now),
	}
}

func (cc *controlClient) heartbeatLoop(ctx context.Context) error {
	for {
		if err := cc.heartbeat(ctx); err != nil && ctx.Err() == nil {
			cc.c.log.Warn("controller unreachable; enforcing the last policy", "err", err)
		}
		cc.mu.Lock()
		d := cc.interval
		cc.mu.Unlock()
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// backoff returns the wait before reconnect attempt n (1 s doubling to 30 s, jittered).
func backoff(n int) time.Duration {
	d := time.Second << min(n, 5)
	if d > 30*time.Second {
		d = 30 * time.Second
	}
	return d/2 + mrand.N(d/2+1)
}

// jitterMax spreads d over [d/2, d].
func jitterMax(d time.Duration) time.Duration { return d/2 + mrand.N(d/2+1) }

// policyLoop keeps the policy push stream open, reconnecting with backoff
// capped at policyRetryMax (failstatic.go).
func (cc *controlClient) policyLoop(ctx context.Context) error {
	fails := 0
	for ctx.Err() == nil {
		got, err := cc.streamPolicy(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if got {
			fails = 0
		}
		cc.c.setControllerDown()
		if err != nil {
			cc.c.met.controllerErrors.WithLabelValues("policy").Inc()
			cc.c.log.Warn("policy stream interrupted; enforcing the last policy", "err", err)
		}
		t := time.NewTimer(min(backoff(fails), jitterMax(policyRetryMax)))
		fails++
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
	return nil
}

// streamPolicy reads one policy stream until it breaks or goes silent for
// the stream idle timeout. got reports whether any line arrived (to reset
// the backoff).
func (cc *controlClient) streamPolicy(ctx context.Context) (got bool, err error) {
	var rev int64
	if p := cc.c.policy.Load(); p != nil {
		rev = p.rev
	}
	err = cc.api.Stream(ctx, controlapi.PathConnectorPolicy, rev, func(line []byte) error {
		if line == nil {
			return nil
		}
		got = true
		var p controlapi.ConnectorPolicy
		if err := json.Unmarshal(line, &p); err != nil {
			cc.c.log.Warn("ignoring undecodable policy line", "err", err)
			return nil
		}
		if p.Keepalive {
			cc.c.setControllerUp()
			return nil
		}
		if err := cc.c.applyPolicy(p); err != nil {
			cc.c.log.Error("refusing policy snapshot; keeping the previous one", "rev", p.Revision, "err", err)
		} else {
			cc.learnControllers(p.ControllerURLs)
		}
		// After the snapshot's revocations are enforced.
		cc.c.setControllerUp()
		return nil
	})
	return got, fmt.Errorf("policy stream: %w", err)
}

// eventsLoop sends batched flow events.
func (cc *controlClient) eventsLoop(ctx context.Context) error {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			_ = cc.flushEvents(fctx)
			cancel()
			return nil
		case <-t.C:
		case <-cc.c.events.full:
		}
		if err := cc.flushEvents(ctx); err != nil && ctx.Err() == nil {
			cc.c.met.controllerErrors.WithLabelValues("events").Inc()
			cc.c.log.Debug("flow events not delivered yet", "err", err)
		}
	}
}

func (cc *controlClient) flushEvents(ctx context.Context) error {
	for {
		batch := cc.c.events.take(eventBatch)
		if len(batch) == 0 {
			return nil
		}
		if err := cc.api.Call(ctx, http.MethodPost, controlapi.PathConnectorEvents, controlapi.FlowEvents{Events: batch}, nil); err != nil {
			cc.c.events.putBack(batch)
			return err
		}
	}
}

// renewLoop renews the enrollment credential (with a fresh key) when two
// thirds of its lifetime have passed.
func (cc *controlClient) renewLoop(ctx context.Context) error {
	for {
		st := cc.c.state.Load()
		life := st.cert.NotAfter.Sub(st.cert.NotBefore)
		at := st.cert.NotBefore.Add(life * 2 / 3)
		wait := time.Until(at)
		if wait < 0 {
			wait = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		if err := cc.renew(ctx); err != nil {
			cc.c.met.controllerErrors.WithLabelValues("renew").Inc()
			cc.c.log.Warn("credential renewal failed; retrying", "err", err, "expires", st.cert.NotAfter)
			t := time.NewTimer(backoff(5))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
	}
}

// renew exchanges the credential for a fresh one bound to a new key.
func (cc *controlClient) renew(ctx context.Context) error {
	old := cc.c.state.Load()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	pubPEM, err := controlapi.PublicKeyPEM(pub)
	if err != nil {
		return err
	}
	var resp controlapi.EnrollResponse
	if err := cc.api.Call(ctx, http.MethodPost, controlapi.PathRenew, controlapi.RenewRequest{PublicKeyPEM: pubPEM}, &resp); err != nil {
		return fmt.Errorf("renew credential: %w", err)
	}
	if resp.ID == "" {
		resp.ID = old.ID
	}
	if resp.ID != old.ID {
		return fmt.Errorf("renew credential: controller answered for connector %q, not %q", resp.ID, old.ID)
	}
	st, err := stateFromResponse(resp, key, old.ControllerURL, old.ca)
	if err != nil {
		return fmt.Errorf("renew credential: %w", err)
	}
	if st.Name == "" {
		st.Name = old.Name
	}
	if st.Network == "" {
		st.Network = old.Network
	}
	if err := st.save(cc.c.cfg.StateDir); err != nil {
		return err
	}
	cc.c.state.Store(st)
	cc.api.Close()
	cc.c.log.Info("renewed connector credential", "not_after", st.NotAfter)
	return nil
}
