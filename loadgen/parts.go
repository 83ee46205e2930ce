package loadgen

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"postern.dev/postern/controlapi"
)

// connector is one simulated connector.
type connector struct {
	id, name string
	api      *controlapi.Client
}

// device is one simulated device, signed in.
type device struct {
	name string
	api  *controlapi.Client
}

// parallel runs fn(i) for i in [0, n) on workers goroutines; it returns the
// first error.
func parallel(ctx context.Context, n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for w := 0; w < min(workers, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

func (r *run) client(token string, cert *tls.Certificate) (*controlapi.Client, error) {
	cfg := controlapi.ClientConfig{URL: r.cfg.URL, Roots: r.cfg.Roots, Token: token, CallTimeout: time.Minute}
	if cert != nil {
		cfg.Certificate = func() (*tls.Certificate, error) { return cert, nil }
	}
	return controlapi.NewClient(cfg)
}

// startConnectors mints an enrollment token for every connector, enrolls it
// (a fresh Ed25519 key each) and starts its heartbeats, policy stream and
// flow events.
func (r *run) startConnectors(ctx context.Context, wg *sync.WaitGroup, rep *Report) ([]*connector, error) {
	cons := make([]*connector, r.cfg.Connectors)
	anon, err := r.client("", nil)
	if err != nil {
		return nil, err
	}
	defer anon.Close()
	start := time.Now()
	err = parallel(ctx, len(cons), r.cfg.Concurrency, func(i int) error {
		name := fmt.Sprintf("scale-c%04d", i)
		var mint struct {
			Token string `json:"token"`
		}
		if err := r.admin.Call(ctx, http.MethodPost, "/api/v1/connector-tokens", map[string]any{"name": name}, &mint); err != nil {
			return fmt.Errorf("mint %s: %w", name, err)
		}
		et, err := controlapi.ParseEnrollmentToken(mint.Token)
		if err != nil {
			return fmt.Errorf("token of %s: %w", name, err)
		}
		pub, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return err
		}
		var resp controlapi.EnrollResponse
		req := controlapi.EnrollRequest{Secret: et.Secret, PublicKeyPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), Version: "loadgen", Hostname: name}
		if err := anon.Call(ctx, http.MethodPost, controlapi.PathEnrollConnector, req, &resp); err != nil {
			return fmt.Errorf("enroll %s: %w", name, err)
		}
		blk, _ := pem.Decode([]byte(resp.CertificatePEM))
		if blk == nil {
			return fmt.Errorf("enroll %s: no certificate in the answer", name)
		}
		cert := &tls.Certificate{Certificate: [][]byte{blk.Bytes}, PrivateKey: key}
		api, err := r.client("", cert)
		if err != nil {
			return err
		}
		cons[i] = &connector{id: resp.ID, name: name, api: api}
		return nil
	})
	rep.Enrollments = Rate{N: len(cons), Duration: time.Since(start)}
	if err != nil {
		return nil, err
	}
	for _, c := range cons {
		wg.Add(3)
		go func() { defer wg.Done(); r.heartbeats(ctx, c) }()
		go func() { defer wg.Done(); r.stream(ctx, c.api, controlapi.PathConnectorPolicy, "c:"+c.id) }()
		go func() { defer wg.Done(); r.flowEvents(ctx, c) }()
	}
	return cons, nil
}

func (r *run) heartbeats(ctx context.Context, c *connector) {
	sum := sha256.Sum256([]byte(c.id))
	hb := controlapi.Heartbeat{CertSHA256: []string{hex.EncodeToString(sum[:])}, Version: "loadgen",
		Addrs: []string{fmt.Sprintf("198.18.%d.%d:4433", sum[0], sum[1])}}
	interval := controlapi.HeartbeatInterval
	for first := true; ctx.Err() == nil; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-time.After(jitter(interval)):
			}
		}
		var resp controlapi.HeartbeatResponse
		if err := c.api.Call(ctx, http.MethodPost, controlapi.PathConnectorHeartbeat, hb, &resp); err != nil {
			if ctx.Err() == nil {
				r.errs.add(&r.errs.calls, "heartbeat "+c.name, err)
			}
			continue
		}
		r.heartbeatsSent.Add(1)
		if resp.IntervalSeconds > 0 {
			interval = time.Duration(resp.IntervalSeconds) * time.Second
		}
	}
}

