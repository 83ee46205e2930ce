package controller

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"postern.dev/postern/client/sso"
	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/oidcauth"
	"postern.dev/postern/controller/oidcauth/oidctest"
	"postern.dev/postern/internal/testenv"
)

// ssoYAML grants the IdP's "engineering" group the corp resources and
// "ops" the lab range; the IdP users need no entry.
const ssoYAML = `remote_networks:
  - name: corp
    connectors: [corp-a]
  - name: lab
    connectors: [lab-a]
groups:
  - name: engineering
    users: []
  - name: ops
    users: []
resources:
  - name: db
    address: db.corp.internal
    network: corp
    ports: [tcp/5432]
    groups: [engineering]
  - name: labnet
    address: 198.51.100.0/24
    network: lab
    groups: [ops]
`

var ssoAccounts = map[string]oidctest.Account{
	"dana": {Password: "dana-pw", Email: "Dana@Example.com", Groups: []string{"engineering", "not-in-postern"}, Roles: []string{"ops"}},
	"erin": {Password: "erin-pw", Email: "erin@example.com", Groups: []string{"ops"}},
}

// switchTransport lets a test make the identity provider unreachable.
type switchTransport struct {
	down atomic.Bool
	next http.RoundTripper
}

func (s *switchTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if s.down.Load() {
		return nil, errors.New("connection refused (identity provider down for the test)")
	}
	return s.next.RoundTrip(r)
}

type ssoEnv struct {
	*testEnv
	idp   *oidctest.Provider
	net   *switchTransport
	ctrl  *sso.Controller
	corpA *component
	labA  *component
}

