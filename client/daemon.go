package client

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/installer/preset"
	"postern.dev/postern/localapi"
	"postern.dev/postern/pki"
)

// Frontend captures application traffic and hands flows to the daemon: the
// TUN device with its netstack, or the SOCKS5 proxy.
type Frontend interface {
	// Start begins capturing; flows go through d.
	Start(ctx context.Context, d *Daemon) error
	// Update is called after every policy change.
	Update(t *PolicyView)
	// Names maps synthetic addresses back to names (nil when there are none).
	Names() NameMapper
	// Explain says how name resolves (the DNS proxy), or ok=false.
	Explain(ctx context.Context, name string) (localapi.DNSExplain, bool)
	// Describe fills the front-end fields of a status.
	Describe(s *localapi.Status)
	// Close stops capturing and restores the system.
	Close() error
}

// PolicyView is what a front-end needs from a policy snapshot.
type PolicyView struct {
	Resources  []controlapi.PolicyResource
	Connectors []controlapi.ConnectorInfo
	// Routes are the IP and CIDR resource prefixes.
	Routes []netip.Prefix
}

// Config configures a Daemon.
type Config struct {
	// StateDir holds the device key, session, last policy and the socket.
	StateDir string
	// NewFrontend builds the traffic front-end when the tunnel goes up.
	NewFrontend func() (Frontend, error)
	// Dialer opens QUIC connections to connectors; nil: the traversal
	// dialer (direct paths, relays from the policy), or a DirectDialer with
	// DirectOnly.
	Dialer     Dialer
	DirectOnly bool
	Logger     *slog.Logger
	// DeviceName is reported at login (default: the host name).
	DeviceName string
	// Preset returns what IT preset on this machine (controller URL,
	// service-account key file); nil: installer/preset.Load.
	Preset func() (preset.Preset, error)
}

// Daemon is the client daemon core.
type Daemon struct {
	cfg   Config
	log   *slog.Logger
	state *stateDir

	key  ed25519.PrivateKey
	cert tls.Certificate
	jkt  string

	dialer      Dialer
	closeDialer func() error

	table atomic.Pointer[routeTable]
	// relays of the current policy, read without mu: the pool's dialers
	// ask for them from goroutines that pool.close waits for under mu.
	relays atomic.Pointer[[]controlapi.RelayInfo]
	keys   *ctoken.KeySet

	mu          sync.Mutex
	sess        *Session
	ctl         *controlClient
	pol         *controlapi.ClientPolicy
	issuer      string
	sessCancel  context.CancelFunc
	sessWG      sync.WaitGroup
	up          bool
	connecting  bool
	front       Frontend
	frontCancel context.CancelFunc
	pool        *pool
	netWatch    netWatcher
	reachable   bool
	downSince   time.Time
	lastErr     string

	activeFlows atomic.Int64
	totalFlows  atomic.Int64
	bytesUp     atomic.Int64
	bytesDown   atomic.Int64

	events *broadcaster
	closed atomic.Bool

	// preset is what IT preset (read once in New); see preset.go.
	preset preset.Preset

	// sigTokens keeps the last verified Connection Token per connector for
	// the relay signaling of path repairs (see signalingToken).
	sigTokens sync.Map // connector id -> cachedToken
	// turnCache keeps the last TURN credential (see turnCredentials).
	turnCache atomic.Pointer[cachedTURN]
}

// New opens the state directory, loads or creates the device key, and
// restores the session and last policy. Call Start to resume.
func New(cfg Config) (*Daemon, error) {
	st, err := openStateDir(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := secureStateDir(cfg.StateDir); err != nil {
		log.Warn("could not restrict the state directory to the system and administrators", "err", err)
	}
	key, err := st.deviceKey()
	if err != nil {
		return nil, err
	}
	cert, err := pki.SelfSigned(key, "device.postern.invalid", 10*365*24*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("device certificate: %w", err)
	}
	d := &Daemon{
		cfg: cfg, log: log, state: st, key: key, cert: cert,
		jkt:    pki.KeyThumbprint(key.Public().(ed25519.PublicKey)),
		keys:   ctoken.NewKeySet(nil),
		events: newBroadcaster(),
	}
	d.table.Store(buildRouteTable(nil))
	d.loadPreset()
	if cfg.Dialer != nil {
		d.dialer = cfg.Dialer
	}
	sess, err := st.session()
	if err != nil {
		log.Warn("ignoring unreadable session; sign in again", "err", err)
	}
	if sess != nil {
		d.sess = sess
		if pol, err := st.policy(); err == nil && pol != nil {
			d.applyPolicyLocked(pol, false)
		}
	}
	return d, nil
}

// Start resumes the saved session: the policy stream starts, and the tunnel
// comes up unless the user last ran `postern down`.
func (d *Daemon) Start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sess == nil {
		return nil
	}
	if err := d.startSessionLocked(); err != nil {
		return err
	}
	if d.state.prefs().WantUp {
		return d.upLocked()
	}
	return nil
}

