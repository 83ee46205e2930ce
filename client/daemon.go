package client

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"postern.dev/postern/client/session"
	"postern.dev/postern/controlapi"
	"postern.dev/postern/installer/preset"
	"postern.dev/postern/localapi"
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
	// BulkQueueTarget is the queueing delay a bulk upload leaves on its
	// connection while interactive flows are active (package bulkyield).
	// 0: bulkyield.DefaultTarget; negative: bulk uploads never wait.
	BulkQueueTarget time.Duration
	Logger          *slog.Logger
	// DeviceName is reported at login (default: the host name).
	DeviceName string
	// Preset returns what IT preset on this machine (controller URL,
	// service-account key file); nil: installer/preset.Load.
	Preset func() (preset.Preset, error)
}

// Daemon is the client daemon core: the composition of the session
// (package client/session: sign-in, policy stream, tokens) and the flow
// layer of this package (front-ends, route table, connection pool, flows),
// which sees the session only through PolicySource and TokenSource.
//
// Lock order: d.mu may be held while calling the session's accessors, never
// while calling what starts or stops its loops (Start, Stop, Begin, Logout,
// Close): those wait for the loops, whose Observer calls take d.mu.
type Daemon struct {
	cfg   Config
	log   *slog.Logger
	state *session.StateDir

	// sm is the session; policy, tokens and creds are the flow layer's
	// view of it (policy is read under mu).
	sm     *session.Manager
	policy PolicySource
	tokens TokenSource
	creds  relayCredentials

	dialer      Dialer
	closeDialer func() error

	table atomic.Pointer[routeTable]
	// relays of the applied policy, read without mu: the pool's dialers
	// ask for them from goroutines that pool.close waits for under mu.
	relays atomic.Pointer[[]controlapi.RelayInfo]

	mu          sync.Mutex
	applied     *controlapi.ClientPolicy // the snapshot routes, pool and front-end follow
	up          bool
	front       Frontend
	frontCancel context.CancelFunc
	pool        *pool
	netWatch    netWatcher
	lastErr     string

	activeFlows atomic.Int64
	totalFlows  atomic.Int64
	bytesUp     atomic.Int64
	bytesDown   atomic.Int64

	events *broadcaster
	closed atomic.Bool
	// stopFollow ends followPolicy; followDone is closed when it returned.
	stopFollow chan struct{}
	followDone chan struct{}

	// pushed: the controller's default synthetic ranges and whether this
	// machine can use them (ranges_policy.go).
	pushed pushedRanges
}

// New opens the state directory, loads or creates the device key, and
// restores the session and last policy. Call Start to resume.
func New(cfg Config) (*Daemon, error) {
	if cfg.ConnsPerConnector < 0 || cfg.ConnsPerConnector > maxConnsPerConnector {
		return nil, fmt.Errorf("connections per connector: %d is outside 0..%d (0 picks the default)", cfg.ConnsPerConnector, maxConnsPerConnector)
	}
	st, err := session.OpenStateDir(cfg.StateDir)
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
	d := &Daemon{
		cfg: cfg, log: log, state: st,
		events:     newBroadcaster(),
		stopFollow: make(chan struct{}),
		followDone: make(chan struct{}),
	}
	d.table.Store(buildRouteTable(nil))
	sm, err := session.New(session.Config{
		Dir: st, Logger: log, DeviceName: cfg.DeviceName, Preset: cfg.Preset,
		Posture: collectPosture, Observer: sessionEvents{d},
	})
	if err != nil {
		return nil, err
	}
	d.sm, d.policy, d.tokens, d.creds = sm, sm, sm, sm
	if cfg.Dialer != nil {
		d.dialer = cfg.Dialer
	}
	d.syncPolicyLocked() // the saved policy, before anything runs
	go func() {
		defer close(d.followDone)
		d.followPolicy(sm, d.stopFollow)
	}()
	return d, nil
}

// Start resumes the saved session: the policy stream starts, and the tunnel
// comes up unless the user last ran `postern down`.
func (d *Daemon) Start() error {
	if !d.sm.SignedIn() {
		return nil
	}
	if err := d.sm.Start(); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.prefs().WantUp {
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
	d.mu.Unlock()
	d.sm.Close()
	close(d.stopFollow)
	<-d.followDone
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
	// Resumes the session's work when it is not running (Start was not
	// called); before taking d.mu (see Daemon).
	serr := d.sm.Start()
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.sm.SignedIn() {
		return d.statusLocked(), ErrNotSignedIn
	}
	if serr != nil {
		return d.statusLocked(), serr
	}
	if err := d.state.WriteJSON(prefsFile, Prefs{WantUp: true}); err != nil {
		return d.statusLocked(), err
	}
	err := d.upLocked()
	return d.statusLocked(), err
}

// Down takes the tunnel down; the session stays.
func (d *Daemon) Down(ctx context.Context) (localapi.Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.sm.SignedIn() {
		return d.statusLocked(), ErrNotSignedIn
	}
	if err := d.state.WriteJSON(prefsFile, Prefs{WantUp: false}); err != nil {
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
	d.pool = newPool(d.dialer, d.tokens, d.log, d.changed)
	if d.cfg.ConnsPerConnector > 0 {
		d.pool.maxConns = d.cfg.ConnsPerConnector
	}
	if d.cfg.BulkQueueTarget != 0 {
		d.pool.bulkTarget = d.cfg.BulkQueueTarget // negative: never (spread.go)
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
	// The pool's dials and background redials ask for tokens, TURN
	// credentials and relays; close waits for them, so it
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
