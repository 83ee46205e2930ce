package controller

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/adminapi"
)

// diffRow returns the preview's before and after of one field.
func (b *browser) diffRow(field string) (string, string) {
	b.t.Helper()
	v := eval[[]string](b, `(() => { const r = [...document.querySelectorAll("#diff tbody tr")].find(r => r.cells[0].textContent == "`+field+`");
		return r ? [r.cells[1].textContent, r.cells[2].textContent] : ["?", "?"] })()`)
	return v[0], v[1]
}

// TestConsoleUserAndServiceAccountForms: an owner creates a user and a
// service account through the forms (preview first: a field-by-field diff,
// validated with apply's messages), makes a service key (shown once, it
// signs in) and revokes it; edits of a file-managed profile say so; an
// auditor gets no form and a forged post is refused.
func TestConsoleUserAndServiceAccountForms(t *testing.T) {
	e, _ := newAccessController(t)
	b := newBrowser(t, e.url)
	e.admin("POST", PathAdmins, AdminRequest{Name: "olivia@example.com", Role: RoleOwner, Password: "owner password 1"}, 201)
	e.admin("POST", PathAdmins, AdminRequest{Name: "aud@example.com", Role: RoleAuditor, Password: "auditor password 1"}, 201)
	// The file applied through the API (as `postern-controller apply` does) is recorded.
	e.admin("POST", "/api/v1/apply", fastYAML(accessAPIYAML), 200)
	b.signIn("olivia@example.com", "owner password 1")

	// A bad e-mail address: the preview says what the API (and apply) say.
	b.open("/console/users")
	b.do(chromedp.SendKeys(chromedp.CSS("#uemail"), "not an address"), htmxIdle(), chromedp.Click(chromedp.CSS("#upreview")))
	b.do(chromedp.WaitVisible(chromedp.CSS("#error")))
	st, body := e.call(nil, "POST", "/api/v1/users", e.c.AdminToken(), adminapi.UserSpec{Email: "not an address"})
	var apiErr controlapi.Error
	json.Unmarshal(body, &apiErr)
	if msg := b.text("#error"); st != 400 || msg != apiErr.Error {
		t.Fatalf("preview error %q, API %d %q", msg, st, apiErr.Error)
	}
	if n := eval[int](b, `document.querySelectorAll("#usave").length`); n != 0 {
		t.Fatal("an invalid form offers Save")
	}

	// A new user in a group: preview, then save.
	b.open("/console/users")
	b.do(chromedp.SendKeys(chromedp.CSS("#uemail"), "dave@example.com"), chromedp.SendKeys(chromedp.CSS("#upassword"), "a long password 1"),
		chromedp.Click(chromedp.CSS(`input[name=groups][value=engineering]`)), htmxIdle(), chromedp.Click(chromedp.CSS("#upreview")), chromedp.WaitVisible(chromedp.CSS("#usave")))
	if bf, af := b.diffRow("groups"); bf != "-" || !strings.HasPrefix(af, "engineering") {
		t.Fatalf("preview groups: %q -> %q", bf, af)
	}
	if _, err := e.c.lookup(t.Context(), KindUser, "dave@example.com"); err == nil {
		t.Fatal("the preview created the user")
	}
	// The preview page carries the password's hash, never the password.
	if html := eval[string](b, `document.documentElement.outerHTML`); strings.Contains(html, "a long password 1") {
		t.Fatal("the preview page holds the typed password")
	}
	b.screenshot("user-preview")
	b.do(htmxIdle(), chromedp.Click(chromedp.CSS("#usave")), chromedp.WaitVisible(chromedp.CSS(".flash")))
	if f := b.text(".flash"); f != "Saved user dave@example.com." {
		t.Fatalf("after save: %q", f)
	}
	var spec Spec
	mustJSON(t, e.admin("GET", "/api/v1/spec", nil, 200), &spec)
	var g []string
	for _, gr := range spec.Groups {
		if slices.ContainsFunc(gr.Users, func(u string) bool { return strings.EqualFold(u, "dave@example.com") }) {
			g = append(g, gr.Name)
		}
	}
	if strings.Join(g, ",") != "engineering" {
		t.Fatalf("dave's groups: %v", g)
	}
	e.login("dave@example.com", "a long password 1") // the password from the form works

	// Disable dave: the preview shows just that change.
	b.open("/console/users?edit=dave@example.com")
	b.do(chromedp.Click(chromedp.CSS("#udisabled")), htmxIdle(), chromedp.Click(chromedp.CSS("#upreview")), chromedp.WaitVisible(chromedp.CSS("#usave")))
	if bf, af := b.diffRow("disabled"); bf != "no" || !strings.HasPrefix(af, "yes") {
		t.Fatalf("preview disabled: %q -> %q", bf, af)
	}
	if n := eval[int](b, `document.querySelectorAll("#diff tr.changed").length`); n != 1 {
		t.Fatalf("%d changed fields, want 1", n)
	}
	b.do(htmxIdle(), chromedp.Click(chromedp.CSS("#usave")), chromedp.WaitVisible(chromedp.CSS(".flash")))
	var dave adminapi.UserView
	mustJSON(t, e.admin("GET", "/api/v1/users/dave@example.com", nil, 200), &dave)
	if !dave.Disabled {
		t.Fatal("dave not disabled")
	}
	b.screenshot("users")

	// A service account, then a key (shown once) that signs in, then revoked.
	b.open("/console/service-accounts")
	b.do(chromedp.SendKeys(chromedp.CSS("#sname"), "ci-bot"), chromedp.Click(chromedp.CSS(`input[name=groups][value=engineering]`)),
		htmxIdle(), chromedp.Click(chromedp.CSS("#spreview")), chromedp.WaitVisible(chromedp.CSS("#ssave")))
	if bf, af := b.diffRow("name"); bf != "-" || !strings.HasPrefix(af, "ci-bot") {
		t.Fatalf("preview name: %q -> %q", bf, af)
	}
	b.do(htmxIdle(), chromedp.Click(chromedp.CSS("#ssave")), chromedp.WaitVisible(chromedp.CSS(".flash")))
	b.do(htmxIdle(), chromedp.Click(chromedp.CSS("#newkey-ci-bot")), chromedp.WaitVisible(chromedp.CSS("#new-key")))
	var key controlapi.ServiceKey
	if err := json.Unmarshal([]byte(b.text("#new-key")), &key); err != nil || key.Secret == "" {
		t.Fatalf("key file %q: %v", b.text("#new-key"), err)
	}
	b.screenshot("service-accounts-key")
	login := func() int {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		st, _ := e.call(nil, "POST", controlapi.PathLogin, "", controlapi.LoginRequest{ServiceKey: &key, DevicePublicKey: base64.StdEncoding.EncodeToString(pub)})
		return st
	}
	if st := login(); st != 200 {
		t.Fatalf("sign-in with the console's key: %d", st)
	}
	b.open("/console/service-accounts")
	// form.submit() posts without the confirmation dialog (as without JavaScript).
	eval[bool](b, `(document.querySelector('form[action$="/keys/`+key.KeyID+`/revoke"]').submit(), true)`)
	b.do(chromedp.WaitVisible(chromedp.CSS(".flash")))
	if st := login(); st != 401 {
		t.Fatalf("sign-in with the revoked key: %d", st)
	}

	// An unknown OS in a new posture profile: apply's message again.
	b.open("/console/posture-profiles")
	b.do(chromedp.SendKeys(chromedp.CSS("#pname"), "strict"), chromedp.SendKeys(chromedp.CSS("#posmin"), "plan9=4"),
		htmxIdle(), chromedp.Click(chromedp.CSS("#ppreview")), chromedp.WaitVisible(chromedp.CSS("#error")))
	st, body = e.call(nil, "POST", "/api/v1/posture-profiles", e.c.AdminToken(), PostureProfileSpec{Name: "strict", OSMin: map[string]string{"plan9": "4"}})
	apiErr = controlapi.Error{}
	json.Unmarshal(body, &apiErr)
	if msg := b.text("#error"); st != 400 || msg != apiErr.Error || !strings.Contains(msg, "plan9") {
		t.Fatalf("posture preview error %q, API %d %q", msg, st, apiErr.Error)
	}

	// A file-managed posture profile: the form says so, the preview diffs.
	b.open("/console/posture-profiles?edit=managed")
	if n := eval[int](b, `document.querySelectorAll("#managed-note").length`); n != 1 {
		t.Fatal("no file-managed note on the applied profile")
	}
	b.do(chromedp.Click(chromedp.CSS("#pfw")), htmxIdle(), chromedp.Click(chromedp.CSS("#ppreview")), chromedp.WaitVisible(chromedp.CSS("#psave")))
	if bf, af := b.diffRow("firewall"); bf != "no" || !strings.HasPrefix(af, "yes") {
		t.Fatalf("preview firewall: %q -> %q", bf, af)
	}
	b.screenshot("posture-preview")
	b.do(htmxIdle(), chromedp.Click(chromedp.CSS("#psave")), chromedp.WaitVisible(chromedp.CSS(".flash")))
	mustJSON(t, e.admin("GET", "/api/v1/spec", nil, 200), &spec)
	if len(spec.PostureProfiles) != 1 || !spec.PostureProfiles[0].Firewall || !spec.PostureProfiles[0].DiskEncryption {
		t.Fatalf("posture profile after save: %+v", spec.PostureProfiles)
	}
	b.signOut()

	// The auditor: no mutating control; a forged post and the API refuse.
	b.signIn("aud@example.com", "auditor password 1")
	for _, p := range []string{"/console/users", "/console/service-accounts", "/console/posture-profiles", "/console/events", "/console/"} {
		b.open(p)
		if n := eval[int](b, `document.querySelectorAll('form[method=post]:not([action="/console/logout"]), button.danger, button[name=action]').length`); n != 0 {
			t.Errorf("auditor sees %d mutating controls on %s", n, p)
		}
	}
	for _, path := range []string{"/console/users", "/console/service-accounts", "/console/service-accounts/ci-bot/keys"} {
		status := eval[int](b, `fetch("`+path+`", {method: "POST", body: new URLSearchParams({csrf: document.querySelector(".who input[name=csrf]").value,
			email: "eve@example.com", name: "eve", action: "save"})}).then(r => r.status)`)
		if status != 403 {
			t.Errorf("auditor's post to %s: %d", path, status)
		}
	}
	audTok := e.adminToken("aud-api@example.com", RoleAuditor)
	for _, c := range []struct {
		method, path string
		body         any
	}{
		{"POST", "/api/v1/users", adminapi.UserSpec{Email: "eve@example.com"}},
		{"PUT", "/api/v1/users/dave@example.com", adminapi.UserSpec{Email: "dave@example.com"}},
		{"POST", "/api/v1/service-accounts", adminapi.ServiceAccountSpec{Name: "eve", Groups: []string{}}},
		{"POST", "/api/v1/service-accounts/ci-bot/keys", nil},
		{"POST", "/api/v1/posture-profiles", PostureProfileSpec{Name: "eve"}},
	} {
		if st, body := e.call(nil, c.method, c.path, audTok, c.body); st != 403 {
			t.Errorf("auditor %s %s: %d %s", c.method, c.path, st, body)
		}
	}
}