// Close stops everything; the session stays on disk.
func (d *Daemon) Close() error {
	if !d.closed.CompareAndSwap(false, true) {
		return nil
	}
	d.mu.Lock()
	d.downLocked()
	d.stopSessionLocked()
	d.mu.Unlock()
	if d.closeDialer != nil {
		_ = d.closeDialer()
	}
	d.events.close()
	return nil
}

// Events subscribes to status changes; cancel unsubscribes.
func (d *Daemon) Events() (<-chan struct{}, func()) { return d.events.subscribe() }

func (d *Daemon) changed() { d.events.notify() }

// changedSoon coalesces frequent counter changes.
func (d *Daemon) changedSoon() { d.events.notifySoon() }

func (d *Daemon) currentPool() *pool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pool
}

// Login signs the device in with one credential, saves the session and
// brings the tunnel up.
func (d *Daemon) Login(ctx context.Context, req localapi.LoginRequest) (localapi.Status, error) {
	if err := d.fillController(&req.ControllerURL, &req.CAPEM); err != nil {
		return localapi.Status{}, err
	}
	lr := controlapi.LoginRequest{
		Email: req.Email, Password: req.Password, IDToken: req.IDToken,
		DevicePublicKey: base64.StdEncoding.EncodeToString(d.key.Public().(ed25519.PublicKey)),
		DeviceName:      d.deviceName(),
		OS:              runtime.GOOS,
	}
	n := 0
	if req.Email != "" || req.Password != "" {
		n++
		if req.Email == "" || req.Password == "" {
			return localapi.Status{}, fmt.Errorf("%w: both email and password are required", ErrBadRequest)
		}
	}
	if req.ServiceKey != "" {
		n++
		var sk controlapi.ServiceKey
		if err := json.Unmarshal([]byte(req.ServiceKey), &sk); err != nil {
			return localapi.Status{}, fmt.Errorf("%w: service key file is not valid JSON: %v", ErrBadRequest, err)
		}
		if sk.AccountID == "" || sk.Secret == "" {
			return localapi.Status{}, fmt.Errorf("%w: service key file lacks account_id or secret", ErrBadRequest)
		}
		lr.ServiceKey = &sk
	}
	if req.IDToken != "" {
		n++
	}
	sso := req.OIDC != nil || req.OIDCDeviceFlow != ""
	if sso {
		n++
	}
	if n != 1 {
		return localapi.Status{}, fmt.Errorf("%w: give exactly one credential (user and password, a service key, or a single sign-on grant)", ErrBadRequest)
	}
	cc, err := newControlClient(req.ControllerURL, req.CAPEM, "")
	if err != nil {
		return localapi.Status{}, err
	}
	var resp *controlapi.LoginResponse
	if sso {
		resp, err = d.ssoLogin(ctx, req, lr)
	} else {
		resp, err = cc.login(ctx, lr)
	}
	if err != nil && isRevokedDeviceKey(err) {
		// The device was revoked (session ended by the controller): a new
		// sign-in enrolls this machine under a new key.
		if ok, rerr := d.rotateRevokedKey(); rerr != nil {
			d.log.Warn("replace revoked device key", "err", rerr)
		} else if ok && !sso {
			lr.DevicePublicKey = base64.StdEncoding.EncodeToString(d.key.Public().(ed25519.PublicKey))
			resp, err = cc.login(ctx, lr)
		}
	}
	if err != nil {
		cc.close()
		return localapi.Status{}, err
	}
	sess := &Session{
		ControllerURL: strings.TrimRight(req.ControllerURL, "/"), CAPEM: req.CAPEM,
		SessionToken: resp.SessionToken, ExpiresAt: resp.ExpiresAt, DeviceID: resp.DeviceID, Principal: resp.Principal,
	}
	cc.setToken(sess.SessionToken)

	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed.Load() {
		cc.close()
		return localapi.Status{}, ErrClosed
	}
	if err := d.state.writeJSON(sessionFile, sess); err != nil {
		cc.close()
		return localapi.Status{}, err
	}
	d.rememberController(sess)
	// A new sign-in replaces everything of the previous one.
	d.downLocked()
	d.stopSessionLocked()
	_ = d.state.remove(policyFile)
	d.pol = nil
	d.relays.Store(nil)
	d.table.Store(buildRouteTable(nil))
	d.sess = sess
	d.ctl = cc
	d.lastErr = ""
	if err := d.startSessionLocked(); err != nil {
		return localapi.Status{}, err
	}
	_ = d.state.writeJSON(prefsFile, Prefs{WantUp: true})
	if err := d.upLocked(); err != nil {
		return d.statusLocked(), err
	}
	d.log.Info("signed in", "principal", sess.Principal.Name, "controller", sess.ControllerURL)
	return d.statusLocked(), nil
}

