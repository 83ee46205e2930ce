package controller

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/internal/testenv"
)

var webauthnBrowserYAML = testenv.CorpPolicy("correct horse", "corp-a") + `resources:
  - name: mfa-db
    address: mfa.corp.internal
    network: corp
    ports: [tcp/5432]
    groups: [engineering]
    require: {mfa: 1h}
`

// TestWebAuthnInChromium enrolls a security key and steps up with it in
// headless Chromium, whose virtual authenticator (CTAP2, user
// verification) answers the controller's page: the real browser API, the
// real page and script under their CSP, the real verification. A resource
// that requires MFA is refused before the step-up (the controller's view
// and the Connection Token's claim) and allowed after; a forged signature
// from the browser is refused and changes nothing.
func TestWebAuthnInChromium(t *testing.T) {
	e, clk := newWebAuthnController(t, nil)
	e.apply(webauthnBrowserYAML)
	con := e.enroll(KindConnector, "corp-a")
	e.heartbeat(con, randomDigest(), "192.0.2.10:4433")
	alice := e.login("alice@example.com", "correct horse")
	tok := alice.session.SessionToken
	br := testenv.Chromium(t, e.url, e.pool)

	keys, err := ctoken.ParseJWKS(e.c.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	verifier := &ctoken.Verifier{Issuer: e.url, Keys: ctoken.NewKeySet(keys)} // token times are wall-clock
	claims := func() *ctoken.Claims {
		t.Helper()
		st, data := e.call(nil, http.MethodPost, controlapi.PathConnectionToken, tok, controlapi.TokenRequest{ConnectorID: con.id})
		if st != 200 {
			t.Fatalf("token: %d %s", st, data)
		}
		var tr controlapi.TokenResponse
		mustJSON(t, data, &tr)
		c, err := verifier.Verify(tr.Token, con.id)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// access is the controller's verdict on mfa-db for alice's device (nil: allowed).
	access := func() *controlapi.ResourceAccess {
		m := e.c.model()
		for _, r := range m.Resources {
			if r.Name == "mfa-db" {
				return m.resourceAccess(alice.session.Principal.ID, alice.session.DeviceID, r, clk.Now())
			}
		}
		t.Fatal("no resource mfa-db")
		return nil
	}
	ceremony := func(register bool, want string) string {
		t.Helper()
		c := e.beginWebAuthn(tok, register, 200)
		res, status, err := br.WebAuthnPage(c.URL, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if res != want {
			t.Fatalf("ceremony (register %v): page says %s: %s", register, res, status)
		}
		if got := e.ceremonyState(tok, c.ID); (want == "done") != (got.State == controlapi.WebAuthnDone) {
			t.Fatalf("ceremony state %+v after the page said %s", got, res)
		}
		return status
	}

	// Before: no second factor; the token says so and mfa-db is refused.
	if a := access(); a == nil || a.State != "mfa" {
		t.Fatalf("before enrollment: %+v", a)
	}
	if c := claims(); c.MFAAt != 0 {
		t.Fatalf("token before enrollment: mfa_at %d", c.MFAAt)
	}

	// Enroll: the virtual authenticator makes a key; the controller stores it.
	if status := ceremony(true, "done"); !strings.Contains(status, "enrolled") {
		t.Fatalf("enroll page: %q", status)
	}
	ids := br.Credentials()
	m := e.c.model()
	stored := m.access.webauthn[alice.session.Principal.ID]
	if len(ids) != 1 || len(stored) != 1 || !bytes.Equal(ids[0], stored[0].Credential.ID) {
		t.Fatalf("authenticator holds %d credentials, controller %d", len(ids), len(stored))
	}

	// Past the window: refused again.
	clk.Add(2 * time.Hour)
	if a := access(); a == nil || a.State != "mfa" {
		t.Fatalf("after the window: %+v", a)
	}
	// A forged signature from the browser is refused and changes nothing.
	br.BogusSignature(true)
	if status := ceremony(false, "failed"); !strings.Contains(status, "WebAuthn verification failed") {
		t.Fatalf("bogus signature: page says %q", status)
	}
	if a := access(); a == nil || a.State != "mfa" {
		t.Fatalf("after a forged assertion: %+v", a)
	}
	br.BogusSignature(false)

	// Step up with the key: mfa-db is allowed, the token carries the time.
	if status := ceremony(false, "done"); !strings.Contains(status, "accepted") {
		t.Fatalf("step-up page: %q", status)
	}
	if a := access(); a != nil && a.State != "ok" {
		t.Fatalf("after step-up: %+v", a)
	}
	c := claims()
	if c.MFAAt != clk.Now().Unix() || len(c.AMR) != 1 || c.AMR[0] != amrHWK {
		t.Fatalf("token after step-up: mfa_at %d (want %d) amr %v", c.MFAAt, clk.Now().Unix(), c.AMR)
	}
	if seen := e.auditCounts(KindWebAuthn); seen["mfa-enroll"] != 1 || seen["mfa-verify"] != 1 || seen["mfa-failed"] != 1 {
		t.Fatalf("audit: %v", seen)
	}
}
