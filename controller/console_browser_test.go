package controller

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/adminapi"
)

// findChromium returns Debian's chromium (installed by scripts/install-deps.sh).
// Without it the browser tests skip, except under CI=true, where they fail.
func findChromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed (scripts/install-deps.sh installs it); the console browser tests cannot run")
	}
	t.Skip("chromium not installed")
	return ""
}

// browser is one headless Chromium tab with a watch on its console: a
// Content-Security-Policy violation or an uncaught exception is recorded and
// fails the test.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string
	shot string // screenshot directory ("" none)

	mu        sync.Mutex
	csp, excs []string
	seen      chan struct{}
	// selfTest: the test injects an inline script on purpose to prove the
	// watch sees violations; from then on inline-script reports (the
	// probe's and Chrome's own, which arrive in either order and not
	// together) go to probed instead of failing the test.
	selfTest bool
	probed   []string
}

// cspProbe runs in every document before its scripts (DevTools-injected, so
// the page's CSP does not apply to it) and reports violations on the console.
const cspProbe = `document.addEventListener("securitypolicyviolation", function (e) {
  console.error("CSP-VIOLATION " + e.violatedDirective + " " + e.blockedURI);
});`

func newBrowser(t *testing.T, base string) *browser {
	exe := findChromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.IgnoreCertErrors, chromedp.WindowSize(1280, 900))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); acancel() })
	b := &browser{t: t, ctx: ctx, base: base, seen: make(chan struct{}, 1), shot: os.Getenv("POSTERN_CONSOLE_SCREENSHOTS")}
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			text := m.String()
			b.mu.Lock()
			switch {
			case strings.Contains(text, "CSP-VIOLATION") || strings.Contains(text, "Content Security Policy") ||
				(m.Source == "security" && m.Type == chromedp.ConsoleError):
				if b.selfTest && (strings.Contains(text, "inline") || strings.Contains(text, "Refused to execute")) {
					b.probed = append(b.probed, text)
				} else {
					b.csp = append(b.csp, text)
				}
			case m.IsException():
				b.excs = append(b.excs, text)
			}
			b.mu.Unlock()
			select {
			case b.seen <- struct{}{}:
			default:
			}
		}
	}()
	b.do(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: cspProbe})
		return err
	}), chromedp.EmulateViewport(1280, 900))
	t.Cleanup(b.checkClean)
	return b
}

// htmxIdle waits until the page has loaded and htmx has no request in
// flight and no swap or settle under way. A click on content htmx has not
// processed yet (a swap still settling) submits natively, a full page load
// that a following WaitVisible can miss while it watches the old document:
// the forms test hung for 30 s on such a click now and then.
func htmxIdle() chromedp.Action[chromedp.Void] {
	const idle = `document.readyState === "complete" && window.htmx !== undefined && !document.querySelector(".htmx-request, .htmx-settling, .htmx-swapping, .htmx-added")`
	return chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		for {
			// Runtime.evaluate, checked every 20 ms (chromedp.Poll builds
			// its predicate with new Function, which the console's CSP
			// forbids).
			if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](idle)); err == nil && ok {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("htmx not idle: %w", ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
}

// do runs actions with a deadline.
func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("browser: %v", err)
	}
}

func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

func eval[T any](b *browser, js string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// open navigates to a console page and waits for its heading.
func (b *browser) open(path string) {
	b.t.Helper()
	b.do(chromedp.Navigate(b.base+path), chromedp.WaitVisible(chromedp.CSS("main h1")))
}

// screenshot saves the viewport as NAME.png when POSTERN_CONSOLE_SCREENSHOTS
// names a directory (docs/console when refreshing the documentation).
func (b *browser) screenshot(name string) {
	b.t.Helper()
	if b.shot == "" {
		return
	}
	png, err := chromedp.Run(b.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(b.shot, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

func (b *browser) darkMode(on bool) {
	v := "light"
	if on {
		v = "dark"
	}
	b.do(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: v}}})
		return err
	}))
}

func (b *browser) signIn(name, password string) {
	b.t.Helper()
	b.open("/console/login")
	b.do(chromedp.SendKeys(chromedp.CSS("#name"), name), chromedp.SendKeys(chromedp.CSS("#password"), password),
		htmxIdle(), chromedp.Click(chromedp.CSS("#signin")), chromedp.WaitVisible(chromedp.CSS("#whoami")))
}

