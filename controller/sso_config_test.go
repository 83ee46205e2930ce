package controller

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/client/sso"
	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/oidcauth/oidctest"
	"postern.dev/postern/internal/testenv"
)

func TestLoadOIDCConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Wrapped under "oidc:", relative files resolved next to the file.
	p := write("wrapped.yaml", `oidc:
  issuer: https://idp.example.com
  client_id: postern
  client_secret_file: secret
  groups_claim: roles
  scopes: [groups]
  refresh_interval: 90s
`, 0o644)
	oc, err := LoadOIDCConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if oc.Issuer != "https://idp.example.com" || oc.ClientSecretFile != filepath.Join(dir, "secret") || oc.GroupsClaim != "roles" ||
		oc.RefreshInterval != 90*time.Second || len(oc.Scopes) != 1 {
		t.Fatalf("wrapped config = %+v", oc)
	}
	// Flat.
	p = write("flat.yaml", "issuer: https://idp.example.com\nclient_id: postern\nclient_secret: s3cret\n", 0o600)
	if oc, err = LoadOIDCConfig(p); err != nil || oc.ClientSecret != "s3cret" {
		t.Fatalf("flat config = %+v, %v", oc, err)
	}
	for name, c := range map[string]struct {
		body string
		mode os.FileMode
		want string
	}{
		"typo":           {"oidc:\n  issuer: https://x\n  client_idd: y\n", 0o600, "client_idd"},
		"flat typo":      {"isuer: https://x\n", 0o600, "isuer"},
		"empty":          {"", 0o600, "no settings"},
		"readable":       {"issuer: https://x\nclient_id: y\nclient_secret: z\n", 0o644, "readable by other users"},
		"bad duration":   {"issuer: https://x\nrefresh_interval: soon\n", 0o600, "soon"},
		"not a document": {"issuer: [\n", 0o600, "line 1"},
	} {
		p := write(strings.ReplaceAll(name, " ", "-")+".yaml", c.body, c.mode)
		if err := os.Chmod(p, c.mode); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOIDCConfig(p); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", name, err, c.want)
		}
	}
	if _, err := LoadOIDCConfig(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("missing file accepted")
	}
}

func TestOIDCConfigValidation(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("s3cret\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	for _, c := range []struct {
		oc   OIDCConfig
		want string
	}{
		{OIDCConfig{ClientID: "p", ClientSecretFile: secret}, "issuer is required"},
		{OIDCConfig{Issuer: "idp.example.com", ClientID: "p", ClientSecretFile: secret}, "not an absolute https URL"},
		{OIDCConfig{Issuer: "http://idp.example.com", ClientID: "p", ClientSecretFile: secret}, "plain http"},
		{OIDCConfig{Issuer: "https://idp.example.com", ClientSecretFile: secret}, "client id is required"},
		{OIDCConfig{Issuer: "https://idp.example.com", ClientID: "p"}, "client secret is required"},
		{OIDCConfig{Issuer: "https://idp.example.com", ClientID: "p", ClientSecretFile: empty}, "is empty"},
		{OIDCConfig{Issuer: "https://idp.example.com", ClientID: "p", ClientSecretFile: filepath.Join(dir, "nope")}, "secret file"},
		{OIDCConfig{Issuer: "https://idp.example.com", ClientID: "p", ClientSecretFile: secret, ClientSecret: "x"}, "not both"},
		{OIDCConfig{Issuer: "https://idp.example.com", ClientID: "p", ClientSecretFile: secret, RefreshInterval: time.Millisecond}, "too short"},
		{OIDCConfig{Issuer: "https://idp.example.com", ClientID: "p", ClientSecretFile: secret, CAFile: secret}, "no PEM certificate"},
		// Caught by oidcauth before any network access.
		{OIDCConfig{Issuer: "https://idp.example.com", ClientID: "p", ClientSecretFile: secret, RedirectURLs: []string{"http://example.com/cb"}}, "loopback"},
	} {
		data := filepath.Join(t.TempDir(), "data")
		oc := c.oc
		_, err := Open(Config{DataDir: data, PublicURL: "https://127.0.0.1:1", OIDC: &oc})
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: Open = %v, want ErrConfig mentioning %q", c.oc, err, c.want)
		}
		// Nothing was stored: no database, no flow key.
		for _, f := range []string{"postern.db", "oidc-flow-key"} {
			if _, err := os.Stat(filepath.Join(data, f)); err == nil {
				t.Errorf("%+v: %s made despite the bad configuration", c.oc, f)
			}
		}
	}
}

