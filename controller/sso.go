package controller

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gopkg.in/yaml.v3"

	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/oidcauth"
	"postern.dev/postern/internal/atomicfile"
)

// OIDCConfig configures single sign-on with an OpenID Connect identity
// provider (docs/sso.md). It is read from DATA/oidc.yaml (LoadOIDCConfig)
// and/or the serve flags, and given to Open as Config.OIDC.
type OIDCConfig struct {
	// Issuer URL exactly as the provider's discovery document states it.
	Issuer   string `yaml:"issuer"`
	ClientID string `yaml:"client_id"`
	// ClientSecretFile holds the client secret (one line). Preferred over
	// ClientSecret, which puts the secret in the configuration file.
	ClientSecretFile string `yaml:"client_secret_file"`
	ClientSecret     string `yaml:"client_secret"`
	// GroupsClaim names the claim mapped to Postern groups (default "groups").
	GroupsClaim string `yaml:"groups_claim"`
	// EmailClaim names the claim used as the user's name (default "email").
	EmailClaim           string   `yaml:"email_claim"`
	AllowUnverifiedEmail bool     `yaml:"allow_unverified_email"`
	Scopes               []string `yaml:"scopes"`
	// RedirectURLs the controller accepts from clients; loopback ones match
	// any port. Default http://127.0.0.1/callback and http://[::1]/callback.
	RedirectURLs []string `yaml:"redirect_urls"`
	// CAFile is a PEM bundle trusted (besides the system roots) to reach the
	// identity provider over HTTPS, for a provider with a private CA.
	CAFile string `yaml:"ca_file"`
	// FlowKeyFile holds the 32-byte key that seals sign-in flows (default
	// DATA/oidc-flow-key, made on first start). Replicas share it.
	FlowKeyFile string `yaml:"flow_key_file"`
	// RefreshInterval is how often every OIDC session is re-checked with the
	// identity provider (refresh token grant): access ends within about this
	// long after the provider stops vouching for a user. Default 5m, at
	// least 1s.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// FlowTTL bounds a browser sign-in from start to exchange (default 10m).
	FlowTTL time.Duration `yaml:"flow_ttl"`

	// AdminGroups maps identity-provider groups to console roles (owner,
	// admin, approver, auditor; docs/console.md): their members may sign in
	// to the console with single sign-on, with the most powerful role of
	// their groups. The provider must accept PUBLIC_URL/console/oidc/callback
	// as a redirect URI for the client.
	AdminGroups map[string]string `yaml:"admin_groups"`

	// HTTPClient reaches the identity provider (tests; overrides CAFile).
	HTTPClient *http.Client `yaml:"-"`
}

// Defaults for OIDCConfig.
const (
	DefaultOIDCRefreshInterval = 5 * time.Minute
	minOIDCRefreshInterval     = time.Second
	oidcFlowKeyFile            = "oidc-flow-key"
	oidcFlowKeySize            = 32
)

// OIDCConfigFile is the configuration file serve reads from the data
// directory when present.
const OIDCConfigFile = "oidc.yaml"

// LoadOIDCConfig reads an oidc.yaml file: either the settings at the top
// level or under an "oidc:" key. Unknown keys are errors. A relative
// client_secret_file, ca_file or flow_key_file is relative to the file.
func LoadOIDCConfig(path string) (*OIDCConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read OIDC configuration: %w", err)
	}
	var top map[string]yaml.Node
	if err := yaml.Unmarshal(b, &top); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	if len(top) == 0 {
		return nil, fmt.Errorf("%w: %s holds no settings (issuer, client_id, client_secret_file, ...)", ErrConfig, path)
	}
	oc := new(OIDCConfig)
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if _, ok := top["oidc"]; ok {
		var wrapped struct {
			OIDC *OIDCConfig `yaml:"oidc"`
		}
		wrapped.OIDC = oc
		err = dec.Decode(&wrapped)
	} else {
		err = dec.Decode(oc)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
	}
	dir := filepath.Dir(path)
	for _, p := range []*string{&oc.ClientSecretFile, &oc.CAFile, &oc.FlowKeyFile} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	if oc.ClientSecret != "" {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("%w: %s holds client_secret but is readable by other users (mode %v); chmod 600 it or use client_secret_file", ErrConfig, path, fi.Mode().Perm())
		}
	}
	return oc, nil
}