func (d *Daemon) deviceName() string {
	if d.cfg.DeviceName != "" {
		return d.cfg.DeviceName
	}
	h, _ := os.Hostname()
	return h
}

// Logout revokes the session at the controller (best effort), takes the
// tunnel down and forgets the session and policy.
func (d *Daemon) Logout(ctx context.Context) (localapi.Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sess == nil {
		return d.statusLocked(), nil
	}
	d.downLocked()
	if d.ctl != nil {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := d.ctl.logout(lctx); err != nil {
			d.log.Warn("revoke session at controller", "err", err)
		}
		cancel()
	}
	d.stopSessionLocked()
	for _, f := range []string{sessionFile, policyFile, prefsFile} {
		if err := d.state.remove(f); err != nil {
			return d.statusLocked(), err
		}
	}
	d.sess, d.pol = nil, nil
	d.relays.Store(nil)
	d.table.Store(buildRouteTable(nil))
	d.lastErr = ""
	d.changed()
	return d.statusLocked(), nil
}

// Up brings the tunnel up.
func (d *Daemon) Up(ctx context.Context) (localapi.Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sess == nil {
		return d.statusLocked(), ErrNotSignedIn
	}
	if d.ctl == nil {
		if err := d.startSessionLocked(); err != nil {
			return d.statusLocked(), err
		}
	}
	if err := d.state.writeJSON(prefsFile, Prefs{WantUp: true}); err != nil {
		return d.statusLocked(), err
	}
	err := d.upLocked()
	return d.statusLocked(), err
}

// Down takes the tunnel down; the session stays.
func (d *Daemon) Down(ctx context.Context) (localapi.Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sess == nil {
		return d.statusLocked(), ErrNotSignedIn
	}
	if err := d.state.writeJSON(prefsFile, Prefs{WantUp: false}); err != nil {
		return d.statusLocked(), err
	}
	d.downLocked()
	return d.statusLocked(), nil
}

func (d *Daemon) upLocked() error {
	if d.up {
		return nil
	}
	if d.dialer == nil {
		if d.cfg.DirectOnly {
			dd, err := NewDirectDialer("")
			if err != nil {
				return err
			}
			d.dialer, d.closeDialer = dd, dd.Close
		} else {
			td, err := d.newTraversalDialer()
			if err != nil {
				return err
			}
			d.dialer, d.closeDialer = traversalDialer{td}, td.Close
		}
	}
	if d.cfg.NewFrontend == nil {
		return errors.New("no traffic front-end configured")
	}
	fe, err := d.cfg.NewFrontend()
	if err != nil {
		d.lastErr = err.Error()
		d.changed()
		return fmt.Errorf("start tunnel: %w", err)
	}
	d.pool = newPool(d.dialer, d, d.log, d.changed)
	ctx, cancel := context.WithCancel(context.Background())
	if err := fe.Start(ctx, d); err != nil {
		cancel()
		_ = fe.Close()
		d.pool.close()
		d.pool = nil
		d.lastErr = err.Error()
		d.changed()
		return fmt.Errorf("start tunnel: %w", err)
	}
	d.front, d.frontCancel, d.up = fe, cancel, true
	if w, err := watchNetwork(d.log, d.networkChanged); err != nil {
		d.log.Warn("not watching network changes; lost connectors are redialed on their backoff only", "err", err)
	} else {
		d.netWatch = w
	}
	fe.Update(d.policyViewLocked())
	d.lastErr = ""
	d.changed()
	return nil
}

