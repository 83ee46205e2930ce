// Package oidcauth is the controller's side of single sign-on with an OpenID
// Connect identity provider (Okta, Entra ID, Google, Keycloak, ...).
//
// The controller is the relying party: it holds the client secret, redeems
// authorization codes (with the PKCE verifier the client kept) and device
// codes, verifies the ID token (signature, issuer, audience = the client id,
// expiry, nonce), maps a configured claim to groups and keeps the refresh
// token. Refreshing it periodically (RefreshDue, RunRefresher) is how access
// ends when the identity provider stops vouching for a user.
//
// The pending state of a sign-in (state, nonce, redirect URI, PKCE challenge,
// device code) travels in an opaque Flow handle sealed with AES-GCM under
// Config.FlowKey, so any controller replica sharing the key can finish a
// sign-in another one started, and nothing is stored until it succeeds.
//
// The HTTP side (controlapi.PathOIDC*) belongs to the controller; docs/sso.md
// describes how the pieces fit.
package oidcauth

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"postern.dev/postern/controlapi"
)

// Config configures the identity provider.
type Config struct {
	// Issuer URL exactly as the provider's discovery document states it.
	Issuer       string `yaml:"issuer" json:"issuer"`
	ClientID     string `yaml:"client_id" json:"client_id"`
	ClientSecret string `yaml:"client_secret" json:"client_secret"`
	// GroupsClaim names the ID token (or userinfo) claim whose value, a
	// string or a list of strings, gives the user's groups. Default "groups".
	GroupsClaim string `yaml:"groups_claim" json:"groups_claim"`
	// EmailClaim names the claim used as the user's name. Default "email".
	EmailClaim string `yaml:"email_claim" json:"email_claim"`
	// AllowUnverifiedEmail accepts ID tokens whose email_verified claim is
	// false (or "false"). By default they are refused, since group
	// membership in network.yaml names users by email. A token without the
	// claim, as some providers send, is accepted with
	// Identity.EmailVerified false: the controller then links no existing
	// account by that email.
	AllowUnverifiedEmail bool `yaml:"allow_unverified_email" json:"allow_unverified_email"`
	// Scopes are requested in addition to openid, email, profile and
	// offline_access (e.g. "groups" for Okta).
	Scopes []string `yaml:"scopes" json:"scopes"`
	// RedirectURLs the controller accepts from clients. An http URL on a
	// loopback IP (127.0.0.1 or [::1]) matches any port (RFC 8252 section
	// 7.3). Default: http://127.0.0.1/callback and http://[::1]/callback.
	// They must be registered at the identity provider too.
	RedirectURLs []string `yaml:"redirect_urls" json:"redirect_urls"`
	// FlowKey seals flow handles (at least 32 bytes). Replicas of one
	// deployment share it; when empty, a random key is made, which is fine
	// for a single controller.
	FlowKey []byte `yaml:"-" json:"-"`
	// FlowTTL bounds a browser sign-in from start to exchange. Default 10 min.
	FlowTTL time.Duration `yaml:"flow_ttl" json:"flow_ttl"`
	// HTTPClient reaches the identity provider (e.g. with a private CA).
	// Default http.DefaultClient.
	HTTPClient *http.Client `yaml:"-" json:"-"`
	// Now is the clock (tests). Default time.Now.
	Now func() time.Time `yaml:"-" json:"-"`
}

// Identity is a user as the identity provider vouches for them.
type Identity struct {
	Issuer        string    `json:"issuer"`
	Subject       string    `json:"subject"` // stable key together with Issuer
	Email         string    `json:"email"`
	EmailVerified bool      `json:"email_verified"`
	Name          string    `json:"name,omitempty"`
	Groups        []string  `json:"groups"`
	IDTokenExpiry time.Time `json:"id_token_expiry"`
}

// Grant is the outcome of a successful sign-in or refresh.
type Grant struct {
	Identity Identity
	// RefreshToken is what the controller keeps (secret) to re-check the
	// user; empty when the identity provider issued none, in which case the
	// session must end at AccessExpiry.
	RefreshToken string
	// AccessExpiry is when the access token expires: refresh before then.
	AccessExpiry time.Time
}

