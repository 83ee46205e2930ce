package session

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/installer/preset"
	"postern.dev/postern/pki"
)

// Config configures a Manager.
type Config struct {
	// Dir is the state directory (device key, session, last policy,
	// remembered controller).
	Dir    *StateDir
	Logger *slog.Logger
	// DeviceName is reported at login (default: the host name).
	DeviceName string
	// Preset returns what IT preset on this machine (controller URL,
	// service-account key file); nil: installer/preset.Load.
	Preset func() (preset.Preset, error)
	// Posture collects this device's facts for the controller; nil reports
	// none beyond what the controller is told at sign-in.
	Posture func(context.Context) controlapi.PostureReport
	// Observer hears of the session's life; nil: nobody.
	Observer Observer
}

// Observer hears of what the session's background work finds. The Manager
// calls it from its loops, never with its own lock held; Stop, Logout and
// Begin wait for those calls to return, so an Observer must not call them.
type Observer interface {
	// ControllerUp: the policy stream (re)connected. recovered is true when
	// the controller had been unreachable.
	ControllerUp(recovered bool)
	// ControllerDown: the policy stream failed; msg says why. The session
	// rides it out (fail static) and reconnects with backoff.
	ControllerDown(msg string)
	// SessionEnded: the controller refused the session for good (revoked,
	// expired, device removed). The Manager forgets the session when this
	// returns (unless it was stopped meanwhile), so what the end means for
	// the caller is in place before the session shows signed out.
	SessionEnded(cause error)
}

// Manager is the device's session: the device key, the signed-in session
// and its controller client, the policy stream and the tokens derived from
// them. Its methods are safe for concurrent use.
type Manager struct {
	cfg Config
	log *slog.Logger
	dir *StateDir
	obs Observer

	// preset is what IT preset (read once in New); see preset.go.
	preset preset.Preset
	keys   *ctoken.KeySet
	closed atomic.Bool

	// relays of the current policy, read without mu: the pool's dialers
	// ask for them from goroutines the daemon's pool.close waits for.
	relays atomic.Pointer[[]controlapi.RelayInfo]
	// sigTokens keeps the last verified Connection Token per connector for
	// the relay signaling of path repairs (see SignalingToken).
	sigTokens sync.Map // connector id -> cachedToken
	// turnCache keeps the last TURN credential (see TURNCredentials).
	turnCache atomic.Pointer[cachedTURN]

	// life serialises what starts or stops the loops (Start, Stop, Begin,
	// Logout, Close): stopping waits for them.
	life sync.Mutex
	wg   sync.WaitGroup

	mu         sync.Mutex
	key        ed25519.PrivateKey
	cert       tls.Certificate
	jkt        string
	info       *Info
	ctl        *controlClient
	pol        *controlapi.ClientPolicy
	polChanged chan struct{} // closed when pol is replaced
	issuer     string
	cancel     context.CancelFunc
	reachable  bool
	downSince  time.Time
}

// New loads or creates the device key and restores the saved session and
// its last policy. Call Start to resume the session's background work.
func New(cfg Config) (*Manager, error) {
	if cfg.Dir == nil {
		return nil, fmt.Errorf("session: no state directory")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	m := &Manager{cfg: cfg, log: log, dir: cfg.Dir, obs: cfg.Observer, keys: ctoken.NewKeySet(nil), polChanged: make(chan struct{})}
	if m.obs == nil {
		m.obs = nopObserver{}
	}
	key, err := m.dir.deviceKey()
	if err != nil {
		return nil, err
	}
	if err := m.setKeyLocked(key); err != nil {
		return nil, err
	}
	m.loadPreset()
	info, err := m.dir.session()
	if err != nil {
		log.Warn("ignoring unreadable session; sign in again", "err", err)
	}
	if info != nil {
		m.info = info
		if pol, err := m.dir.policy(); err == nil && pol != nil {
			m.applyPolicyLocked(pol, false)
		}
	}
	return m, nil
}

func (m *Manager) setKeyLocked(key ed25519.PrivateKey) error {
	cert, err := pki.SelfSigned(key, "device.postern.invalid", 10*365*24*time.Hour)
	if err != nil {
		return fmt.Errorf("device certificate: %w", err)
	}
	m.key, m.cert = key, cert
	m.jkt = pki.KeyThumbprint(key.Public().(ed25519.PublicKey))
	return nil
}

type nopObserver struct{}

func (nopObserver) ControllerUp(bool)     {}
func (nopObserver) ControllerDown(string) {}
func (nopObserver) SessionEnded(error)    {}

// Start resumes a signed-in session's background work (policy stream,
// posture reports) unless it runs already. Signed out, it does nothing.
func (m *Manager) Start() error {
	m.life.Lock()
	defer m.life.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.info == nil || m.cancel != nil || m.closed.Load() {
		return nil
	}
	return m.startLocked()
}

// Running reports whether the session's background work runs.
func (m *Manager) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cancel != nil
}

// Stop ends the background work and closes the controller client; the
// session stays (Start resumes it). It waits for the loops, Observer calls
// included.
func (m *Manager) Stop() {
	m.life.Lock()
	defer m.life.Unlock()
	m.stopLoops()
}

// Close stops the session's work for good; the session stays on disk.
func (m *Manager) Close() {
	m.closed.Store(true)
	m.Stop()
}

// SignedIn reports whether there is a session.
func (m *Manager) SignedIn() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.info != nil
}

// State is a snapshot of the session for status reports.
type State struct {
	// Info is the session; nil: signed out.
	Info *Info
	// Policy is the current policy snapshot; nil: none yet.
	Policy *controlapi.ClientPolicy
	// Reachable: the policy stream is connected. DownSince is when it
	// was lost (zero: it never connected since the session started).
	Reachable bool
	DownSince time.Time
}

// State returns a snapshot of the session.
func (m *Manager) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	return State{Info: m.info, Policy: m.pol, Reachable: m.reachable, DownSince: m.downSince}
}

// Current returns the policy snapshot (nil: signed out, or none received or
// saved yet) and a channel closed when it is replaced. Snapshots are never
// modified: compare pointers to tell them apart.
func (m *Manager) Current() (*controlapi.ClientPolicy, <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pol, m.polChanged
}

// setPolicyLocked makes p the current snapshot and wakes its watchers.
func (m *Manager) setPolicyLocked(p *controlapi.ClientPolicy) {
	m.pol = p
	close(m.polChanged)
	m.polChanged = make(chan struct{})
}

// DeviceCert is the device's TLS certificate (its key is the device key).
func (m *Manager) DeviceCert() tls.Certificate {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cert
}

// KeyThumbprint is the device key's JWK thumbprint, which connection
// tokens are bound to.
func (m *Manager) KeyThumbprint() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.jkt
}

// Controllers returns the URLs the controller client tries (the one signed
// in with first) and the one it talks to now; nothing when the session is
// not running.
func (m *Manager) Controllers() (urls []string, current string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctl == nil {
		return nil, ""
	}
	return m.ctl.api.URLs(), m.ctl.api.URL()
}