func newSSOEnv(t *testing.T, mod func(*OIDCConfig)) *ssoEnv {
	t.Helper()
	idp := oidctest.Start(t, oidctest.Options{
		Clients:  []oidctest.Client{{ID: "postern", Secret: "postern-secret"}, {ID: "other-app", Secret: "other-secret"}},
		Accounts: ssoAccounts,
	})
	dir := t.TempDir()
	secret := filepath.Join(dir, "client-secret")
	if err := os.WriteFile(secret, []byte("postern-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sw := &switchTransport{next: http.DefaultTransport}
	oc := &OIDCConfig{Issuer: idp.Issuer, ClientID: "postern", ClientSecretFile: secret, Scopes: []string{"groups"},
		RefreshInterval: time.Second, HTTPClient: &http.Client{Transport: sw, Timeout: 10 * time.Second}}
	if mod != nil {
		mod(oc)
	}
	e := newTestController(t, filepath.Join(dir, "data"), func(c *Config) { c.OIDC = oc })
	e.apply(ssoYAML)
	env := &ssoEnv{testEnv: e, idp: idp, net: sw, ctrl: &sso.Controller{URL: e.url, HTTP: e.client(nil)}}
	env.corpA = e.enroll(KindConnector, "corp-a")
	e.heartbeat(env.corpA, randomDigest())
	env.labA = e.enroll(KindConnector, "lab-a")
	e.heartbeat(env.labA, randomDigest())
	return env
}

func newDevice(t *testing.T) controlapi.OIDCDevice {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return controlapi.OIDCDevice{DevicePublicKey: base64.StdEncoding.EncodeToString(pub), DeviceName: "laptop", OS: "linux"}
}

// browserLogin signs login in through the controller's endpoints with the
// client library, a loopback redirect and a scripted browser.
func (e *ssoEnv) browserLogin(t *testing.T, login, password string) (*controlapi.LoginResponse, controlapi.OIDCDevice, error) {
	t.Helper()
	return e.browserLoginDevice(t, login, password, newDevice(t))
}

func (e *ssoEnv) browserLoginDevice(t *testing.T, login, password string, dev controlapi.OIDCDevice) (*controlapi.LoginResponse, controlapi.OIDCDevice, error) {
	t.Helper()
	ctx := context.Background()
	grant, err := sso.Browser(ctx, e.ctrl, sso.BrowserOptions{Timeout: 20 * time.Second, Open: func(u string) error {
		_, err := oidctest.NewBrowser().SignIn(u, login, password)
		return err
	}})
	if err != nil {
		return nil, controlapi.OIDCDevice{}, err
	}
	lr, err := e.ctrl.Exchange(ctx, *grant, dev)
	return lr, dev, err
}

// mayUse reports whether the session may get a token for connector c.
func (e *ssoEnv) mayUse(t *testing.T, token string, c *component) error {
	t.Helper()
	_, err := e.c.IssueConnectionToken(token, c.id)
	return err
}

func TestSSOBrowserSignInAndGroups(t *testing.T) {
	t.Parallel()
	e := newSSOEnv(t, func(oc *OIDCConfig) { oc.RefreshInterval = time.Hour })
	ctx := context.Background()

	cfg, err := e.ctrl.Config(ctx)
	if err != nil || !cfg.Enabled || cfg.Issuer != e.idp.Issuer || !cfg.DeviceFlow {
		t.Fatalf("Config = %+v, %v", cfg, err)
	}
	lr, dev, err := e.browserLogin(t, "dana", "dana-pw")
	if err != nil {
		t.Fatalf("browser sign-in: %v", err)
	}
	// Created on first sign-in, named by email, groups from the claim that
	// exist in Postern.
	if lr.Principal.Name != "dana@example.com" || lr.Principal.Kind != PrincipalUser || !slices.Equal(lr.Principal.Groups, []string{"engineering"}) {
		t.Fatalf("principal = %+v", lr.Principal)
	}
	m := e.c.model()
	u := m.Users[lr.Principal.ID]
	if u == nil || u.Source != "oidc" || u.IdPIssuer != e.idp.Issuer || u.IdPSubject != "dana" || u.PasswordHash != "" {
		t.Fatalf("user record = %+v", u)
	}
	if d := m.Devices[lr.DeviceID]; d == nil || d.PublicKey != dev.DevicePublicKey || d.Name != "laptop" {
		t.Fatalf("device record = %+v", d)
	}
	// The session is stored with the refresh token, which the API never shows.
	ss := e.c.ExternalSessions(sessionMethodOIDC)
	if len(ss) != 1 || !strings.Contains(string(ss[0].External), `"refresh_token":"`) {
		t.Fatalf("external sessions = %+v", ss)
	}
	if body := e.admin("GET", "/api/v1/sessions", nil, 200); strings.Contains(string(body), "refresh_token") {
		t.Fatalf("the admin API shows the refresh token: %s", body)
	}
	// Policy follows the group: corp (engineering) yes, lab (ops) no.
	if err := e.mayUse(t, lr.SessionToken, e.corpA); err != nil {
		t.Fatalf("token for corp: %v", err)
	}
	if err := e.mayUse(t, lr.SessionToken, e.labA); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("token for lab = %v, want ErrNotAllowed", err)
	}
	var cp controlapi.ConnectorPolicy
	e.openStream(e.corpA.http, controlapi.PathConnectorPolicy, "").next(t, 5*time.Second, &cp)
	if len(cp.Resources) != 1 || !slices.Contains(cp.Resources[0].Principals, lr.Principal.ID) {
		t.Fatalf("corp connector policy does not let dana reach db: %+v", cp.Resources)
	}
	var pol controlapi.ClientPolicy
	e.openStream(e.client(nil), controlapi.PathClientPolicy, lr.SessionToken).next(t, 5*time.Second, &pol)
	if len(pol.Resources) != 1 || pol.Resources[0].Name != "db" {
		t.Fatalf("client policy resources = %+v", pol.Resources)
	}

	// Groups are re-read at every sign-in: the IdP moves dana to ops.
	e.idp.SetGroups(t, "dana", []string{"ops"})
	lr2, _, err := e.browserLogin(t, "dana", "dana-pw")
	if err != nil {
		t.Fatalf("second sign-in: %v", err)
	}
	if lr2.Principal.ID != lr.Principal.ID || !slices.Equal(lr2.Principal.Groups, []string{"ops"}) {
		t.Fatalf("second sign-in principal = %+v (first %+v)", lr2.Principal, lr.Principal)
	}
	if err := e.mayUse(t, lr2.SessionToken, e.labA); err != nil {
		t.Fatalf("token for lab after the group change: %v", err)
	}
	if err := e.mayUse(t, lr.SessionToken, e.corpA); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("the first session still reaches corp after the group change: %v", err)
	}
	if n := len(e.c.model().Users); n != 1 {
		t.Fatalf("%d users after two sign-ins of one subject", n)
	}
	// The OIDC user survives an apply that does not list it.
	if p := e.apply(ssoYAML); !p.Empty() {
		t.Fatalf("apply would change something: %s", p)
	}
}