// Provider is a configured, discovered identity provider. It is safe for
// concurrent use.
type Provider struct {
	cfg        Config
	provider   *oidc.Provider
	verifier   *oidc.IDTokenVerifier
	oauth      oauth2.Config
	deviceURL  string
	flows      *sealer
	redirects  []*url.URL
	httpClient *http.Client
	now        func() time.Time
}

// New validates cfg and fetches the provider's discovery document and keys.
func New(ctx context.Context, cfg Config) (*Provider, error) {
	if cfg.Issuer == "" {
		return nil, fmt.Errorf("%w: issuer is required", ErrConfig)
	}
	if u, err := url.Parse(cfg.Issuer); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("%w: issuer %q is not an http(s) URL", ErrConfig, cfg.Issuer)
	}
	if cfg.ClientID == "" {
		return nil, fmt.Errorf("%w: client id is required", ErrConfig)
	}
	if cfg.ClientSecret == "" {
		return nil, fmt.Errorf("%w: client secret is required (the controller is a confidential client)", ErrConfig)
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = "groups"
	}
	if cfg.EmailClaim == "" {
		cfg.EmailClaim = "email"
	}
	if len(cfg.RedirectURLs) == 0 {
		cfg.RedirectURLs = []string{"http://127.0.0.1/callback", "http://[::1]/callback"}
	}
	if cfg.FlowTTL <= 0 {
		cfg.FlowTTL = 10 * time.Minute
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var redirects []*url.URL
	for _, r := range cfg.RedirectURLs {
		u, err := url.Parse(r)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("%w: redirect URL %q is not an absolute http(s) URL", ErrConfig, r)
		}
		if u.Scheme == "http" && !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("%w: redirect URL %q: plain http is only allowed on a loopback IP", ErrConfig, r)
		}
		redirects = append(redirects, u)
	}
	key := cfg.FlowKey
	if len(key) == 0 {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("make flow key: %w", err)
		}
	} else if len(key) < 32 {
		return nil, fmt.Errorf("%w: flow key must be at least 32 bytes, got %d", ErrConfig, len(key))
	}
	sl, err := newSealer(key)
	if err != nil {
		return nil, err
	}

	dctx := oidc.ClientContext(ctx, cfg.HTTPClient)
	op, err := oidc.NewProvider(dctx, cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("%w: discover %s: %v", ErrIdP, cfg.Issuer, err)
	}
	var extra struct {
		DeviceAuthURL string `json:"device_authorization_endpoint"`
	}
	if err := op.Claims(&extra); err != nil {
		return nil, fmt.Errorf("%w: read discovery document of %s: %v", ErrIdP, cfg.Issuer, err)
	}
	scopes := []string{oidc.ScopeOpenID, "email", "profile", oidc.ScopeOfflineAccess}
	for _, s := range cfg.Scopes {
		if !slices.Contains(scopes, s) {
			scopes = append(scopes, s)
		}
	}
	p := &Provider{
		cfg:      cfg,
		provider: op,
		// The verifier checks signature (provider's algorithms, never
		// "none"), issuer, audience = client id and expiry; the nonce is
		// checked by the callers below.
		verifier: op.VerifierContext(oidc.ClientContext(context.Background(), cfg.HTTPClient), &oidc.Config{ClientID: cfg.ClientID, Now: cfg.Now}),
		oauth: oauth2.Config{
			ClientID:     cfg.ClientID,
			ClientSecret: cfg.ClientSecret,
			Endpoint:     op.Endpoint(),
			Scopes:       scopes,
		},
		deviceURL:  extra.DeviceAuthURL,
		flows:      sl,
		redirects:  redirects,
		httpClient: cfg.HTTPClient,
		now:        cfg.Now,
	}
	return p, nil
}

// PublicConfig is what PathOIDCConfig returns.
func (p *Provider) PublicConfig() controlapi.OIDCConfig {
	return controlapi.OIDCConfig{
		Enabled:      true,
		Issuer:       p.cfg.Issuer,
		DeviceFlow:   p.deviceURL != "",
		RedirectURIs: slices.Clone(p.cfg.RedirectURLs),
	}
}