// ssoIdP starts an identity provider that knows the "postern" client and
// ssoAccounts, and writes the client's secret to dir/secret; it returns the
// provider and that file.
func ssoIdP(t *testing.T, dir string) (*oidctest.Provider, string) {
	t.Helper()
	idp := oidctest.Start(t, oidctest.Options{
		Clients:  []oidctest.Client{{ID: "postern", Secret: "postern-secret"}},
		Accounts: ssoAccounts,
	})
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("postern-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	return idp, secret
}

// TestSSOFlowSurvivesRestart: a sign-in started before a restart finishes
// after it, because the flow key is kept in DATA (0600).
func TestSSOFlowSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	idp, secret := ssoIdP(t, dir)
	data := filepath.Join(dir, "data")
	oc := func() *OIDCConfig {
		return &OIDCConfig{Issuer: idp.Issuer, ClientID: "postern", ClientSecretFile: secret, Scopes: []string{"groups"}}
	}
	e1 := newTestController(t, data, func(c *Config) { c.OIDC = oc() })
	keyFile := filepath.Join(data, "oidc-flow-key")
	fi, err := os.Stat(keyFile)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("flow key file: %v, %v", fi, err)
	}
	key1, _ := os.ReadFile(keyFile)
	ctrl1 := &sso.Controller{URL: e1.url, HTTP: e1.client(nil)}
	grant, err := sso.Browser(context.Background(), ctrl1, sso.BrowserOptions{Open: func(u string) error {
		_, err := oidctest.NewBrowser().SignIn(u, "erin", "erin-pw")
		return err
	}})
	if err != nil {
		t.Fatal(err)
	}
	e1.stop()

	e2 := newTestController(t, data, func(c *Config) { c.OIDC = oc() })
	if key2, _ := os.ReadFile(keyFile); string(key2) != string(key1) {
		t.Fatal("the flow key changed at restart")
	}
	ctrl2 := &sso.Controller{URL: e2.url, HTTP: e2.client(nil)}
	lr, err := ctrl2.Exchange(context.Background(), *grant, newDevice(t))
	if err != nil {
		t.Fatalf("exchange after restart: %v", err)
	}
	if lr.Principal.Name != "erin@example.com" {
		t.Fatalf("principal = %+v", lr.Principal)
	}
}

// TestSSOIdPUnreachableAtStart: the controller starts without its identity
// provider (password sign-in and connectors do not depend on it), answers
// 503 for sign-ins, and picks the provider up once it is reachable.
func TestSSOIdPUnreachableAtStart(t *testing.T) {
	// Not parallel: it shortens ssoRetryWait while no other test runs.
	old := ssoRetryWait
	t.Cleanup(func() { ssoRetryWait = old })
	dir := t.TempDir()
	idp, secret := ssoIdP(t, dir)
	sw := &switchTransport{next: http.DefaultTransport}
	sw.down.Store(true)
	ssoRetryWait = 200 * time.Millisecond
	e := newTestController(t, filepath.Join(dir, "data"), func(c *Config) {
		c.OIDC = &OIDCConfig{Issuer: idp.Issuer, ClientID: "postern", ClientSecretFile: secret, Scopes: []string{"groups"},
			HTTPClient: &http.Client{Transport: sw}}
	})
	e.apply(testYAML)
	e.login("bob@example.com", "battery staple") // password sign-in unaffected
	if st, body := e.call(nil, "GET", controlapi.PathOIDCConfig, "", nil); st != 200 || !strings.Contains(string(body), `"enabled": true`) {
		t.Fatalf("config while the IdP is down: %d %s", st, body)
	}
	if st, body := e.call(nil, "POST", controlapi.PathOIDCDeviceStart, "", "{}"); st != http.StatusServiceUnavailable || !strings.Contains(string(body), "not been reached") {
		t.Fatalf("device start while the IdP is down: %d %s", st, body)
	}
	sw.down.Store(false)
	testenv.Eventually(t, 10*time.Second, "the IdP discovered", func() bool {
		st, _ := e.call(nil, "POST", controlapi.PathOIDCDeviceStart, "", "{}")
		return st == 200
	})
}

func TestSSOSignInRateLimit(t *testing.T) {
	t.Parallel()
	// A fake issuer is enough: the limit applies before the IdP is asked,
	// and an unreachable one answers 503.
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte("s"), 0o600)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	ln.Close() // nothing listens there
	e := newTestController(t, filepath.Join(dir, "data"), func(c *Config) {
		c.OIDC = &OIDCConfig{Issuer: "http://" + ln.Addr().String(), ClientID: "p", ClientSecretFile: secret}
	})
	limited := false
	cl := e.client(nil)
	for i := 0; i < 300 && !limited; i++ {
		st, _ := e.call(cl, "POST", controlapi.PathOIDCStart, "", "{}")
		limited = st == http.StatusTooManyRequests
	}
	if !limited {
		t.Fatal("300 quick sign-in starts from one IP were never rate limited")
	}
	// The rest of the API keeps its own budget.
	if st, _ := e.call(nil, "GET", controlapi.PathHealth, "", nil); st != 200 {
		t.Fatalf("health after the sign-in limit: %d", st)
	}
}

// TestSSONoGoroutineLeak: the discovery retries and the refresher end with
// the controller.
func TestSSONoGoroutineLeak(t *testing.T) {
	dir := t.TempDir()
	idp, secret := ssoIdP(t, dir)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	browser := oidctest.NewBrowser()
	before := runtime.NumGoroutine()
	func() {
		e := newTestController(t, filepath.Join(dir, "data"), func(c *Config) {
			c.OIDC = &OIDCConfig{Issuer: idp.Issuer, ClientID: "postern", ClientSecretFile: secret, Scopes: []string{"groups"},
				RefreshInterval: time.Second, HTTPClient: &http.Client{Transport: tr}}
		})
		ctrl := &sso.Controller{URL: e.url, HTTP: e.client(nil)}
		grant, err := sso.Browser(context.Background(), ctrl, sso.BrowserOptions{Open: func(u string) error {
			_, err := browser.SignIn(u, "erin", "erin-pw")
			return err
		}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ctrl.Exchange(context.Background(), *grant, newDevice(t)); err != nil {
			t.Fatal(err)
		}
		first := e.c.ExternalSessions(sessionMethodOIDC)[0].External
		testenv.Eventually(t, 10*time.Second, "a refresh", func() bool {
			return string(e.c.ExternalSessions(sessionMethodOIDC)[0].External) != string(first)
		})
		e.stop()
	}()
	tr.CloseIdleConnections()
	testenv.WaitGoroutines(t, before+2, 5*time.Second)
}
