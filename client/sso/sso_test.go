package sso_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/client/sso"
	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/oidcauth"
	"postern.dev/postern/controller/oidcauth/oidctest"
	"postern.dev/postern/localapi"
)

// testController serves the controller's OIDC endpoints with oidcauth, as
// the real controller does (minus the store): enough to drive the client's
// half end to end against a real identity provider.
func testController(t *testing.T, p *oidcauth.Provider) *sso.Controller {
	t.Helper()
	fail := func(w http.ResponseWriter, err error) {
		status := http.StatusBadGateway
		switch {
		case errors.Is(err, oidcauth.ErrBadRequest):
			status = http.StatusBadRequest
		case errors.Is(err, oidcauth.ErrRefused), errors.Is(err, oidcauth.ErrRevoked):
			status = http.StatusForbidden
		case errors.Is(err, oidcauth.ErrExpired):
			status = http.StatusGone
		}
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(controlapi.Error{Error: err.Error()})
	}
	login := func(g *oidcauth.Grant, dev controlapi.OIDCDevice) *controlapi.LoginResponse {
		return &controlapi.LoginResponse{SessionToken: "session-for-" + g.Identity.Subject, DeviceID: "dev-" + dev.DevicePublicKey,
			Principal: controlapi.Principal{ID: g.Identity.Subject, Kind: "user", Name: g.Identity.Email, Groups: g.Identity.Groups}}
	}
	mux := http.NewServeMux()
	serve := func(pattern string, fn func(r *http.Request) (any, error)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			out, err := fn(r)
			if err != nil {
				fail(w, err)
				return
			}
			_ = json.NewEncoder(w).Encode(out)
		})
	}
	serve("GET "+controlapi.PathOIDCConfig, func(*http.Request) (any, error) { return p.PublicConfig(), nil })
	serve("POST "+controlapi.PathOIDCStart, func(r *http.Request) (any, error) {
		var req controlapi.OIDCStartRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		return p.Start(req)
	})
	serve("POST "+controlapi.PathOIDCExchange, func(r *http.Request) (any, error) {
		var req controlapi.OIDCExchangeRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		g, err := p.Exchange(r.Context(), req.OIDCCodeGrant)
		if err != nil {
			return nil, err
		}
		return login(g, req.OIDCDevice), nil
	})
	serve("POST "+controlapi.PathOIDCDeviceStart, func(r *http.Request) (any, error) { return p.DeviceStart(r.Context()) })
	serve("POST "+controlapi.PathOIDCDevicePoll, func(r *http.Request) (any, error) {
		var req controlapi.OIDCDevicePollRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		g, err := p.DevicePoll(r.Context(), req.Flow)
		switch {
		case errors.Is(err, oidcauth.ErrPending):
			return controlapi.OIDCDevicePollResponse{Status: controlapi.OIDCPending, IntervalSeconds: 1}, nil
		case errors.Is(err, oidcauth.ErrSlowDown):
			return controlapi.OIDCDevicePollResponse{Status: controlapi.OIDCSlowDown, IntervalSeconds: 2}, nil
		case err != nil:
			return nil, err
		}
		return controlapi.OIDCDevicePollResponse{Status: controlapi.OIDCOK, Login: login(g, req.OIDCDevice)}, nil
	})
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	return &sso.Controller{URL: srv.URL, HTTP: srv.Client()}
}

func setup(t *testing.T) (*oidctest.Provider, *sso.Controller) {
	idp := oidctest.Start(t, oidctest.Options{
		Clients: []oidctest.Client{{ID: "postern", Secret: "postern-secret"}},
		Accounts: map[string]oidctest.Account{
			"alice": {Password: "alice-pw", Email: "alice@example.com", Groups: []string{"engineering"}},
		},
	})
	p, err := oidcauth.New(context.Background(), oidcauth.Config{Issuer: idp.Issuer, ClientID: "postern", ClientSecret: "postern-secret", Scopes: []string{"groups"}})
	if err != nil {
		t.Fatal(err)
	}
	return idp, testController(t, p)
}

var device = controlapi.OIDCDevice{DevicePublicKey: "AAAA", DeviceName: "laptop", OS: "linux"}

func TestBrowserSignIn(t *testing.T) {
	_, ctrl := setup(t)
	ctx := context.Background()
	cfg, err := ctrl.Config(ctx)
	if err != nil || !cfg.Enabled || !cfg.DeviceFlow {
		t.Fatalf("Config = %+v, %v", cfg, err)
	}

	var shown string
	var landed *oidctest.Page
	grant, err := sso.Browser(ctx, ctrl, sso.BrowserOptions{
		Redirect: cfg.RedirectURIs[0],
		Notify:   func(u string) { shown = u },
		Open: func(u string) error {
			// The user's browser: sign in on the provider's page.
			p, err := oidctest.NewBrowser().SignIn(u, "alice", "alice-pw")
			landed = p
			return err
		},
	})
	if err != nil {
		t.Fatalf("Browser: %v", err)
	}
	if !strings.Contains(shown, "code_challenge=") || !strings.Contains(shown, "nonce=") {
		t.Fatalf("notified URL %q lacks a PKCE challenge", shown)
	}
	if landed == nil || landed.Status != http.StatusOK || !strings.Contains(landed.Body, "Signed in to Postern") {
		t.Fatalf("the browser ended on %+v", landed)
	}
	if !strings.HasPrefix(grant.RedirectURI, "http://127.0.0.1:") || grant.RedirectURI == "http://127.0.0.1:0/callback" {
		t.Fatalf("redirect URI %q is not an ephemeral loopback port", grant.RedirectURI)
	}
	// The loopback listener is gone once the sign-in is over.
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(strings.TrimSuffix(grant.RedirectURI, "/callback"), "http://"), time.Second); err == nil {
		c.Close()
		t.Fatal("the loopback listener is still open after the sign-in")
	}
	login, err := ctrl.Exchange(ctx, *grant, device)
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	if login.Principal.Name != "alice@example.com" || !slices.Equal(login.Principal.Groups, []string{"engineering"}) {
		t.Fatalf("principal = %+v", login.Principal)
	}
	// The grant is single-use.
	if _, err := ctrl.Exchange(ctx, *grant, device); !errors.Is(err, sso.ErrRefused) {
		t.Fatalf("second Exchange = %v, want ErrRefused", err)
	}
}