func TestSSOGroupsFromConfiguredClaim(t *testing.T) {
	t.Parallel()
	e := newSSOEnv(t, func(oc *OIDCConfig) { oc.GroupsClaim = "roles"; oc.RefreshInterval = time.Hour })
	lr, _, err := e.browserLogin(t, "dana", "dana-pw")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(lr.Principal.Groups, []string{"ops"}) {
		t.Fatalf("groups from the roles claim = %v, want [ops]", lr.Principal.Groups)
	}
	if err := e.mayUse(t, lr.SessionToken, e.labA); err != nil {
		t.Fatalf("token for lab: %v", err)
	}
}

func TestSSODeviceFlow(t *testing.T) {
	t.Parallel()
	e := newSSOEnv(t, func(oc *OIDCConfig) { oc.RefreshInterval = time.Hour })
	ctx := context.Background()
	dev := newDevice(t)

	ds, err := e.ctrl.StartDevice(ctx)
	if err != nil {
		t.Fatalf("StartDevice: %v", err)
	}
	// Not approved yet: pending.
	st, body := e.call(nil, "POST", controlapi.PathOIDCDevicePoll, "", controlapi.OIDCDevicePollRequest{Flow: ds.Flow, OIDCDevice: dev})
	if st != 200 || !strings.Contains(string(body), `"status": "pending"`) {
		t.Fatalf("poll before approval: %d %s", st, body)
	}
	if _, err := oidctest.NewBrowser().ApproveDevice(ds.VerificationURI, ds.UserCode, "erin", "erin-pw"); err != nil {
		t.Fatalf("approve: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	lr, err := e.ctrl.WaitDevice(wctx, ds.Flow, dev, time.Second)
	if err != nil {
		t.Fatalf("WaitDevice: %v", err)
	}
	if lr.Principal.Name != "erin@example.com" || !slices.Equal(lr.Principal.Groups, []string{"ops"}) {
		t.Fatalf("principal = %+v", lr.Principal)
	}
	if err := e.mayUse(t, lr.SessionToken, e.labA); err != nil {
		t.Fatalf("token for lab: %v", err)
	}

	// A user who denies the device sign-in: 403.
	ds2, err := e.ctrl.StartDevice(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oidctest.NewBrowser().DenyDevice(ds2.VerificationURI, ds2.UserCode); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ctrl.WaitDevice(wctx, ds2.Flow, dev, time.Second); !errors.Is(err, sso.ErrRefused) {
		t.Fatalf("WaitDevice after refusal = %v, want ErrRefused", err)
	}
	// A browser flow handle is not a device flow.
	if st, body := e.call(nil, "POST", controlapi.PathOIDCDevicePoll, "", controlapi.OIDCDevicePollRequest{Flow: "code.AAAA", OIDCDevice: dev}); st != 400 {
		t.Fatalf("poll with a foreign flow: %d %s", st, body)
	}
}

func TestSSORefusedSignIns(t *testing.T) {
	t.Parallel()
	e := newSSOEnv(t, func(oc *OIDCConfig) { oc.RefreshInterval = time.Hour })
	ctx := context.Background()

	// The user cancels at the provider.
	_, err := sso.Browser(ctx, e.ctrl, sso.BrowserOptions{Open: func(u string) error {
		_, err := oidctest.NewBrowser().Refuse(u)
		return err
	}})
	if !errors.Is(err, sso.ErrRefused) {
		t.Fatalf("refused sign-in = %v, want ErrRefused", err)
	}
	// A wrong password never reaches the client: the sign-in times out.
	_, err = sso.Browser(ctx, e.ctrl, sso.BrowserOptions{Timeout: 500 * time.Millisecond, Open: func(u string) error {
		if _, err := oidctest.NewBrowser().SignIn(u, "dana", "wrong"); !errors.Is(err, oidctest.ErrLoginRejected) {
			t.Errorf("wrong password: %v", err)
		}
		return nil
	}})
	if !errors.Is(err, sso.ErrExpired) {
		t.Fatalf("sign-in with a wrong password = %v, want ErrExpired", err)
	}

	// A genuine code with a tampered verifier or state is refused, and the
	// code is not redeemed: the honest exchange still works afterwards.
	var grant *controlapi.OIDCCodeGrant
	grant, err = sso.Browser(ctx, e.ctrl, sso.BrowserOptions{Open: func(u string) error {
		_, err := oidctest.NewBrowser().SignIn(u, "dana", "dana-pw")
		return err
	}})
	if err != nil {
		t.Fatal(err)
	}
	dev := newDevice(t)
	bad := *grant
	bad.CodeVerifier = strings.Repeat("A", 43)
	if _, err := e.ctrl.Exchange(ctx, bad, dev); err == nil || !strings.Contains(err.Error(), "code_verifier") {
		t.Fatalf("tampered verifier = %v", err)
	}
	bad = *grant
	bad.State = "forged"
	if _, err := e.ctrl.Exchange(ctx, bad, dev); err == nil || !strings.Contains(err.Error(), "state") {
		t.Fatalf("tampered state = %v", err)
	}
	if _, err := e.ctrl.Exchange(ctx, *grant, controlapi.OIDCDevice{DevicePublicKey: "short"}); err == nil || !strings.Contains(err.Error(), "device_public_key") {
		t.Fatalf("bad device key = %v", err)
	}
	if _, err := e.ctrl.Exchange(ctx, *grant, dev); err != nil {
		t.Fatalf("honest exchange after refused ones: %v", err)
	}
	// Replayed code: refused by the provider.
	if _, err := e.ctrl.Exchange(ctx, *grant, dev); !errors.Is(err, sso.ErrRefused) {
		t.Fatalf("replayed code = %v, want ErrRefused", err)
	}
	// A redirect the controller does not accept.
	st, body := e.call(nil, "POST", controlapi.PathOIDCStart, "", controlapi.OIDCStartRequest{RedirectURI: "https://evil.example/callback",
		CodeChallenge: oidcauth.S256(strings.Repeat("v", 43)), CodeChallengeMethod: "S256"})
	if st != 400 || !strings.Contains(string(body), "redirect") {
		t.Fatalf("foreign redirect: %d %s", st, body)
	}
	// Unknown fields are refused like everywhere else.
	if st, body := e.call(nil, "POST", controlapi.PathOIDCStart, "", `{"redirect_uri":"x","extra":1}`); st != 400 {
		t.Fatalf("unknown field: %d %s", st, body)
	}
	// No users were made by the refused attempts (only dana's one success).
	if n := len(e.c.model().Users); n != 1 {
		t.Fatalf("%d users, want 1", n)
	}
}

// idToken signs login in at the provider as client id (not through the
// controller) and returns the raw ID token, as a client holding its own
// token would present it in LoginRequest.IDToken.
func idToken(t *testing.T, idp *oidctest.Provider, id, secret, login, password string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got url.Values
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.URL.Query()
		mu.Unlock()
		w.Write([]byte("ok"))
	})}
	go srv.Serve(ln)
	defer srv.Close()
	redirect := "http://" + ln.Addr().String() + "/callback"
	conf := oauth2.Config{ClientID: id, ClientSecret: secret, RedirectURL: redirect, Scopes: []string{"openid", "email", "groups"},
		Endpoint: oauth2.Endpoint{AuthURL: idp.Issuer + "/auth", TokenURL: idp.Issuer + "/token", AuthStyle: oauth2.AuthStyleInHeader}}
	verifier := oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL("state-123", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("nonce", "n-123"))
	if _, err := oidctest.NewBrowser().SignIn(authURL, login, password); err != nil {
		t.Fatalf("sign in as %s: %v", id, err)
	}
	mu.Lock()
	code := got.Get("code")
	mu.Unlock()
	if code == "" {
		t.Fatalf("no code for %s: %v", id, got)
	}
	return idp.RedeemIDToken(t, id, secret, redirect, code, verifier)
}

