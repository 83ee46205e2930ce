// Package oidctest runs a real OpenID Connect provider (the npm package
// oidc-provider, pinned by provider/package-lock.json) for tests, and a
// scripted browser that signs users in on it over plain HTTP. It is test
// infrastructure: nothing in a program imports it.
//
// The first Start installs the provider's npm dependencies (npm ci) into the
// user cache directory, keyed by the lock file's hash, and reuses them later.
// Without node and npm the test is skipped, or fails when CI=true.
package oidctest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"
)

//go:embed provider/server.mjs provider/package.json provider/package-lock.json
var providerFiles embed.FS

// Account is a user of the test provider.
type Account struct {
	Password string `json:"password"`
	Email    string `json:"email"`
	// Unverified makes the provider send email_verified: false.
	Unverified bool `json:"-"`
	// EmailVerifiedClaim, when set, is sent as the email_verified claim as
	// it is (e.g. the string "false"); OmitEmailVerified sends none.
	EmailVerifiedClaim any      `json:"-"`
	Name               string   `json:"name,omitempty"`
	Groups             []string `json:"groups,omitempty"`
	Roles              []string `json:"roles,omitempty"`
}

// OmitEmailVerified as Account.EmailVerifiedClaim makes the provider send
// no email_verified claim (as Microsoft Entra ID does by default).
const OmitEmailVerified = "(omit email_verified)"

// Client is a registered relying party.
type Client struct {
	ID           string
	Secret       string
	RedirectURIs []string // default: http://127.0.0.1/callback and http://[::1]/callback (any port)
	// Web registers a web application (https redirect URIs on any host,
	// e.g. the controller's console) instead of a native one.
	Web bool
}

// Options configure the provider.
type Options struct {
	Clients  []Client
	Accounts map[string]Account // by login (also the subject)
	// Token lifetimes; default 5 minutes.
	AccessTokenTTL, IDTokenTTL time.Duration
}

// Provider is a running oidc-provider.
type Provider struct {
	Issuer string
	cmd    *exec.Cmd
	http   *http.Client
}

var (
	installOnce sync.Once
	installDir  string
	installErr  error
)

func need(t testing.TB, what string, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s: %v", what, err)
	}
	t.Skipf("%s: %v (the OIDC tests need node and npm)", what, err)
}

// install copies the provider into the cache and runs npm ci once.
func install() (string, error) {
	h := sha256.New()
	for _, f := range []string{"provider/server.mjs", "provider/package.json", "provider/package-lock.json"} {
		b, err := providerFiles.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("read embedded %s: %w", f, err)
		}
		h.Write(b)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	parent := filepath.Join(cache, "postern-test")
	dir := filepath.Join(parent, "oidc-provider-"+hex.EncodeToString(h.Sum(nil))[:16])
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "oidc-provider", "package.json")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("make cache dir: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "install-")
	if err != nil {
		return "", fmt.Errorf("make install dir: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	for _, f := range []string{"server.mjs", "package.json", "package-lock.json"} {
		b, _ := providerFiles.ReadFile("provider/" + f)
		if err := os.WriteFile(filepath.Join(tmp, f), b, 0o644); err != nil {
			return "", fmt.Errorf("write %s: %w", f, err)
		}
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm ci in %s: %w\n%s", tmp, err, out)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "node_modules", "oidc-provider", "package.json")); serr == nil {
			return dir, nil // another test process won the race
		}
		return "", fmt.Errorf("move provider into place: %w", err)
	}
	return dir, nil
}