// Issuer returns the configured issuer.
func (p *Provider) Issuer() string { return p.cfg.Issuer }

func (p *Provider) ctx(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, p.httpClient)
}

// redirectAllowed matches RFC 8252: loopback redirect URIs match any port.
func (p *Provider) redirectAllowed(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%w: redirect URI %q is not an absolute URL", ErrBadRequest, raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%w: redirect URI %q must not carry a query, fragment or user info", ErrBadRequest, raw)
	}
	for _, a := range p.redirects {
		if a.Scheme != u.Scheme || a.Path != u.Path || !strings.EqualFold(a.Hostname(), u.Hostname()) {
			continue
		}
		if isLoopback(a.Hostname()) && a.Scheme == "http" {
			return nil // any port
		}
		if a.Port() == u.Port() {
			return nil
		}
	}
	return fmt.Errorf("%w: redirect URI %q is not one the controller accepts (%s)", ErrBadRequest, raw, strings.Join(p.cfg.RedirectURLs, ", "))
}

func isLoopback(host string) bool {
	return host == "127.0.0.1" || host == "::1"
}

// verify checks an ID token and, when nonce is not empty, its nonce, and
// returns the identity with groups mapped from the configured claim. When the
// ID token lacks the email or groups claim and accessToken is set, the
// userinfo endpoint fills them in (for the same subject only).
func (p *Provider) verify(ctx context.Context, rawIDToken, nonce string, tok *oauth2.Token) (*Identity, error) {
	idt, err := p.verifier.Verify(p.ctx(ctx), rawIDToken)
	if err != nil {
		return nil, fmt.Errorf("%w: ID token: %v", ErrRefused, err)
	}
	if nonce != "" && !constantEqual(idt.Nonce, nonce) {
		return nil, fmt.Errorf("%w: ID token nonce does not match the sign-in", ErrRefused)
	}
	if idt.Subject == "" {
		return nil, fmt.Errorf("%w: ID token has no subject", ErrRefused)
	}
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return nil, fmt.Errorf("%w: ID token claims: %v", ErrRefused, err)
	}
	_, hasGroups := claims[p.cfg.GroupsClaim]
	_, hasEmail := claims[p.cfg.EmailClaim]
	if (!hasGroups || !hasEmail) && tok != nil && tok.AccessToken != "" && p.provider.UserInfoEndpoint() != "" {
		ui, err := p.provider.UserInfo(p.ctx(ctx), oauth2.StaticTokenSource(tok))
		if err != nil {
			return nil, fmt.Errorf("%w: userinfo: %v", ErrIdP, err)
		}
		if ui.Subject != idt.Subject {
			return nil, fmt.Errorf("%w: userinfo subject %q differs from the ID token's %q", ErrRefused, ui.Subject, idt.Subject)
		}
		var more map[string]any
		if err := ui.Claims(&more); err == nil {
			for k, v := range more {
				if _, ok := claims[k]; !ok {
					claims[k] = v
				}
			}
		}
	}
	return p.identity(idt.Issuer, idt.Subject, idt.Expiry, claims)
}

func (p *Provider) identity(issuer, subject string, expiry time.Time, claims map[string]any) (*Identity, error) {
	id := &Identity{
		Issuer:        issuer,
		Subject:       subject,
		IDTokenExpiry: expiry,
		Groups:        []string{},
	}
	if s, ok := claims[p.cfg.EmailClaim].(string); ok {
		id.Email = strings.TrimSpace(s)
	}
	if id.Email == "" {
		return nil, fmt.Errorf("%w: the identity provider sent no %q claim for subject %q (request the email scope)", ErrRefused, p.cfg.EmailClaim, subject)
	}
	verified, present, err := emailVerified(claims["email_verified"])
	if err != nil {
		return nil, fmt.Errorf("%w: subject %q: %v", ErrRefused, subject, err)
	}
	id.EmailVerified = verified
	if present && !verified && !p.cfg.AllowUnverifiedEmail {
		return nil, fmt.Errorf("%w: the identity provider says the email %q of subject %q is not verified", ErrRefused, id.Email, subject)
	}
	if s, ok := claims["name"].(string); ok {
		id.Name = s
	}
	groups, err := groupsOf(claims[p.cfg.GroupsClaim])
	if err != nil {
		return nil, fmt.Errorf("%w: claim %q: %v", ErrRefused, p.cfg.GroupsClaim, err)
	}
	id.Groups = groups
	return id, nil
}