func (d *Daemon) downLocked() {
	if !d.up {
		return
	}
	d.frontCancel()
	if err := d.front.Close(); err != nil {
		d.log.Warn("stop front-end", "err", err)
	}
	if d.netWatch != nil {
		_ = d.netWatch.Close()
		d.netWatch = nil
	}
	pool := d.pool
	d.front, d.frontCancel, d.pool, d.up = nil, nil, nil, false
	// The pool's dials and background redials ask the daemon for tokens,
	// TURN credentials and relays (under mu); close waits for them, so it
	// must not hold mu (postern down hung for 40 s in CI).
	d.mu.Unlock()
	pool.close()
	d.mu.Lock()
	d.changed()
}

// networkChanged is called (debounced) when the machine's addresses, routes
// or links change: connectors being redialed are tried at once.
func (d *Daemon) networkChanged() {
	if p := d.currentPool(); p != nil {
		d.log.Debug("network changed; redialing lost connectors now")
		p.retryNow()
	}
}

func (d *Daemon) policyViewLocked() *PolicyView {
	v := &PolicyView{Routes: d.table.Load().routes()}
	if d.pol != nil {
		v.Resources = d.pol.Resources
		v.Connectors = d.pol.Connectors
	}
	return v
}

// startSessionLocked creates the controller client and starts the policy stream.
func (d *Daemon) startSessionLocked() error {
	if d.ctl == nil {
		cc, err := newControlClient(d.sess.ControllerURL, d.sess.CAPEM, d.sess.SessionToken)
		if err != nil {
			return err
		}
		d.ctl = cc
		if d.pol != nil {
			d.learnControllersLocked(d.pol.ControllerURLs)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.sessCancel = cancel
	d.sessWG.Add(2)
	go d.policyLoop(ctx, d.ctl)
	go d.postureLoop(ctx, d.ctl)
	return nil
}

func (d *Daemon) stopSessionLocked() {
	if d.sessCancel != nil {
		d.sessCancel()
		d.sessCancel = nil
	}
	// Also when sessionEnded already cancelled the loop: it may still be
	// returning.
	d.mu.Unlock()
	d.sessWG.Wait()
	d.mu.Lock()
	if d.ctl != nil {
		d.ctl.close()
		d.ctl = nil
	}
	d.reachable = false
	d.downSince = time.Time{}
}

// policyLoop keeps the policy stream open, reconnecting with backoff and
// resuming from the last revision.
func (d *Daemon) policyLoop(ctx context.Context, cc *controlClient) {
	defer d.sessWG.Done()
	backoff := 500 * time.Millisecond
	for ctx.Err() == nil {
		d.mu.Lock()
		rev := int64(0)
		if d.pol != nil {
			rev = d.pol.Revision
		}
		d.mu.Unlock()
		start := time.Now()
		err := cc.policyStream(ctx, rev, func() {
			d.mu.Lock()
			was := d.reachable
			d.reachable, d.downSince = true, time.Time{}
			d.lastErr = ""
			pl := d.pool
			d.mu.Unlock()
			if !was && pl != nil {
				// Token refreshes that failed while the controller was
				// away retry now: a connector in fail static wants a
				// fresh token soon after the controller is back.
				pl.retryNow()
			}
			d.changed()
		}, func(p *controlapi.ClientPolicy) {
			d.mu.Lock()
			d.applyPolicyLocked(p, true)
			d.mu.Unlock()
			d.changed()
		})
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrSessionEnded) {
			d.sessionEnded(ctx, cc, err)
			return
		}
		d.mu.Lock()
		if d.reachable || d.downSince.IsZero() {
			d.downSince = time.Now()
		}
		d.reachable = false
		d.lastErr = err.Error()
		if errors.Is(err, ErrUnauthorized) {
			d.lastErr = "the controller no longer accepts this session (expired or revoked): sign in again with postern login"
		}
		d.mu.Unlock()
		d.changed()
		d.log.Warn("policy stream", "err", err)
		if time.Since(start) > 30*time.Second {
			backoff = 500 * time.Millisecond
		}
		if errors.Is(err, ErrUnauthorized) {
			backoff = max(backoff, 30*time.Second)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-cc.sessionEnded():
			t.Stop()
			d.sessionEnded(ctx, cc, ErrSessionEnded)
			return
		case <-t.C:
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// applyPolicyLocked installs a snapshot: keys, routes, front-end, pool.
func (d *Daemon) applyPolicyLocked(p *controlapi.ClientPolicy, persist bool) {
	if len(p.JWKS) > 0 {
		if keys, err := ctoken.ParseJWKS(p.JWKS); err == nil {
			d.keys.Replace(keys)
		} else {
			d.log.Warn("policy carries unusable JWKS", "err", err)
		}
	}
	d.issuer = p.Issuer
	d.pol = p
	if d.ctl != nil {
		d.learnControllersLocked(p.ControllerURLs)
	}
	d.relays.Store(&p.Relays)
	t := buildRouteTable(p)
	d.table.Store(t)
	if persist {
		if err := d.state.writeJSON(policyFile, p); err != nil {
			d.log.Warn("save policy", "err", err)
		}
	}
	if d.pool != nil {
		d.pool.retain(p.Connectors)
	}
	if d.front != nil {
		d.front.Update(d.policyViewLocked())
	}
}

// learnControllersLocked adds the controller's replicas, as its policy
// names them, to the URLs the controller client fails over to (the one
// signed in with stays first; the deployment CA still verifies them all).
func (d *Daemon) learnControllersLocked(urls []string) {
	if err := d.ctl.api.SetLearned(urls); err != nil {
		d.log.Warn("controller replicas", "err", err)
	}
}

// connectionToken implements tokenSource: it asks the controller for a
// token for c and verifies it before anything trusts the digest inside.
func (d *Daemon) connectionToken(ctx context.Context, c controlapi.ConnectorInfo) (string, *ctoken.Claims, error) {
	d.mu.Lock()
	cc, issuer, sess := d.ctl, d.issuer, d.sess
	d.mu.Unlock()
	if cc == nil || sess == nil {
		return "", nil, ErrNotSignedIn
	}
	resp, err := cc.connectionToken(ctx, c.ID)
	if err != nil {
		return "", nil, fmt.Errorf("connection token for connector %s: %w", c.Name, err)
	}
	v := &ctoken.Verifier{Issuer: issuer, Keys: d.keys}
	claims, err := v.Verify(resp.Token, c.ID)
	if err != nil {
		return "", nil, fmt.Errorf("%w: connector %s: %v", ErrTokenInvalid, c.Name, err)
	}
	if claims.Cnf.JKT != d.jkt {
		return "", nil, fmt.Errorf("%w: connector %s: %v", ErrTokenInvalid, c.Name, ctoken.ErrWrongBinding)
	}
	if claims.Device != sess.DeviceID {
		return "", nil, fmt.Errorf("%w: connector %s: token names device %q, this is %q", ErrTokenInvalid, c.Name, claims.Device, sess.DeviceID)
	}
	d.sigTokens.Store(c.ID, cachedToken{token: resp.Token, device: claims.Device, exp: claims.ExpiresAt.Time})
	return resp.Token, claims, nil
}

func (d *Daemon) deviceCert() tls.Certificate { return d.cert }

// Resources lists the resources the principal may use.
func (d *Daemon) Resources() []localapi.Resource {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := []localapi.Resource{}
	if d.pol == nil {
		return out
	}
	var names NameMapper
	if d.front != nil {
		names = d.front.Names()
	}
	for _, r := range d.pol.Resources {
		lr := localapi.Resource{ID: r.ID, Name: r.Name, Alias: r.Alias, Address: r.Address, Network: r.Network, Ports: r.Ports, Require: r.Require, Access: r.Access}
		if lr.Ports == nil {
			lr.Ports = []string{}
		}
		if sa, ok := names.(interface{ SyntheticAddrs(string) []netip.Addr }); ok {
			for _, a := range sa.SyntheticAddrs(r.ID) {
				lr.SyntheticAddrs = append(lr.SyntheticAddrs, a.String())
			}
		}
		out = append(out, lr)
	}
	return out
}

// ExplainDNS says how name resolves.
func (d *Daemon) ExplainDNS(ctx context.Context, name string) (localapi.DNSExplain, error) {
	d.mu.Lock()
	fe := d.front
	t := d.table.Load()
	d.mu.Unlock()
	if fe != nil {
		if ex, ok := fe.Explain(ctx, name); ok {
			return ex, nil
		}
	}
	ex := localapi.DNSExplain{Name: name}
	if tgt, ok := t.resolveHost(name, nil); ok {
		ex.Resource = tgt.res.Name
		ex.Pattern = tgt.res.Address
		for _, c := range t.connectors[tgt.res.Network] {
			ex.Connectors = append(ex.Connectors, c.Name)
		}
		ex.Note = "resolved by the connector inside the private network"
	} else {
		ex.Note = "not a resource: resolved by the normal system resolver"
	}
	return ex, nil
}

// names returns the front-end's name mapper.
func (d *Daemon) names() NameMapper {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.front == nil {
		return nil
	}
	return d.front.Names()
}
