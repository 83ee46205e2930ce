package controller

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/export"
	"postern.dev/postern/controller/store"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/pki"
)

// Config configures a controller.
type Config struct {
	DataDir   string       // created if missing
	PublicURL string       // e.g. "https://127.0.0.1:8443": its host goes into the TLS cert; it is the token issuer
	Logger    *slog.Logger // nil: discard

	// AdvertiseURL is this replica's own URL (https://HOST:PORT), when
	// several replicas serve one deployment: its host goes into the TLS
	// certificate beside PublicURL's, and clients, connectors and relays
	// learn it from their policy pushes, to fail over to it when the one
	// they talk to dies. Empty: PublicURL is the only URL.
	AdvertiseURL string

	// DatabaseURL, when set (postgres://user:password@host:port/db), keeps
	// the store in that PostgreSQL database instead of DataDir/postern.db,
	// so that several replicas can serve one deployment (docs/controller.md,
	// "Running on PostgreSQL / several replicas").
	DatabaseURL string

	HeartbeatInterval time.Duration // asked of connectors and relays; default controlapi.HeartbeatInterval
	TokenTTL          time.Duration // Connection Token lifetime; default ctoken.DefaultTTL (10 min)
	SessionTTL        time.Duration // device session lifetime; default 7 days
	EnrollmentTTL     time.Duration // default enrollment token lifetime; default 24 h
	CredentialTTL     time.Duration // connector/relay client certificate lifetime; default 30 days
	TURNCredentialTTL time.Duration // default 1 h
	KeepaliveInterval time.Duration // push-stream keepalives; default 15 s
	RateLimit         float64       // requests per second per client IP; default 100
	RateBurst         int           // default 400
	MaxEvents         int           // flow events kept; default 100000

	// Now is the clock sessions, credentials and sign-in throttling are
	// judged by (tests move it). Default time.Now.
	Now func() time.Time

	// VerifyIDToken, when set, accepts LoginRequest.IDToken (an ID token the
	// client obtained itself) and returns who it vouches for; the sign-in
	// then continues as SignInExternal. Nil: id_token sign-in is refused.
	VerifyIDToken func(ctx context.Context, rawIDToken string) (*ExternalIdentity, error)

	// OIDC, when set, enables single sign-on with an OpenID Connect identity
	// provider (docs/sso.md): the PathOIDC* endpoints, users created on
	// first sign-in, and periodic refreshes that end the sessions of users
	// the provider no longer vouches for. It also sets VerifyIDToken when
	// that is nil.
	OIDC *OIDCConfig

	// Export, when set, sends the audit log and flow events to the sinks it
	// names (controller/export, docs/events.md).
	Export *export.Config
}

func (cfg *Config) defaults() {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.HeartbeatInterval, controlapi.HeartbeatInterval)
	def(&cfg.TokenTTL, ctoken.DefaultTTL)
	def(&cfg.SessionTTL, 7*24*time.Hour)
	def(&cfg.EnrollmentTTL, 24*time.Hour)
	def(&cfg.CredentialTTL, 30*24*time.Hour)
	def(&cfg.TURNCredentialTTL, time.Hour)
	def(&cfg.KeepaliveInterval, 15*time.Second)
	if cfg.RateLimit <= 0 {
		cfg.RateLimit = 100
	}
	if cfg.RateBurst <= 0 {
		cfg.RateBurst = 400
	}
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = 100000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
}