// Start runs a provider for the test; it stops at the test's cleanup.
func Start(t testing.TB, opts Options) *Provider {
	t.Helper()
	for _, bin := range []string{"node", "npm"} {
		if _, err := exec.LookPath(bin); err != nil {
			need(t, "find "+bin, err)
		}
	}
	installOnce.Do(func() { installDir, installErr = install() })
	if installErr != nil {
		t.Fatalf("install oidc-provider: %v", installErr)
	}
	type clientMeta struct {
		ClientID        string   `json:"client_id"`
		ClientSecret    string   `json:"client_secret"`
		ApplicationType string   `json:"application_type"`
		RedirectURIs    []string `json:"redirect_uris"`
		GrantTypes      []string `json:"grant_types"`
		ResponseTypes   []string `json:"response_types"`
	}
	type accountMeta struct {
		Account
		EmailVerified any `json:"email_verified"`
	}
	cfg := struct {
		Clients        []clientMeta           `json:"clients"`
		Accounts       map[string]accountMeta `json:"accounts"`
		AccessTokenTTL int                    `json:"access_token_ttl,omitempty"`
		IDTokenTTL     int                    `json:"id_token_ttl,omitempty"`
		SigningKey     json.RawMessage        `json:"signing_key"`
	}{Accounts: map[string]accountMeta{}, AccessTokenTTL: int(opts.AccessTokenTTL.Seconds()), IDTokenTTL: int(opts.IDTokenTTL.Seconds())}
	for login, a := range opts.Accounts {
		var claim any = !a.Unverified
		switch {
		case a.EmailVerifiedClaim == OmitEmailVerified:
			claim = nil
		case a.EmailVerifiedClaim != nil:
			claim = a.EmailVerifiedClaim
		}
		cfg.Accounts[login] = accountMeta{Account: a, EmailVerified: claim}
	}
	for _, c := range opts.Clients {
		r := c.RedirectURIs
		if len(r) == 0 {
			r = []string{"http://127.0.0.1/callback", "http://[::1]/callback"}
		}
		appType := "native"
		if c.Web {
			appType = "web"
		}
		cfg.Clients = append(cfg.Clients, clientMeta{
			ClientID: c.ID, ClientSecret: c.Secret, ApplicationType: appType, RedirectURIs: r,
			GrantTypes:    []string{"authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"},
			ResponseTypes: []string{"code"},
		})
	}
	keyOnce.Do(func() { signingKey, keyErr = newSigningKey() })
	if keyErr != nil {
		t.Fatalf("provider signing key: %v", keyErr)
	}
	cfg.SigningKey = signingKey
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatalf("encode provider config: %v", err)
	}
	cfgFile := filepath.Join(t.TempDir(), "provider.json")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		t.Fatalf("write provider config: %v", err)
	}

	// SIGUSR2 makes node write a diagnostic report (JavaScript and native
	// stacks) into reports: what the harness shows when the provider does
	// not come up in time.
	reports := t.TempDir()
	cmd := exec.Command("node", "--report-on-signal", "--report-signal=SIGUSR2", "--report-directory="+reports,
		filepath.Join(installDir, "server.mjs"), cfgFile)
	cmd.Dir = installDir
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("provider stdin: %v", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("provider stdout: %v", err)
	}
	var stderr bytes.Buffer
	var stderrMu sync.Mutex
	cmd.Stderr = writerFunc(func(p []byte) (int, error) {
		stderrMu.Lock()
		defer stderrMu.Unlock()
		return stderr.Write(p)
	})
	if err := cmd.Start(); err != nil {
		t.Fatalf("start oidc-provider: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			stderrMu.Lock()
			t.Logf("oidc-provider stderr:\n%s", stderr.String())
			stderrMu.Unlock()
		}
	})
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			ready <- sc.Text()
		}
		close(ready)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	var line string
	select {
	case line = <-ready:
	case <-time.After(60 * time.Second):
		t.Fatalf("oidc-provider did not start within 60s; %s", nodeReport(cmd.Process, reports))
	}
	var hello struct {
		Issuer string `json:"issuer"`
	}
	if err := json.Unmarshal([]byte(line), &hello); err != nil || hello.Issuer == "" {
		stderrMu.Lock()
		defer stderrMu.Unlock()
		t.Fatalf("oidc-provider did not report its issuer (got %q): %s", line, stderr.String())
	}
	return &Provider{Issuer: hello.Issuer, cmd: cmd, http: &http.Client{Timeout: 10 * time.Second}}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func (p *Provider) control(t testing.TB, login, action string, body []byte) {
	t.Helper()
	resp, err := p.http.Post(p.Issuer+"/test/accounts/"+url.PathEscape(login)+"/"+action, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("provider %s %s: %v", action, login, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("provider %s %s: %s", action, login, resp.Status)
	}
}

// Disable makes the account vanish from the provider: its refresh tokens
// stop working.
func (p *Provider) Disable(t testing.TB, login string) { p.control(t, login, "disable", nil) }

// Enable undoes Disable.
func (p *Provider) Enable(t testing.TB, login string) { p.control(t, login, "enable", nil) }

// RedeemIDToken redeems an authorization code at the provider's token
// endpoint as client id (with the PKCE verifier), not through the
// controller, and returns the raw ID token, as a client holding its own
// token would present it.
func (p *Provider) RedeemIDToken(t testing.TB, id, secret, redirectURI, code, verifier string) string {
	t.Helper()
	conf := oauth2.Config{ClientID: id, ClientSecret: secret, RedirectURL: redirectURI,
		Endpoint: oauth2.Endpoint{TokenURL: p.Issuer + "/token", AuthStyle: oauth2.AuthStyleInHeader}}
	tok, err := conf.Exchange(context.Background(), code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("redeem code as %s: %v", id, err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		t.Fatalf("redeem code as %s: no id_token in the answer", id)
	}
	return raw
}

// SetGroups changes an account's groups claim.
func (p *Provider) SetGroups(t testing.TB, login string, groups []string) {
	b, _ := json.Marshal(groups)
	p.control(t, login, "groups", b)
}

// Browser is a scripted user agent with its own cookies, like one person's
// browser.
type Browser struct {
	c *http.Client
}

// NewBrowser returns a browser with an empty cookie jar.
func NewBrowser() *Browser {
	jar, _ := cookiejar.New(nil)
	return &Browser{c: &http.Client{Jar: jar, Timeout: 20 * time.Second}}
}

// ErrLoginRejected is returned when the provider rejects the password.
var ErrLoginRejected = errors.New("provider rejected the login")

// Page is where a browser ended up.
type Page struct {
	URL    *url.URL
	Status int
	Body   string
}

func (b *Browser) do(req *http.Request) (*Page, error) {
	resp, err := b.c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", req.URL, err)
	}
	return &Page{URL: resp.Request.URL, Status: resp.StatusCode, Body: string(body)}, nil
}

// Get loads a URL, following redirects.
func (b *Browser) Get(u string) (*Page, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("bad URL %q: %w", u, err)
	}
	return b.do(req)
}