// flowEvents sends a small batch every 10 s, as a connector with a few
// flows does.
func (r *run) flowEvents(ctx context.Context, c *connector) {
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
			return
		case <-time.After(jitter(10 * time.Second)):
		}
		now := time.Now()
		evs := controlapi.FlowEvents{}
		for i := 0; i < 5; i++ {
			evs.Events = append(evs.Events, controlapi.FlowEvent{Principal: "loadgen", Device: "loadgen", Destination: "app.scale.internal",
				Port: 8000, Protocol: "tcp", Start: now.Add(-time.Second), DurationMS: 1000, BytesUp: 100, BytesDown: 1000, Result: "ok"})
		}
		if err := c.api.Call(ctx, http.MethodPost, controlapi.PathConnectorEvents, evs, nil); err != nil && ctx.Err() == nil {
			r.errs.add(&r.errs.calls, "events "+c.name, err)
		}
	}
}

// startDevices creates one service-account key per account and signs the
// devices in (each with its own Ed25519 device key), then starts their
// policy streams.
func (r *run) startDevices(ctx context.Context, wg *sync.WaitGroup, accounts int, rep *Report) ([]*device, error) {
	keys := make([]controlapi.ServiceKey, accounts)
	err := parallel(ctx, accounts, r.cfg.Concurrency, func(i int) error {
		return r.admin.Call(ctx, http.MethodPost, fmt.Sprintf("/api/v1/service-accounts/scale-sa%04d/keys", i), nil, &keys[i])
	})
	if err != nil {
		return nil, fmt.Errorf("service-account keys: %w", err)
	}
	anon, err := r.client("", nil)
	if err != nil {
		return nil, err
	}
	defer anon.Close()
	devs := make([]*device, r.cfg.Devices)
	lat := make([]time.Duration, len(devs))
	start := time.Now()
	err = parallel(ctx, len(devs), r.cfg.Concurrency, func(i int) error {
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		name := fmt.Sprintf("scale-d%05d", i)
		k := keys[i/r.cfg.PerAccount]
		t0 := time.Now()
		var resp controlapi.LoginResponse
		err = anon.Call(ctx, http.MethodPost, controlapi.PathLogin, controlapi.LoginRequest{ServiceKey: &k,
			DevicePublicKey: base64.StdEncoding.EncodeToString(pub), DeviceName: name, OS: "linux"}, &resp)
		if err != nil {
			return fmt.Errorf("sign in %s: %w", name, err)
		}
		lat[i] = time.Since(t0)
		api, err := r.client(resp.SessionToken, nil)
		if err != nil {
			return err
		}
		devs[i] = &device{name: name, api: api}
		return nil
	})
	rep.SignIns = Rate{N: len(devs), Duration: time.Since(start)}
	rep.SignInLatency = percentiles(lat)
	if err != nil {
		return nil, err
	}
	for _, d := range devs {
		wg.Add(1)
		go func() { defer wg.Done(); r.stream(ctx, d.api, controlapi.PathClientPolicy, "d:"+d.name) }()
	}
	return devs, nil
}