// Controller is a running control plane.
type Controller struct {
	cfg    Config
	log    *slog.Logger
	store  store.Store
	issuer string
	host   string
	ca     *pki.CA

	// Replicas (replicas.go): this one's advertised URL and host, and when
	// each other replica was last heard of (under rtMu).
	advertise, advHost string
	replicaSeen        map[string]time.Time
	replicaTouched     time.Time      // monitorLoop only
	announced          []string       // controllerURLs last pushed (under rtMu)
	follower           store.Follower // set when other replicas' commits can be followed incrementally
	tlsCert            tls.Certificate
	signer             atomic.Pointer[ctoken.Signer]
	jwks               atomic.Pointer[json.RawMessage]
	keysMu             sync.Mutex
	adminTok           string
	turnKey            []byte

	// sharedKeys is the sealed token-key set last adopted from a shared
	// database (sharedkeys.go); nil with SQLite.
	sharedKeys atomic.Pointer[string]

	reloadMu sync.Mutex
	cur      atomic.Pointer[Model]
	hub      *hub

	mfaFails mfaThrottle
	// accessTicks is used by the monitor loop only (access_tick.go).
	accessTicks accessTicker
	rtMu        sync.Mutex
	connSeen    map[string]time.Time
	connLoad    map[string]controlapi.ConnectorLoad
	relaySeen   map[string]time.Time
	relayStats  map[string]map[string]float64
	started     time.Time

	limiter *api.IPLimiter
	logins  *loginThrottle
	sso     *ssoState // nil: single sign-on not configured

	met      *metrics
	exporter *export.Exporter // nil: no export configured

	muxOnce sync.Once
	mux     *http.ServeMux
	handler http.Handler

	stop      context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// Sentinel errors of the controller.
var (
	ErrConfig           = errors.New("invalid controller configuration")
	ErrUnknownComponent = api.ErrUnknownComponent
	ErrEnrollment       = api.ErrEnrollment
	ErrNotAllowed       = api.ErrNotAllowed
	ErrUnauthenticated  = api.ErrUnauthenticated
	ErrThrottled        = api.ErrThrottled
	// ErrIdentityConflict: an external identity cannot be matched to a
	// Postern user without taking over another identity's account.
	ErrIdentityConflict = errors.New("identity conflict")
)

// Open loads or, on first start, creates a controller's state in cfg.DataDir:
// the deployment CA (ca.pem, ca-key.pem), the TLS certificate for the public
// URL's host, the token-signing keys, the TURN secret, admin-token and the
// SQLite database (or, with cfg.DatabaseURL, the shared PostgreSQL one).
func Open(cfg Config) (*Controller, error) {
	cfg.defaults()
	if cfg.DataDir == "" {
		return nil, fmt.Errorf("%w: DataDir is required", ErrConfig)
	}
	u, err := url.Parse(cfg.PublicURL)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return nil, fmt.Errorf("%w: PublicURL %q must be an https:// URL with a host", ErrConfig, cfg.PublicURL)
	}
	var advertise, advHost string
	if cfg.AdvertiseURL != "" {
		a, err := url.Parse(cfg.AdvertiseURL)
		if err != nil || a.Scheme != "https" || a.Hostname() == "" || a.Path != "" && a.Path != "/" {
			return nil, fmt.Errorf("%w: AdvertiseURL %q must be an https:// URL with a host and no path", ErrConfig, cfg.AdvertiseURL)
		}
		advertise, advHost = strings.TrimSuffix(cfg.AdvertiseURL, "/"), a.Hostname()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	c := &Controller{
		advertise: advertise, advHost: advHost, replicaSeen: map[string]time.Time{},
		cfg: cfg, log: cfg.Logger, issuer: strings.TrimSuffix(cfg.PublicURL, "/"), host: u.Hostname(),
		hub: newHub(), connSeen: map[string]time.Time{}, connLoad: map[string]controlapi.ConnectorLoad{},
		relaySeen: map[string]time.Time{}, relayStats: map[string]map[string]float64{}, started: time.Now(),
		limiter: api.NewIPLimiter(cfg.RateLimit, cfg.RateBurst), logins: newLoginThrottle(cfg.Now),
	}
	c.met = newMetrics(c)
	if err := c.loadOrCreateCA(); err != nil {
		return nil, err
	}
	if err := c.loadOrCreateTLS(); err != nil {
		return nil, err
	}
	if err := c.loadOrCreateSigningKeys(); err != nil {
		return nil, err
	}
	if c.adminTok, err = loadOrCreateSecret(filepath.Join(cfg.DataDir, "admin-token"), "pat_"); err != nil {
		return nil, err
	}
	turn, err := loadOrCreateSecret(filepath.Join(cfg.DataDir, "turn-secret"), "")
	if err != nil {
		return nil, err
	}
	c.turnKey = []byte(turn)
	if cfg.OIDC != nil {
		if err := c.setupSSO(); err != nil {
			c.limiter.Stop()
			return nil, err
		}
	}
	st, err := c.openStore()
	if err != nil {
		c.stopSSO()
		c.limiter.Stop()
		return nil, err
	}
	c.store = instrumentStore(st, c.met)
	if th, ok := st.(store.Throttle); ok {
		// Replicas count sign-in and second-factor failures together.
		c.logins.share(th, c.log)
		c.mfaFails.shared, c.mfaFails.log = th, c.log
	}
	if f, ok := st.(store.Follower); ok {
		c.follower = f
	}
	if err := backfillCredentials(context.Background(), st); err != nil {
		st.Close()
		c.stopSSO()
		c.limiter.Stop()
		return nil, err
	}
	if err := c.reload(context.Background()); err != nil {
		st.Close()
		c.stopSSO()
		c.limiter.Stop()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	watch, unwatch := st.Watch()
	c.wg.Add(2)
	go func() { defer c.wg.Done(); defer unwatch(); c.watchLoop(ctx, watch) }()
	go func() { defer c.wg.Done(); c.monitorLoop(ctx) }()
	if c.sso != nil {
		c.startSSO(ctx)
	}
	if err := c.startExport(ctx); err != nil {
		c.Close()
		return nil, err
	}
	c.log.Info("controller ready", "data", cfg.DataDir, "issuer", c.issuer, "ca_sha256", c.CAFingerprint())
	return c, nil
}

// AdminToken is the bearer token of the admin API (DataDir/admin-token).
func (c *Controller) AdminToken() string { return c.adminTok }

// CACertPEM is the deployment CA certificate (DataDir/ca.pem).
func (c *Controller) CACertPEM() []byte { return pki.EncodeCertPEM(c.ca.Cert) }

// CAFingerprint is the hex SHA-256 of the CA certificate's DER.
func (c *Controller) CAFingerprint() string { return c.ca.Fingerprint() }

// Issuer is the iss of Connection Tokens (the public URL).
func (c *Controller) Issuer() string { return c.issuer }

// JWKS is the token-verification key set document.
func (c *Controller) JWKS() json.RawMessage { return *c.jwks.Load() }

func (c *Controller) model() *Model { return c.cur.Load() }

// loadAll rebuilds the in-memory model from every object in the store when
// its revision moved, and wakes every push subscriber.
func (c *Controller) loadAll(ctx context.Context) error {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	if m := c.cur.Load(); m != nil {
		if rev, err := c.store.Revision(ctx); err == nil && rev == m.Rev {
			return nil
		}
	}
	c.met.follows.WithLabelValues("full").Inc()
	rev, objs, err := c.store.LoadAll(ctx)
	if err != nil {
		return fmt.Errorf("load model: %w", err)
	}
	if err := c.adoptSharedKeys(objs); err != nil {
		return fmt.Errorf("load model: %w", err)
	}
	m, err := buildModel(rev, objs, c.now())
	if err != nil {
		return fmt.Errorf("load model: %w", err)
	}
	c.cur.Store(m)
	c.hub.notify()
	return nil
}

// watchLoop reloads on commits made by other writers (another replica, with a
// shared backend).
func (c *Controller) watchLoop(ctx context.Context, ch <-chan int64) {
	for {
		select {
		case <-ctx.Done():
			return
		case rev, ok := <-ch:
			if !ok {
				return
			}
			if m := c.model(); m != nil && m.Rev >= rev {
				continue
			}
			if err := c.reload(ctx); err != nil && ctx.Err() == nil {
				c.log.Error("reload after commit", "err", err)
			}
		}
	}
}

// Serve serves the HTTPS API (TLS 1.3 only) on ln until ctx ends.
func (c *Controller) Serve(ctx context.Context, ln net.Listener) error {
	tlsCfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{c.tlsCert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pki.CAPool(c.ca.Cert),
		NextProtos:   []string{"h2", "http/1.1"},
	}
	srv := &http.Server{
		Handler:           c.Handler(),
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(tls.NewListener(ln, tlsCfg)) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}

// Close stops background work and closes the store.
func (c *Controller) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.stop()
		c.hub.close()
		c.wg.Wait()
		c.limiter.Stop()
		err = c.store.Close()
	})
	return err
}