// signInKeyboard signs in with the keyboard only: typing, Tab to the
// password field, Enter to submit.
func (b *browser) signInKeyboard(name, password string) {
	b.t.Helper()
	b.open("/console/login")
	b.do(chromedp.SendKeys(chromedp.CSS("#name"), name+"\t"), chromedp.WaitReady(chromedp.CSS("#password:focus")),
		chromedp.SendKeys(chromedp.CSS("#password:focus"), password+"\r"), chromedp.WaitVisible(chromedp.CSS("#whoami")))
}

func (b *browser) signOut() {
	b.t.Helper()
	b.do(htmxIdle(), chromedp.Click(chromedp.CSS(".who button")), chromedp.WaitVisible(chromedp.CSS("#signin")))
}

// violations returns the CSP violations and exceptions seen so far.
func (b *browser) violations() ([]string, []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.csp...), append([]string(nil), b.excs...)
}

func (b *browser) checkClean() {
	csp, excs := b.violations()
	if len(csp) > 0 {
		b.t.Errorf("Content-Security-Policy violations: %q", csp)
	}
	if len(excs) > 0 {
		b.t.Errorf("JavaScript exceptions: %q", excs)
	}
}

// TestConsoleInBrowser drives the console in headless Chromium: an owner
// signs in, creates a resource through the form (and a bad one, refused
// with the API's message), mints a connector token that then enrolls a
// connector, and approves an access request; an auditor sees no mutating
// control and the API refuses the auditor's changes; any CSP violation or
// JavaScript exception fails the test.
func TestConsoleInBrowser(t *testing.T) {
	e, _ := newAccessController(t)
	b := newBrowser(t, e.url)
	e.admin("POST", PathAdmins, AdminRequest{Name: "olivia@example.com", Role: RoleOwner, Password: "owner password 1"}, 201)
	e.admin("POST", PathAdmins, AdminRequest{Name: "aud@example.com", Role: RoleAuditor, Password: "auditor password 1"}, 201)
	// A pending access request, made by alice.
	alice := e.login("alice@example.com", "correct horse")
	st, body := e.call(nil, "POST", controlapi.PathMyRequests, alice.session.SessionToken,
		controlapi.AccessRequestCreate{Resource: "prod-db", Duration: "2h", Reason: "schema migration"})
	var req controlapi.AccessRequest
	if st != 201 || json.Unmarshal(body, &req) != nil {
		t.Fatalf("access request: %d %s", st, body)
	}

	b.signIn("olivia@example.com", "owner password 1")
	if who := b.text("#whoami"); !strings.Contains(who, "olivia@example.com") || !strings.Contains(who, "owner") {
		t.Fatalf("signed in as %q", who)
	}
	if n := b.text("#pending"); n != "1" {
		t.Fatalf("overview: %s pending requests", n)
	}
	b.screenshot("overview")
	b.darkMode(true)
	b.screenshot("overview-dark")
	b.darkMode(false)

	// A resource through the form; the API then has it.
	b.open("/console/resources")
	b.do(htmxIdle(), chromedp.Click(chromedp.CSS("#new-resource")), chromedp.WaitVisible(chromedp.CSS("#resource-form")))
	fill := func(name, addr, ports string) {
		b.do(chromedp.SendKeys(chromedp.CSS("#name"), name), chromedp.SendKeys(chromedp.CSS("#address"), addr),
			chromedp.SetValue(chromedp.CSS("#network"), "corp"), chromedp.SendKeys(chromedp.CSS("#ports"), ports),
			chromedp.Click(chromedp.CSS(`input[name=groups][value=engineering]`)))
	}
	fill("wiki", "wiki.corp.internal", "tcp/443")
	b.screenshot("resource-form")
	b.do(htmxIdle(), chromedp.Click(chromedp.CSS("#save")), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if f := b.text(".flash"); f != "Saved resource wiki." {
		t.Fatalf("after save: %q", f)
	}
	var got adminapi.ResourceSpec
	var spec Spec
	mustJSON(t, e.admin("GET", "/api/v1/spec", nil, 200), &spec)
	for _, r := range spec.Resources {
		if r.Name == "wiki" {
			got = r
		}
	}
	if got.Address != "wiki.corp.internal" || got.Network != "corp" || strings.Join(got.Ports, ",") != "tcp/443" || strings.Join(got.Groups, ",") != "engineering" {
		t.Fatalf("resource from the form: %+v", got)
	}
	b.screenshot("resources")
	// An invalid port: the form shows exactly what the API (and apply) say.
	b.open("/console/resources/new")
	fill("bad", "bad.corp.internal", "tcp/99999")
	b.do(htmxIdle(), chromedp.Click(chromedp.CSS("#save")), chromedp.WaitVisible(chromedp.CSS("#error")))
	st, body = e.call(nil, "POST", "/api/v1/resources", e.c.AdminToken(),
		adminapi.ResourceSpec{Name: "bad", Address: "bad.corp.internal", Network: "corp", Ports: []string{"tcp/99999"}, Groups: []string{"engineering"}})
	var apiErr controlapi.Error
	json.Unmarshal(body, &apiErr)
	if msg := b.text("#error"); st != 400 || msg != apiErr.Error || !strings.Contains(msg, "99999") {
		t.Fatalf("form error %q, API %d %q", msg, st, apiErr.Error)
	}
	if v := eval[string](b, `document.querySelector("#name").value`); v != "bad" {
		t.Fatalf("form lost its input: %q", v)
	}

	// Mint a connector token; it enrolls the connector.
	b.open("/console/connectors")
	b.do(chromedp.SendKeys(chromedp.CSS("#mname"), "corp-a"), htmxIdle(), chromedp.Click(chromedp.CSS("#mint")), chromedp.WaitVisible(chromedp.CSS("#enroll-command")))
	cmd := b.text("#enroll-command")
	tok, ok := strings.CutPrefix(cmd, "postern-connector --token ")
	et, err := controlapi.ParseEnrollmentToken(tok)
	if !ok || err != nil || et.Name != "corp-a" {
		t.Fatalf("enroll command %q: %v", cmd, err)
	}
	b.screenshot("connectors-mint")
	key := pubPEMNew(t)
	if st, body := e.call(nil, "POST", controlapi.PathEnrollConnector, "", controlapi.EnrollRequest{Secret: et.Secret, PublicKeyPEM: key, Version: "test"}); st != 200 {
		t.Fatalf("enroll with the console's token: %d %s", st, body)
	}
	b.open("/console/connectors")
	if row := eval[string](b, `[...document.querySelectorAll("#connectors tr")].find(r => r.cells[0].textContent == "corp-a").cells[3].textContent`); row != "yes" {
		t.Fatalf("corp-a enrolled: %q", row)
	}

	// Approve the access request with a reason.
	b.open("/console/requests")
	b.screenshot("requests")
	b.do(chromedp.SendKeys(chromedp.CSS("#reason-"+req.ID), "change window CHG-7"), chromedp.Click(chromedp.CSS("#approve-"+req.ID)),
		chromedp.WaitVisible(chromedp.CSS(".flash")))
	var reqs []controlapi.AccessRequest
	mustJSON(t, e.admin("GET", controlapi.PathAccessRequests, nil, 200), &reqs)
	if len(reqs) != 1 || (reqs[0].State != "approved" && reqs[0].State != "active") || reqs[0].DecidedBy != "olivia@example.com" || reqs[0].DecideReason != "change window CHG-7" {
		t.Fatalf("request after approval: %+v", reqs)
	}
	b.open("/console/audit?actor=olivia")
	if n := eval[int](b, `document.querySelectorAll("#audit tbody tr").length`); n < 3 {
		t.Fatalf("audit rows for olivia: %d", n)
	}
	b.screenshot("audit")
	b.open("/console/devices")
	b.screenshot("devices")
	// Paste YAML: Preview is a dry run showing apply's plan.
	b.open("/console/apply")
	b.do(chromedp.SetValue(chromedp.CSS("#yaml"), fastYAML(accessAPIYAML)), htmxIdle(), chromedp.Click(chromedp.CSS("#preview")),
		chromedp.WaitVisible(chromedp.CSS("#plan")))
	if plan := b.text("#plan"); !strings.Contains(plan, "- resource wiki") || !strings.Contains(plan, "Dry run") {
		t.Fatalf("preview plan: %q", plan)
	}
	if _, err := e.c.lookup(t.Context(), KindResource, "wiki"); err != nil {
		t.Fatalf("the preview changed something: %v", err)
	}
	// An owner adds an approver and makes an API token for them.
	b.open("/console/admins")
	b.do(chromedp.SendKeys(chromedp.CSS("#aname"), "apu@example.com"), chromedp.SetValue(chromedp.CSS("#arole"), RoleApprover),
		chromedp.SendKeys(chromedp.CSS("#apw"), "approver password 1"), htmxIdle(), chromedp.Click(chromedp.CSS("#add-admin")),
		chromedp.WaitVisible(chromedp.CSS(".flash")))
	apu := eval[string](b, `[...document.querySelectorAll("#tadmin option")].find(o => o.textContent == "apu@example.com").value`)
	b.do(chromedp.SetValue(chromedp.CSS("#tadmin"), apu), chromedp.SendKeys(chromedp.CSS("#tname"), "ticket bot"),
		htmxIdle(), chromedp.Click(chromedp.CSS("#make-token")), chromedp.WaitVisible(chromedp.CSS("#new-token")))
	apuTok := b.text("#new-token")
	if st, _ := e.call(nil, "GET", controlapi.PathAccessRequests, apuTok, nil); st != 200 {
		t.Fatalf("approver token lists requests: %d", st)
	}
	if st, _ := e.call(nil, "GET", "/api/v1/resources", apuTok, nil); st != 403 {
		t.Fatalf("approver token reads resources: %d", st)
	}
	b.screenshot("admins")
	b.signOut()

	// The auditor: every page, no mutating control; the API refuses.
	b.signInKeyboard("aud@example.com", "auditor password 1")
	for _, p := range []string{"/console/", "/console/resources", "/console/resources/wiki", "/console/groups", "/console/networks", "/console/connectors",
		"/console/devices", "/console/requests", "/console/audit", "/console/admins", "/console/apply", "/console/events"} {
		b.open(p)
		n := eval[int](b, `document.querySelectorAll('form[method=post]:not([action="/console/logout"]), button.danger, #new-resource, #mint, #save').length`)
		if n != 0 {
			t.Errorf("auditor sees %d mutating controls on %s", n, p)
		}
	}
	// A forged console form post from the auditor's own session is refused
	// by the API behind it.
	status := eval[int](b, `fetch("/console/resources", {method: "POST", body: new URLSearchParams({csrf: document.querySelector(".who input[name=csrf]").value,
		name: "evil", address: "192.0.2.66", network: "corp", groups: "engineering"})}).then(r => r.status)`)
	if status != 403 {
		t.Fatalf("auditor's console post: %d", status)
	}
	audTok := e.adminToken("aud-api@example.com", RoleAuditor)
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/api/v1/resources", adminapi.ResourceSpec{Name: "evil", Address: "192.0.2.66", Network: "corp", Groups: []string{}, Ports: []string{}}},
		{"POST", "/api/v1/connector-tokens", MintRequest{Name: "corp-a"}},
		{"POST", controlapi.PathAccessRequests + "/" + req.ID + "/deny", controlapi.AccessDecision{Reason: "x"}},
		{"DELETE", "/api/v1/resources/wiki", nil},
	} {
		if st, body := e.call(nil, c.method, c.path, audTok, c.body); st != 403 {
			t.Errorf("auditor %s %s: %d %s", c.method, c.path, st, body)
		}
	}
	if _, err := e.c.lookup(t.Context(), KindResource, "evil"); err == nil {
		t.Fatal("the auditor created a resource")
	}
	if csp, excs := b.violations(); len(csp)+len(excs) > 0 {
		t.Fatalf("console pages: CSP %q, exceptions %q", csp, excs)
	}

	// The watch itself: an inline script is a violation its probe reports.
	b.mu.Lock()
	b.selfTest = true
	b.mu.Unlock()
	eval[bool](b, `(function () { var s = document.createElement("script"); s.textContent = "window.x = 1"; document.body.appendChild(s); return true })()`)
	deadline := time.After(10 * time.Second)
	for {
		b.mu.Lock()
		seen := slices.ContainsFunc(b.probed, func(m string) bool { return strings.Contains(m, "CSP-VIOLATION script-src-elem inline") })
		b.mu.Unlock()
		if seen {
			break
		}
		select {
		case <-b.seen:
		case <-deadline:
			t.Fatal("an inline script was not reported as a CSP violation: the watch is blind")
		}
	}
}

func pubPEMNew(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pubPEM(pub)
}