// emailVerified reads the email_verified claim: a JSON boolean, or the
// strings "true" and "false" (some providers, e.g. Amazon Cognito, send
// strings). A missing claim is not verified but present is false (Microsoft
// Entra ID sends no email_verified by default). Anything else is an error.
func emailVerified(v any) (verified, present bool, err error) {
	switch b := v.(type) {
	case nil:
		return false, false, nil
	case bool:
		return b, true, nil
	case string:
		switch strings.ToLower(strings.TrimSpace(b)) {
		case "true":
			return true, true, nil
		case "false":
			return false, true, nil
		}
		return false, true, fmt.Errorf("claim email_verified is the string %q, not true or false", b)
	default:
		return false, true, fmt.Errorf("claim email_verified is a %T, not a boolean", v)
	}
}

// groupsOf accepts a missing claim (no groups), a string (one group, or
// several separated by commas or spaces) or a list of strings.
func groupsOf(v any) ([]string, error) {
	out := []string{}
	add := func(s string) {
		s = strings.TrimSpace(s)
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	switch g := v.(type) {
	case nil:
	case string:
		for _, s := range strings.FieldsFunc(g, func(r rune) bool { return r == ',' || r == ' ' }) {
			add(s)
		}
	case []any:
		for _, e := range g {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("list holds a %T, not a string", e)
			}
			add(s)
		}
	default:
		return nil, fmt.Errorf("is a %T, not a string or a list of strings", v)
	}
	slices.Sort(out)
	return out, nil
}

// grant verifies a token response into a Grant.
func (p *Provider) grant(ctx context.Context, tok *oauth2.Token, nonce string) (*Grant, error) {
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, fmt.Errorf("%w: the identity provider returned no ID token (is the openid scope allowed?)", ErrRefused)
	}
	id, err := p.verify(ctx, raw, nonce, tok)
	if err != nil {
		return nil, err
	}
	return &Grant{Identity: *id, RefreshToken: tok.RefreshToken, AccessExpiry: tok.Expiry}, nil
}

// VerifyIDToken checks an ID token a client obtained by itself
// (controlapi.LoginRequest.IDToken): signature, issuer, audience = the
// controller's client id, expiry. Such a session cannot be refreshed, so it
// must end when the ID token expires (Identity.IDTokenExpiry).
func (p *Provider) VerifyIDToken(ctx context.Context, rawIDToken string) (*Identity, error) {
	if strings.TrimSpace(rawIDToken) == "" {
		return nil, fmt.Errorf("%w: empty ID token", ErrBadRequest)
	}
	return p.verify(ctx, rawIDToken, "", nil)
}

// oauthError maps a token endpoint error.
func oauthError(what string, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		switch re.ErrorCode {
		case "access_denied", "invalid_grant", "unauthorized_client", "invalid_scope":
			return fmt.Errorf("%w: %s: %s %s", ErrRefused, what, re.ErrorCode, re.ErrorDescription)
		case "expired_token":
			return fmt.Errorf("%w: %s: %s", ErrExpired, what, re.ErrorDescription)
		case "invalid_client":
			return fmt.Errorf("%w: %s: the identity provider rejected the controller's client credentials: %s", ErrIdP, what, re.ErrorDescription)
		}
		if re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 && re.ErrorCode != "" {
			return fmt.Errorf("%w: %s: %s %s", ErrRefused, what, re.ErrorCode, re.ErrorDescription)
		}
	}
	return fmt.Errorf("%w: %s: %v", ErrIdP, what, err)
}
