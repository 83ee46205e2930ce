package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/controller/api"
	"postern.dev/postern/internal/testenv"
)

type ctxKey struct{}

// fakeCore is a controller with one console session (secret "s3cret", an
// auditor) and one admin password; it records what the console asks.
type fakeCore struct {
	Core    // methods a test does not expect panic
	revoked []string
	signIn  error // ConsoleSignIn's answer
}

func (f *fakeCore) ConsoleSession(r *http.Request, secret string) (context.Context, *Admin, error) {
	if secret != "s3cret" {
		return nil, nil, fmt.Errorf("session: %w", api.ErrAdminAuth)
	}
	return context.WithValue(r.Context(), ctxKey{}, "aud"), &Admin{Name: "aud", Role: "auditor", SessionID: "ases_1", Read: true}, nil
}

func (f *fakeCore) ConsoleSignIn(ctx context.Context, r *http.Request, name, password string) (string, error) {
	if f.signIn != nil {
		return "", f.signIn
	}
	return "s3cret", nil
}

func (f *fakeCore) ConsoleSSO() bool { return false }

func (f *fakeCore) RevokeAdminCredential(ctx context.Context, kind, id string) error {
	f.revoked = append(f.revoked, fmt.Sprintf("%s %s by %v", kind, id, ctx.Value(ctxKey{})))
	return nil
}

func (f *fakeCore) AppliedFile(ctx context.Context) *AppliedFile { return nil }

// newFake serves a console over a fake core; the admin API answers every
// call 403 and records the admin each call carried.
func newFake(t *testing.T) (*fakeCore, *httptest.Server, *[]string) {
	t.Helper()
	core := &fakeCore{}
	var calls []string
	adminAPI := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls = append(calls, fmt.Sprintf("%s %s as %v", r.Method, r.URL.Path, r.Context().Value(ctxKey{})))
		api.WriteError(w, http.StatusForbidden, "role auditor may not")
	})
	mux := http.NewServeMux()
	New(Config{Core: core, AdminAPI: adminAPI, Roles: []string{"owner", "auditor"}, SessionTTL: time.Hour, Log: testenv.Logger(t)}).Routes(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return core, srv, &calls
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

func send(t *testing.T, srv *httptest.Server, method, path string, form url.Values, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	cl := &http.Client{CheckRedirect: noRedirect}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s %s: %v", method, path, err)
	}
	return resp, string(b)
}

const session = consoleCookie + "=s3cret"

// TestConsoleGuards: pages need a live session (GET: to the sign-in page;
// POST: 401), and a POST needs the session's CSRF token and the same
// origin; the page's admin API calls carry the session's context, and
// sign-out ends the session through the core as its admin.
func TestConsoleGuards(t *testing.T) {
	core, srv, calls := newFake(t)
	if resp, _ := send(t, srv, "GET", "/console/", nil, nil); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/login" {
		t.Fatalf("no session: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := send(t, srv, "GET", "/console/", nil, map[string]string{"Cookie": consoleCookie + "=wrong"}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("unknown session: %d", resp.StatusCode)
	}
	if resp, _ := send(t, srv, "POST", "/console/logout", url.Values{}, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("POST without a session: %d", resp.StatusCode)
	}

	resp, body := send(t, srv, "GET", "/console/audit", nil, map[string]string{"Cookie": session})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "may not see this page") || !strings.Contains(body, `id="whoami">aud`) {
		t.Fatalf("audit page: %d %s", resp.StatusCode, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); csp != consoleCSP || resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Fatalf("headers: %v", resp.Header)
	}
	if len(*calls) == 0 || (*calls)[0] != "GET /api/v1/audit as aud" {
		t.Fatalf("admin API calls: %v", *calls)
	}

	csrf := csrfFor("s3cret")
	for _, c := range []struct {
		name   string
		form   url.Values
		header map[string]string
	}{
		{"no token", url.Values{}, nil},
		{"wrong token", url.Values{"csrf": {csrfFor("other")}}, nil},
		{"cross-site", url.Values{"csrf": {csrf}}, map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"other origin", url.Values{"csrf": {csrf}}, map[string]string{"Origin": "https://evil.example"}},
	} {
		h := map[string]string{"Cookie": session}
		for k, v := range c.header {
			h[k] = v
		}
		if resp, body := send(t, srv, "POST", "/console/logout", c.form, h); resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "CSRF check failed") {
			t.Errorf("%s: %d %s", c.name, resp.StatusCode, body)
		}
	}
	if len(core.revoked) != 0 {
		t.Fatalf("a refused form ended the session: %v", core.revoked)
	}
	resp, _ = send(t, srv, "POST", "/console/logout", url.Values{"csrf": {csrf}}, map[string]string{"Cookie": session, "Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/login" {
		t.Fatalf("sign-out: %d", resp.StatusCode)
	}
	if len(core.revoked) != 1 || core.revoked[0] != "admin_session ases_1 by aud" {
		t.Fatalf("sign-out revoked %v", core.revoked)
	}
	if ck := resp.Cookies(); len(ck) != 1 || ck[0].Name != consoleCookie || ck[0].MaxAge >= 0 {
		t.Fatalf("sign-out cookies: %v", ck)
	}
}

// TestConsoleSignIn: the sign-in form is a double submit (its cookie and
// field), a refused sign-in says why with the core's status, and a good one
// sets the session cookie for the session's life.
func TestConsoleSignIn(t *testing.T) {
	core, srv, _ := newFake(t)
	resp, body := send(t, srv, "GET", "/console/login", nil, nil)
	var pre string
	for _, ck := range resp.Cookies() {
		if ck.Name == consolePreCookie {
			pre = ck.Value
		}
	}
	if pre == "" || !strings.Contains(body, `value="`+pre+`"`) {
		t.Fatalf("sign-in form: %v %s", resp.Cookies(), body)
	}
	form := url.Values{"csrf": {pre}, "name": {"erin"}, "password": {"pw"}}
	withPre := map[string]string{"Cookie": consolePreCookie + "=" + pre}
	if resp, _ := send(t, srv, "POST", "/console/login", form, nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("without the form's cookie: %d", resp.StatusCode)
	}
	core.signIn = fmt.Errorf("%w: try again in 5s", api.ErrThrottled)
	if resp, body := send(t, srv, "POST", "/console/login", form, withPre); resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(body, "Too many failed sign-ins: too many attempts: try again in 5s") {
		t.Fatalf("throttled: %d %s", resp.StatusCode, body)
	}
	core.signIn = fmt.Errorf("%w: wrong name or password", api.ErrUnauthenticated)
	if resp, body := send(t, srv, "POST", "/console/login", form, withPre); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "Wrong name or password.") {
		t.Fatalf("wrong password: %d %s", resp.StatusCode, body)
	}
	core.signIn = errors.New("disk full")
	if resp, body := send(t, srv, "POST", "/console/login", form, withPre); resp.StatusCode != http.StatusInternalServerError || strings.Contains(body, "disk full") {
		t.Fatalf("server failure: %d %s", resp.StatusCode, body)
	}
	core.signIn = nil
	resp, _ = send(t, srv, "POST", "/console/login", form, withPre)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/" {
		t.Fatalf("sign-in: %d", resp.StatusCode)
	}
	var got *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == consoleCookie {
			got = ck
		}
	}
	if got == nil || got.Value != "s3cret" || got.MaxAge != 3600 || !got.Secure || !got.HttpOnly || got.SameSite != http.SameSiteStrictMode {
		t.Fatalf("session cookie: %+v", got)
	}
}