// Post submits a form, following redirects.
func (b *Browser) Post(u string, form url.Values) (*Page, error) {
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("bad URL %q: %w", u, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

var (
	formRe  = regexp.MustCompile(`(?s)<form[^>]*id="([^"]+)"[^>]*action="([^"]+)"[^>]*>(.*?)</form>|<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>`)
	inputRe = regexp.MustCompile(`<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"`)
)

// forms returns the forms on a page: action (absolute) and hidden inputs, by id.
func forms(p *Page) map[string]struct {
	Action string
	Values url.Values
} {
	out := map[string]struct {
		Action string
		Values url.Values
	}{}
	for i, m := range formRe.FindAllStringSubmatch(p.Body, -1) {
		id, action, inner := m[1], m[2], m[3]
		if action == "" {
			id, action, inner = fmt.Sprintf("form%d", i), m[4], m[5]
		}
		abs, err := p.URL.Parse(html.UnescapeString(action))
		if err != nil {
			continue
		}
		vals := url.Values{}
		for _, in := range inputRe.FindAllStringSubmatch(inner, -1) {
			vals.Set(html.UnescapeString(in[1]), html.UnescapeString(in[2]))
		}
		out[id] = struct {
			Action string
			Values url.Values
		}{abs.String(), vals}
	}
	return out
}

// submit posts the form with the given id (or the only form) plus fields.
func (b *Browser) submit(p *Page, id string, fields url.Values) (*Page, error) {
	fs := forms(p)
	f, ok := fs[id]
	if !ok && len(fs) == 1 {
		for _, only := range fs {
			f, ok = only, true
		}
	}
	if !ok {
		return nil, fmt.Errorf("no form %q on %s (status %d): %.300s", id, p.URL, p.Status, p.Body)
	}
	for k, v := range fields {
		f.Values[k] = v
	}
	return b.Post(f.Action, f.Values)
}

// SignIn opens an authorization URL, signs in with login and password and
// follows the redirects back to the client (its loopback listener), whose
// page is returned. A wrong password gives ErrLoginRejected.
func (b *Browser) SignIn(authURL, login, password string) (*Page, error) {
	p, err := b.Get(authURL)
	if err != nil {
		return nil, err
	}
	return b.login(p, login, password)
}

func (b *Browser) login(p *Page, login, password string) (*Page, error) {
	if _, ok := forms(p)["login"]; !ok {
		return nil, fmt.Errorf("expected the provider's sign-in page, got %s (status %d): %.300s", p.URL, p.Status, p.Body)
	}
	p, err := b.submit(p, "login", url.Values{"login": {login}, "password": {password}})
	if err != nil {
		return nil, err
	}
	if strings.Contains(p.Body, "invalid login or password") {
		return p, ErrLoginRejected
	}
	return p, nil
}

// Refuse opens an authorization URL and cancels the sign-in: the provider
// sends the browser back to the client with error=access_denied.
func (b *Browser) Refuse(authURL string) (*Page, error) {
	p, err := b.Get(authURL)
	if err != nil {
		return nil, err
	}
	return b.submit(p, "abort", nil)
}

// ApproveDevice enters a device sign-in's user code (none when
// verificationURI is the verification_uri_complete), confirms it and signs in.
func (b *Browser) ApproveDevice(verificationURI, userCode, login, password string) (*Page, error) {
	p, err := b.enterCode(verificationURI, userCode)
	if err != nil {
		return nil, err
	}
	p, err = b.submit(p, "op.deviceConfirmForm", nil) // confirm=yes is a hidden input
	if err != nil {
		return nil, err
	}
	p, err = b.login(p, login, password)
	if err != nil {
		return p, err
	}
	if !strings.Contains(strings.ToLower(p.Body), "sign-in success") {
		return p, fmt.Errorf("device sign-in did not end on the success page: %s: %.300s", p.URL, p.Body)
	}
	return p, nil
}

// DenyDevice enters a device sign-in's user code and aborts it.
func (b *Browser) DenyDevice(verificationURI, userCode string) (*Page, error) {
	p, err := b.enterCode(verificationURI, userCode)
	if err != nil {
		return nil, err
	}
	f, ok := forms(p)["op.deviceConfirmForm"]
	if !ok {
		return nil, fmt.Errorf("no confirmation form on %s: %.300s", p.URL, p.Body)
	}
	f.Values.Del("confirm")
	f.Values.Set("abort", "yes")
	return b.Post(f.Action, f.Values)
}

func (b *Browser) enterCode(verificationURI, userCode string) (*Page, error) {
	p, err := b.Get(verificationURI)
	if err != nil {
		return nil, err
	}
	if userCode == "" {
		// verification_uri_complete: the page posts the code by itself.
		return b.submit(p, "", nil)
	}
	return b.submit(p, "op.deviceInputForm", url.Values{"user_code": {userCode}})
}

var (
	keyOnce    sync.Once
	signingKey json.RawMessage
	keyErr     error
)

// newSigningKey makes the RSA key (a private JWK) every provider of this
// test process signs with: one key generation per process instead of one
// per provider start.
func newSigningKey() (json.RawMessage, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate RSA key: %w", err)
	}
	b, err := jose.JSONWebKey{Key: k, KeyID: "oidctest", Algorithm: "RS256", Use: "sig"}.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("encode RSA key as JWK: %w", err)
	}
	return b, nil
}

// nodeReport asks the node process p for a diagnostic report into dir and
// returns where its JavaScript stack stood, or why there is none.
func nodeReport(p *os.Process, dir string) string {
	if reportSignal == nil {
		return "no diagnostic report: node takes no report signal on this OS"
	}
	if err := p.Signal(reportSignal); err != nil {
		return fmt.Sprintf("no diagnostic report: signal node: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		files, _ := filepath.Glob(filepath.Join(dir, "report.*.json"))
		if len(files) > 0 {
			b, err := os.ReadFile(files[0])
			var rep struct {
				JavaScriptStack json.RawMessage `json:"javascriptStack"`
				NativeStack     json.RawMessage `json:"nativeStack"`
			}
			if err == nil && json.Unmarshal(b, &rep) == nil {
				return fmt.Sprintf("node's JavaScript stack: %s; native stack: %.3000s", rep.JavaScriptStack, rep.NativeStack)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "node wrote no diagnostic report within 10s of SIGUSR2"
}