// validate checks the settings that need no network and fills defaults.
func (oc *OIDCConfig) validate(dataDir string) error {
	oc.Issuer = strings.TrimSpace(oc.Issuer)
	if oc.Issuer == "" {
		return fmt.Errorf("%w: oidc issuer is required (--oidc-issuer)", ErrConfig)
	}
	u, err := url.Parse(oc.Issuer)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%w: oidc issuer %q is not an absolute https URL without query", ErrConfig, oc.Issuer)
	}
	if u.Scheme == "http" {
		if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
			if u.Hostname() != "localhost" {
				return fmt.Errorf("%w: oidc issuer %q: plain http is only allowed on a loopback address; use https", ErrConfig, oc.Issuer)
			}
		}
	}
	if strings.TrimSpace(oc.ClientID) == "" {
		return fmt.Errorf("%w: oidc client id is required (--oidc-client-id)", ErrConfig)
	}
	if oc.ClientSecretFile != "" {
		if oc.ClientSecret != "" {
			return fmt.Errorf("%w: give the oidc client secret once: client_secret or client_secret_file, not both", ErrConfig)
		}
		b, err := os.ReadFile(oc.ClientSecretFile)
		if err != nil {
			return fmt.Errorf("%w: oidc client secret file: %v", ErrConfig, err)
		}
		oc.ClientSecret = strings.TrimSpace(string(b))
		if oc.ClientSecret == "" {
			return fmt.Errorf("%w: oidc client secret file %s is empty", ErrConfig, oc.ClientSecretFile)
		}
	}
	if oc.ClientSecret == "" {
		return fmt.Errorf("%w: oidc client secret is required (--oidc-client-secret-file FILE); the controller is a confidential client", ErrConfig)
	}
	if oc.RefreshInterval == 0 {
		oc.RefreshInterval = DefaultOIDCRefreshInterval
	}
	if oc.RefreshInterval < minOIDCRefreshInterval {
		return fmt.Errorf("%w: oidc refresh interval %s is too short (at least %s)", ErrConfig, oc.RefreshInterval, minOIDCRefreshInterval)
	}
	if oc.FlowTTL < 0 {
		return fmt.Errorf("%w: oidc flow_ttl %s is negative", ErrConfig, oc.FlowTTL)
	}
	for g, role := range oc.AdminGroups {
		if err := validRole(role); err != nil {
			return fmt.Errorf("%w: oidc admin_groups: group %q: %v", ErrConfig, g, err)
		}
	}
	if oc.FlowKeyFile == "" {
		oc.FlowKeyFile = filepath.Join(dataDir, oidcFlowKeyFile)
	}
	if oc.HTTPClient == nil {
		tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if oc.CAFile != "" {
			b, err := os.ReadFile(oc.CAFile)
			if err != nil {
				return fmt.Errorf("%w: oidc ca_file: %v", ErrConfig, err)
			}
			pool, err := x509.SystemCertPool()
			if err != nil || pool == nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(b) {
				return fmt.Errorf("%w: oidc ca_file %s holds no PEM certificate", ErrConfig, oc.CAFile)
			}
			tlsCfg.RootCAs = pool
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = tlsCfg
		oc.HTTPClient = &http.Client{Transport: tr, Timeout: 20 * time.Second}
	}
	return nil
}

// loadFlowKey reads the flow key, or makes a new one (saved by saveFlowKey
// once the rest of the configuration is known to be good).
func loadFlowKey(path string) (key []byte, created bool, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) < oidcFlowKeySize {
			return nil, false, fmt.Errorf("%w: oidc flow key %s holds %d bytes, want %d", ErrConfig, path, len(b), oidcFlowKeySize)
		}
		return b, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("read oidc flow key: %w", err)
	}
	key = make([]byte, oidcFlowKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, false, fmt.Errorf("make oidc flow key: %w", err)
	}
	return key, true, nil
}

func saveFlowKey(path string, key []byte) error {
	if err := atomicfile.Write(path, key, 0o600); err != nil {
		return fmt.Errorf("write oidc flow key: %w", err)
	}
	return nil
}

// ssoState is the controller's single sign-on: the configured provider
// (discovered at start, or later when the identity provider was unreachable
// then) and the limits of its endpoints.
type ssoState struct {
	cfg     OIDCConfig
	auth    oidcauth.Config
	prov    atomic.Pointer[oidcauth.Provider]
	mu      sync.Mutex
	lastErr error
	limiter *api.IPLimiter
}

