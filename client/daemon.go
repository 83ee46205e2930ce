package client

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/netip"
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
	// NewTUNFrontend, when set, is used instead of NewFrontend: it builds a
	// TUN front-end for the given synthetic ranges (a zero prefix: the
	// built-in default), which are Ranges where the device set them and
	// otherwise the controller's pushed default (ranges.go).
	NewTUNFrontend func(v4, v6 netip.Prefix) (Frontend, error)
	// Ranges are the synthetic ranges the device set itself (posternd
	// --range4/--range6, the IT preset); zero prefixes follow the
	// controller.
	Ranges RangeSettings
	// Dialer opens QUIC connections to connectors; nil: the traversal
	// dialer (direct paths, relays from the policy), or a DirectDialer with
	// DirectOnly.
	Dialer     Dialer
	DirectOnly bool
	// ConnsPerConnector is the most QUIC connections kept to one connector
	// (client/spread.go); 0: min(GOMAXPROCS, 4), at least 2. 1 keeps a
	// single connection, as before.
	ConnsPerConnector int
	Logger            *slog.Logger
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

	// pushed: the controller's default synthetic ranges and whether this
	// machine can use them (ranges_policy.go).
	pushed pushedRanges

	// sigTokens keeps the last verified Connection Token per connector for
	// the relay signaling of path repairs (see signalingToken).
	sigTokens sync.Map // connector id -> cachedToken
	// turnCache keeps the last TURN credential (see turnCredentials).
	turnCache atomic.Pointer[cachedTURN]
}

// New opens the state directory, loads or creates the device key, and
// restores the session and last policy. Call Start to resume.
func New(cfg Config) (*Daemon, error) {
	if cfg.ConnsPerConnector < 0 || cfg.ConnsPerConnector > maxConnsPerConnector {
		return nil, fmt.Errorf("connections per connector: %d is outside 0..%d (0 picks the default)", cfg.ConnsPerConnector, maxConnsPerConnector)
	}
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

// startTunnelLocked builds and starts the front-end and the pool (upLocked
// adds the fallback for the controller's default ranges).
func (d *Daemon) startTunnelLocked() error {
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
	fe, err := d.newFrontendLocked()
	if err != nil {
		d.lastErr = err.Error()
		d.changed()
		return fmt.Errorf("start tunnel: %w", err)
	}
	d.pool = newPool(d.dialer, d, d.log, d.changed)
	if d.cfg.ConnsPerConnector > 0 {
		d.pool.maxConns = d.cfg.ConnsPerConnector
	}
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
