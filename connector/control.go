package connector

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/pki"
	"postern.dev/postern/version"
)

// controlClient talks to the controller with the enrolled mTLS credential.
type controlClient struct {
	c    *Connector
	base string
	hc   *http.Client // requests with a timeout
	sc   *http.Client // the long-lived policy stream

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
	u, err := url.Parse(st.ControllerURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("stored controller URL %q: not a URL", st.ControllerURL)
	}
	tlsConf := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    pki.CAPool(st.ca),
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert := c.state.Load().tlsCertificate()
			return &cert, nil
		},
	}
	tr := &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: true, IdleConnTimeout: 90 * time.Second}
	str := &http.Transport{TLSClientConfig: tlsConf.Clone(), ForceAttemptHTTP2: false, ResponseHeaderTimeout: 30 * time.Second}
	return &controlClient{
		c: c, base: strings.TrimSuffix(st.ControllerURL, "/"),
		hc:       &http.Client{Transport: tr, Timeout: 15 * time.Second},
		sc:       &http.Client{Transport: str},
		interval: controlapi.HeartbeatInterval,
	}, nil
}

func (cc *controlClient) close() {
	cc.hc.CloseIdleConnections()
	cc.sc.CloseIdleConnections()
}

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
	if err := postJSON(ctx, cc.hc, cc.base+controlapi.PathConnectorHeartbeat, hb, &resp); err != nil {
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

// streamPolicy reads one policy stream until it breaks. got reports whether
// any line arrived (to reset the backoff).
func (cc *controlClient) streamPolicy(ctx context.Context) (got bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	u := cc.base + controlapi.PathConnectorPolicy
	if p := cc.c.policy.Load(); p != nil {
		u += "?rev=" + strconv.FormatInt(p.rev, 10)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := cc.sc.Do(req)
	if err != nil {
		return false, fmt.Errorf("open policy stream: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("open policy stream: HTTP %d", resp.StatusCode)
	}
	// Watchdog: nothing for 45 s (keepalives come every 15 s) means a dead stream.
	alive := make(chan struct{}, 1)
	go func() {
		t := time.NewTimer(45 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-alive:
				t.Reset(45 * time.Second)
			case <-t.C:
				cc.c.log.Warn("policy stream silent for 45 s; reconnecting")
				cancel()
				return
			}
		}
	}()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 32<<20)
	for sc.Scan() {
		got = true
		select {
		case alive <- struct{}{}:
		default:
		}
		line := sc.Bytes()
		if len(strings.TrimSpace(string(line))) == 0 {
			continue
		}
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(line, &e) == nil && e.Error != "" {
			return got, fmt.Errorf("controller ended the policy stream: %s", e.Error)
		}
		var p controlapi.ConnectorPolicy
		if err := json.Unmarshal(line, &p); err != nil {
			cc.c.log.Warn("ignoring undecodable policy line", "err", err)
			continue
		}
		if p.Keepalive {
			cc.c.setControllerUp()
			continue
		}
		if err := cc.c.applyPolicy(p); err != nil {
			cc.c.log.Error("refusing policy snapshot; keeping the previous one", "rev", p.Revision, "err", err)
		}
		// After the snapshot's revocations are enforced.
		cc.c.setControllerUp()
	}
	if err := sc.Err(); err != nil {
		return got, fmt.Errorf("read policy stream: %w", err)
	}
	return got, errors.New("policy stream ended")
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
		if err := postJSON(ctx, cc.hc, cc.base+controlapi.PathConnectorEvents, controlapi.FlowEvents{Events: batch}, nil); err != nil {
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
	pubPEM, err := publicKeyPEM(pub)
	if err != nil {
		return err
	}
	var resp controlapi.EnrollResponse
	if err := postJSON(ctx, cc.hc, cc.base+controlapi.PathRenew, controlapi.RenewRequest{PublicKeyPEM: pubPEM}, &resp); err != nil {
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
	cc.hc.CloseIdleConnections()
	cc.c.log.Info("renewed connector credential", "not_after", st.NotAfter)
	return nil
}