// stream holds one policy stream, resuming by revision as the real parts
// do, and records when party saw each revision.
func (r *run) stream(ctx context.Context, api *controlapi.Client, path, party string) {
	defer api.Close()
	var rev int64
	for ctx.Err() == nil {
		err := api.Stream(ctx, path, rev, func(line []byte) error {
			if line == nil {
				return nil
			}
			var p struct {
				Rev       int64 `json:"rev"`
				Keepalive bool  `json:"keepalive"`
			}
			if json.Unmarshal(line, &p) != nil || p.Keepalive {
				return nil
			}
			rev = max(rev, p.Rev)
			r.saw(party, p.Rev)
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		r.errs.add(&r.errs.strs, "stream "+party, err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(jitter(time.Second)):
		}
	}
}

// saw records that party received a snapshot at rev.
func (r *run) saw(party string, rev int64) {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.ready[party]; !ok {
		r.ready[party] = rev
	}
	r.maxRev = max(r.maxRev, rev)
	if w := r.watchAfter; w > 0 && rev > w {
		r.after[party] = append(r.after[party], revAt{rev, now})
	}
	r.cond.Broadcast()
}

// waitFor waits until n parties satisfy count, or timeout.
func (r *run) waitFor(ctx context.Context, timeout time.Duration, n int, count func() int) error {
	deadline := time.Now().Add(timeout)
	stop := context.AfterFunc(ctx, func() { r.mu.Lock(); r.cond.Broadcast(); r.mu.Unlock() })
	defer stop()
	t := time.AfterFunc(timeout, func() { r.mu.Lock(); r.cond.Broadcast(); r.mu.Unlock() })
	defer t.Stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	for count() < n {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d parties after %v", count(), n, timeout)
		}
		r.cond.Wait()
	}
	return nil
}

func (r *run) waitStreams(ctx context.Context, cons []*connector, devs []*device) error {
	n := len(cons) + len(devs)
	if err := r.waitFor(ctx, 5*time.Minute, n, func() int { return len(r.ready) }); err != nil {
		return fmt.Errorf("policy streams: %w", err)
	}
	return nil
}

// tokenPhase asks for Connection Tokens flat out: random device, random
// connector.
func (r *run) tokenPhase(ctx context.Context, devs []*device, cons []*connector, rep *Report) {
	pctx, cancel := context.WithTimeout(ctx, r.cfg.TokenPhase)
	defer cancel()
	var mu sync.Mutex
	var lat []time.Duration
	hb0 := r.heartbeatsSent.Load()
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < r.cfg.Concurrency; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var mine []time.Duration
			for i := w; pctx.Err() == nil; i += r.cfg.Concurrency {
				di := (i * 7919) % len(devs)
				d, c := devs[di], cons[r.connectorFor(di, i)]
				t0 := time.Now()
				var resp controlapi.TokenResponse
				err := d.api.Call(pctx, http.MethodPost, controlapi.PathConnectionToken, controlapi.TokenRequest{ConnectorID: c.id}, &resp)
				if err != nil {
					if pctx.Err() == nil {
						r.errs.add(&r.errs.calls, "token "+d.name, err)
					}
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	el := time.Since(start)
	rep.Tokens = Rate{N: len(lat), Duration: el}
	rep.TokenLatency = percentiles(lat)
	rep.Heartbeats = Rate{N: int(r.heartbeatsSent.Load() - hb0), Duration: el}
}

// policyChange changes the resource's port and measures when every device
// and connector stream has the revision that change committed.
func (r *run) policyChange(ctx context.Context, accounts int, cons []*connector, devs []*device, rep *Report) error {
	r.mu.Lock()
	r.watchAfter = r.maxRev
	r.mu.Unlock()
	t0 := time.Now()
	rev, err := r.apply(ctx, accounts, 1)
	if err != nil {
		return err
	}
	// reached is when party first had rev (or a later one).
	reached := func(party string) (time.Time, bool) {
		for _, ra := range r.after[party] {
			if ra.rev >= rev {
				return ra.at, true
			}
		}
		return time.Time{}, false
	}
	n := len(cons) + len(devs)
	err = r.waitFor(ctx, time.Minute, n, func() int {
		c := 0
		for p := range r.after {
			if _, ok := reached(p); ok {
				c++
			}
		}
		return c
	})
	r.mu.Lock()
	var toD, toC []time.Duration
	for p := range r.after {
		at, ok := reached(p)
		if !ok {
			continue
		}
		if strings.HasPrefix(p, "d:") {
			toD = append(toD, at.Sub(t0))
		} else {
			toC = append(toC, at.Sub(t0))
		}
	}
	r.mu.Unlock()
	rep.ToDevices, rep.ToConnectors = percentiles(toD), percentiles(toC)
	if err != nil {
		return fmt.Errorf("policy change to revision %d: %w", rev, err)
	}
	return nil
}

type revAt struct {
	rev int64
	at  time.Time
}

// connectorFor picks, for device di, a connector it may use (spec): one of
// its own site's or of site 0's, varied by i.
func (r *run) connectorFor(di, i int) int {
	sites := max(1, r.cfg.Connectors/2)
	accounts := (r.cfg.Devices + r.cfg.PerAccount - 1) / r.cfg.PerAccount
	site := (di / r.cfg.PerAccount) % min(sites, accounts)
	if i%2 == 1 {
		site = 0
	}
	perSite := (r.cfg.Connectors - site + sites - 1) / sites // connectors site, site+sites, ...
	return site + (i/2%max(1, perSite))*sites
}