func TestSSOIDTokenLogin(t *testing.T) {
	t.Parallel()
	e := newSSOEnv(t, func(oc *OIDCConfig) { oc.RefreshInterval = time.Hour })
	dev := newDevice(t)
	login := func(raw string) (int, []byte) {
		return e.call(nil, "POST", controlapi.PathLogin, "", controlapi.LoginRequest{IDToken: raw, DevicePublicKey: dev.DevicePublicKey, DeviceName: "cli"})
	}
	// A genuine ID token from the same provider, but for another client.
	other := idToken(t, e.idp, "other-app", "other-secret", "dana", "dana-pw")
	if st, body := login(other); st != http.StatusUnauthorized || !strings.Contains(string(body), "aud") {
		t.Fatalf("ID token with the wrong audience: %d %s", st, body)
	}
	// A tampered one.
	mine := idToken(t, e.idp, "postern", "postern-secret", "dana", "dana-pw")
	if st, body := login(mine[:len(mine)-6] + "AAAAAA"); st != http.StatusUnauthorized {
		t.Fatalf("tampered ID token: %d %s", st, body)
	}
	if n := len(e.c.model().Users); n != 0 {
		t.Fatalf("refused ID tokens made %d users", n)
	}
	// Its own: a session that ends with the ID token (it cannot be refreshed).
	st, body := login(mine)
	if st != 200 {
		t.Fatalf("ID token for this controller: %d %s", st, body)
	}
	var lr controlapi.LoginResponse
	mustJSON(t, body, &lr)
	if lr.Principal.Name != "dana@example.com" || !slices.Equal(lr.Principal.Groups, []string{"engineering"}) {
		t.Fatalf("principal = %+v", lr.Principal)
	}
	if time.Until(lr.ExpiresAt) > 6*time.Minute {
		t.Fatalf("ID token session lasts until %s, beyond the ID token", lr.ExpiresAt)
	}
}