// provider returns the discovered provider, or an error saying why there is
// none yet.
func (s *ssoState) provider() (*oidcauth.Provider, error) {
	if p := s.prov.Load(); p != nil {
		return p, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return nil, fmt.Errorf("%w: the identity provider %s has not been reached yet: %v", oidcauth.ErrIdP, s.cfg.Issuer, s.lastErr)
}

// discover tries once to fetch the provider's discovery document.
func (s *ssoState) discover(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	p, err := oidcauth.New(ctx, s.auth)
	if err != nil {
		s.mu.Lock()
		s.lastErr = err
		s.mu.Unlock()
		return err
	}
	s.prov.Store(p)
	return nil
}

// setupSSO validates the OIDC settings, loads the flow key and discovers the
// provider. A configuration error stops the controller; an unreachable
// identity provider does not (password sign-in, connectors and existing
// sessions keep working): discovery is retried in the background.
func (c *Controller) setupSSO() error {
	oc := *c.cfg.OIDC
	if err := oc.validate(c.cfg.DataDir); err != nil {
		return err
	}
	key, created, err := loadFlowKey(oc.FlowKeyFile)
	if err != nil {
		return err
	}
	s := &ssoState{
		cfg: oc,
		auth: oidcauth.Config{
			Issuer: oc.Issuer, ClientID: oc.ClientID, ClientSecret: oc.ClientSecret,
			GroupsClaim: oc.GroupsClaim, EmailClaim: oc.EmailClaim, AllowUnverifiedEmail: oc.AllowUnverifiedEmail,
			Scopes: oc.Scopes, RedirectURLs: c.ssoRedirects(oc), FlowKey: key, FlowTTL: oc.FlowTTL, HTTPClient: oc.HTTPClient,
		},
		// Sign-in endpoints call the identity provider: a tighter budget per
		// client IP than the API's, still enough for an office behind one
		// NAT address signing in at 9 am.
		limiter: api.NewIPLimiter(10, 100),
	}
	if err := s.discover(context.Background()); err != nil {
		if !errors.Is(err, oidcauth.ErrIdP) {
			s.limiter.Stop()
			return fmt.Errorf("%w: %v", ErrConfig, err)
		}
		c.log.Error("single sign-on: identity provider unreachable; retrying in the background", "issuer", oc.Issuer, "err", err)
	}
	if created {
		if err := saveFlowKey(oc.FlowKeyFile, key); err != nil {
			s.limiter.Stop()
			return err
		}
	}
	if s.prov.Load() != nil {
		c.log.Info("single sign-on enabled", "issuer", oc.Issuer, "client_id", oc.ClientID, "refresh_interval", oc.RefreshInterval)
	}
	c.sso = s
	if c.cfg.VerifyIDToken == nil {
		c.cfg.VerifyIDToken = c.verifyIDToken
	}
	return nil
}

// stopSSO releases what setupSSO made when Open fails later.
func (c *Controller) stopSSO() {
	if c.sso != nil {
		c.sso.limiter.Stop()
	}
}

// ssoRetryWait is the first pause before discovery is tried again; it
// doubles up to 5 minutes.
var ssoRetryWait = 5 * time.Second

// refreshTick is how often the refresher looks for due sessions.
func refreshTick(interval time.Duration) time.Duration {
	return min(max(interval/4, 250*time.Millisecond), 30*time.Second)
}

// startSSO runs discovery retries and the refresher until ctx ends.
func (c *Controller) startSSO(ctx context.Context) {
	s := c.sso
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer s.limiter.Stop()
		wait := ssoRetryWait
		for s.prov.Load() == nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			if err := s.discover(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				c.log.Warn("single sign-on: identity provider still unreachable", "issuer", s.cfg.Issuer, "err", err)
				wait = min(2*wait, 5*time.Minute)
				continue
			}
			c.log.Info("single sign-on: identity provider reached", "issuer", s.cfg.Issuer)
		}
		p := s.prov.Load()
		p.RunRefresher(ctx, &oidcSessionStore{c: c, issuer: s.cfg.Issuer, interval: s.cfg.RefreshInterval}, refreshTick(s.cfg.RefreshInterval), c.log.With("part", "oidc-refresh"))
	}()
}

// verifyIDToken is Config.VerifyIDToken when single sign-on is configured:
// an ID token the client obtained itself, for this controller's client id.
// Such a session cannot be refreshed, so it ends when the ID token expires.
func (c *Controller) verifyIDToken(ctx context.Context, raw string) (*ExternalIdentity, error) {
	p, err := c.sso.provider()
	if err != nil {
		return nil, err
	}
	id, err := p.VerifyIDToken(ctx, raw)
	if err != nil {
		return nil, err
	}
	ext, err := encodeOIDCState(oidcSessionState{Issuer: id.Issuer, Subject: id.Subject})
	if err != nil {
		return nil, err
	}
	return &ExternalIdentity{Method: sessionMethodOIDC, Issuer: id.Issuer, Subject: id.Subject, Email: id.Email, EmailVerified: id.EmailVerified,
		Groups: id.Groups, External: ext, ExpiresAt: id.IDTokenExpiry}, nil
}