func TestBrowserSignInRefused(t *testing.T) {
	_, ctrl := setup(t)
	var landed *oidctest.Page
	_, err := sso.Browser(context.Background(), ctrl, sso.BrowserOptions{
		Open: func(u string) error {
			p, err := oidctest.NewBrowser().Refuse(u)
			landed = p
			return err
		},
	})
	if !errors.Is(err, sso.ErrRefused) || !strings.Contains(err.Error(), "access_denied") {
		t.Fatalf("Browser after the user refused = %v, want ErrRefused access_denied", err)
	}
	if landed == nil || landed.Status != http.StatusForbidden || !strings.Contains(landed.Body, "Sign-in refused") {
		t.Fatalf("the browser ended on %+v", landed)
	}
}

func TestBrowserSignInTimesOut(t *testing.T) {
	_, ctrl := setup(t)
	_, err := sso.Browser(context.Background(), ctrl, sso.BrowserOptions{
		Timeout: 300 * time.Millisecond,
		Open: func(u string) error {
			_, err := oidctest.NewBrowser().SignIn(u, "alice", "wrong")
			if !errors.Is(err, oidctest.ErrLoginRejected) {
				t.Errorf("SignIn with a wrong password = %v", err)
			}
			return nil
		},
	})
	if !errors.Is(err, sso.ErrExpired) {
		t.Fatalf("Browser without an answer = %v, want ErrExpired", err)
	}
}

func TestBrowserRejectsForeignRedirect(t *testing.T) {
	_, ctrl := setup(t)
	_, err := sso.Browser(context.Background(), ctrl, sso.BrowserOptions{Redirect: "https://example.com/cb", Open: func(string) error { return nil }})
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("Browser with a non-loopback redirect = %v", err)
	}
}

func TestDeviceSignIn(t *testing.T) {
	_, ctrl := setup(t)
	ctx := context.Background()

	ds, err := ctrl.StartDevice(ctx)
	if err != nil {
		t.Fatalf("StartDevice: %v", err)
	}
	// Nobody approved yet: still pending when the caller gives up.
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = ctrl.WaitDevice(short, ds.Flow, device, 100*time.Millisecond)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitDevice before approval = %v", err)
	}
	if _, err := oidctest.NewBrowser().ApproveDevice(ds.VerificationURI, ds.UserCode, "alice", "alice-pw"); err != nil {
		t.Fatalf("approve: %v", err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	login, err := ctrl.WaitDevice(wctx, ds.Flow, device, time.Second)
	if err != nil {
		t.Fatalf("WaitDevice: %v", err)
	}
	if login.Principal.Name != "alice@example.com" || !slices.Equal(login.Principal.Groups, []string{"engineering"}) {
		t.Fatalf("principal = %+v", login.Principal)
	}

	ds2, err := ctrl.StartDevice(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oidctest.NewBrowser().DenyDevice(ds2.VerificationURI, ds2.UserCode); err != nil {
		t.Fatal(err)
	}
	if _, err := ctrl.WaitDevice(wctx, ds2.Flow, device, time.Second); !errors.Is(err, sso.ErrRefused) {
		t.Fatalf("WaitDevice after refusal = %v, want ErrRefused", err)
	}
}

func TestNewVerifier(t *testing.T) {
	v, c, err := sso.NewVerifier()
	if err != nil || len(v) != 43 || c != oidcauth.S256(v) {
		t.Fatalf("NewVerifier = %q, %q, %v", v, c, err)
	}
}

func TestDaemonLoginHelper(t *testing.T) {
	_, ctrl := setup(t)
	ctx := context.Background()
	grant, err := sso.Browser(ctx, ctrl, sso.BrowserOptions{Open: func(u string) error {
		_, err := oidctest.NewBrowser().SignIn(u, "alice", "alice-pw")
		return err
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sso.Login(ctx, ctrl, localapi.LoginRequest{OIDC: grant, OIDCDeviceFlow: "device.x"}, device); err == nil {
		t.Fatal("a request with both grants was accepted")
	}
	if _, err := sso.Login(ctx, ctrl, localapi.LoginRequest{}, device); err == nil {
		t.Fatal("a request without a grant was accepted")
	}
	login, err := sso.Login(ctx, ctrl, localapi.LoginRequest{OIDC: grant}, device)
	if err != nil || login.Principal.Name != "alice@example.com" {
		t.Fatalf("Login(browser grant) = %+v, %v", login, err)
	}
	ds, err := ctrl.StartDevice(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ds.VerificationURIComplete == "" {
		t.Fatal("no verification_uri_complete")
	}
	if _, err := oidctest.NewBrowser().ApproveDevice(ds.VerificationURIComplete, "", "alice", "alice-pw"); err != nil {
		t.Fatalf("approve through verification_uri_complete: %v", err)
	}
	login, err = sso.Login(ctx, ctrl, localapi.LoginRequest{OIDCDeviceFlow: ds.Flow}, device)
	if err != nil || login.Principal.Name != "alice@example.com" {
		t.Fatalf("Login(device flow) = %+v, %v", login, err)
	}
}