func TestSSOAccessEndsWhenIdPStopsVouching(t *testing.T) {
	t.Parallel()
	e := newSSOEnv(t, nil) // refresh every second
	dana, danaDev, err := e.browserLogin(t, "dana", "dana-pw")
	if err != nil {
		t.Fatal(err)
	}
	erin, _, err := e.browserLogin(t, "erin", "erin-pw")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.mayUse(t, dana.SessionToken, e.corpA); err != nil {
		t.Fatal(err)
	}
	policy := e.openStream(e.corpA.http, controlapi.PathConnectorPolicy, "")
	clientPolicy := e.openStream(e.client(nil), controlapi.PathClientPolicy, dana.SessionToken)
	var cp controlapi.ConnectorPolicy
	policy.next(t, 5*time.Second, &cp)

	// Groups follow the provider at the refresh, without a new sign-in.
	e.idp.SetGroups(t, "erin", []string{"engineering"})
	testenv.Eventually(t, 15*time.Second, "erin's groups follow the refresh", func() bool {
		return e.mayUse(t, erin.SessionToken, e.corpA) == nil
	})

	// The identity provider is unreachable: nothing changes (fail static).
	e.net.down.Store(true)
	time.Sleep(3500 * time.Millisecond)
	if err := e.mayUse(t, dana.SessionToken, e.corpA); err != nil {
		t.Fatalf("access lost while the identity provider was unreachable: %v", err)
	}
	e.net.down.Store(false)

	// The provider disables dana: at the next refresh her session ends,
	// her device is revoked at the connectors, her client is told.
	e.idp.Disable(t, "dana")
	testenv.Eventually(t, 15*time.Second, "dana's session revoked", func() bool {
		return errors.Is(e.mayUse(t, dana.SessionToken, e.corpA), ErrUnauthenticated)
	})
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(cp.RevokedDevices, dana.DeviceID) {
		if time.Now().After(deadline) {
			t.Fatalf("dana's device %s never reached revoked_devices: %v", dana.DeviceID, cp.RevokedDevices)
		}
		policy.next(t, 10*time.Second, &cp)
	}
	told := time.After(10 * time.Second)
wait:
	for {
		select {
		case line, ok := <-clientPolicy.lines:
			if !ok || strings.Contains(string(line), "sign in again") {
				break wait // the push stream ended: the client must sign in again
			}
		case <-told:
			t.Fatal("dana's client policy stream went on after the revocation")
		}
	}
	// Erin is unaffected.
	if err := e.mayUse(t, erin.SessionToken, e.corpA); err != nil {
		t.Fatalf("erin lost access: %v", err)
	}
	// Signing in again is refused by the provider while disabled; once it
	// vouches again, the same device signs in again.
	e.idp.Enable(t, "dana")
	again, _, err := e.browserLoginDevice(t, "dana", "dana-pw", danaDev)
	if err != nil {
		t.Fatalf("sign-in after the provider re-enabled dana: %v", err)
	}
	if again.DeviceID != dana.DeviceID {
		t.Fatalf("the device got a new id %s (was %s)", again.DeviceID, dana.DeviceID)
	}
	if err := e.mayUse(t, again.SessionToken, e.corpA); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "dana's device leaves revoked_devices", func() bool {
		return !slices.Contains(e.c.model().revokedDevices(time.Now()), dana.DeviceID)
	})
}
