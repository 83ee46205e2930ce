package controller

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/controller/adminapi"
	"postern.dev/postern/controller/oidcauth/oidctest"
)

// Identity provider accounts that claim the addresses of pre-provisioned
// Postern accounts with every form of email_verified.
func init() {
	for login, a := range map[string]oidctest.Account{
		// Cognito style: the claim is a string.
		"str-false": {Password: "pw", Email: "alice@example.com", EmailVerifiedClaim: "false"},
		"str-true":  {Password: "pw", Email: "bob@example.com", EmailVerifiedClaim: "true"},
		// Entra ID style: no email_verified claim at all.
		"entra":   {Password: "pw", Email: "alice@example.com", EmailVerifiedClaim: oidctest.OmitEmailVerified},
		"grabber": {Password: "pw", Email: "carol@example.com", EmailVerifiedClaim: oidctest.OmitEmailVerified},
		"newbie":  {Password: "pw", Email: "newbie@example.com", EmailVerifiedClaim: oidctest.OmitEmailVerified},
	} {
		ssoAccounts[login] = a
	}
}

const verifiedYAML = ssoYAML + `users:
  - email: alice@example.com
    password: "correct horse"
  - email: bob@example.com
    password: "battery staple"
`

func TestSSOEmailVerifiedLinking(t *testing.T) {
	t.Parallel()
	e := newSSOEnv(t, func(oc *OIDCConfig) { oc.RefreshInterval = time.Hour })
	yaml := strings.Replace(verifiedYAML, "  - name: ops\n    users: []", "  - name: ops\n    users: [carol@example.com]", 1)
	e.apply(yaml)

	// "false" as a string is false: refused at the provider step.
	if _, _, err := e.browserLogin(t, "str-false", "pw"); err == nil || !strings.Contains(err.Error(), "not verified") {
		t.Fatalf("email_verified \"false\": %v", err)
	}
	// "true" as a string links the pre-provisioned account.
	lr, _, err := e.browserLogin(t, "str-true", "pw")
	if err != nil {
		t.Fatalf("email_verified \"true\": %v", err)
	}
	if lr.Principal.Name != "bob@example.com" || e.c.model().UserByEmail["bob@example.com"].IdPSubject != "str-true" {
		t.Fatalf("str-true signed in as %+v", lr.Principal)
	}
	// No claim (Entra ID): the existing account is not taken over by e-mail.
	_, _, err = e.browserLogin(t, "entra", "pw")
	if err == nil || !strings.Contains(err.Error(), "oidc_subject") {
		t.Fatalf("unverified email claiming an existing account: %v", err)
	}
	if u := e.c.model().UserByEmail["alice@example.com"]; u.IdPSubject != "" {
		t.Fatalf("alice bound to %q", u.IdPSubject)
	}
	// ...nor an address a group names.
	if _, _, err := e.browserLogin(t, "grabber", "pw"); err == nil || !strings.Contains(err.Error(), "group ops") {
		t.Fatalf("unverified email named by a group: %v", err)
	}
	// An address nobody holds makes a new account.
	if lr, _, err := e.browserLogin(t, "newbie", "pw"); err != nil || lr.Principal.Name != "newbie@example.com" {
		t.Fatalf("new unverified account: %+v %v", lr, err)
	}
	// An administrator binds the subject: it now signs in as alice.
	e.admin("PUT", "/api/v1/users/alice@example.com", map[string]any{"email": "alice@example.com", "oidc_subject": "entra"}, 200)
	lr, _, err = e.browserLogin(t, "entra", "pw")
	if err != nil || lr.Principal.Name != "alice@example.com" {
		t.Fatalf("bound subject: %+v %v", lr, err)
	}
	if err := e.mayUse(t, lr.SessionToken, e.corpA); err != nil && !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("bound session: %v", err)
	}
	var view adminapi.UserView
	mustJSON(t, e.admin("GET", "/api/v1/users/alice@example.com", nil, 200), &view)
	if view.OIDCSubject != "entra" || view.OIDCIssuer != e.idp.Issuer {
		t.Fatalf("user view: %+v", view)
	}
	// Rebinding alice to another subject ends the old subject's session.
	if _, err := e.c.ApplyYAML(context.Background(), []byte(fastYAML(strings.Replace(yaml, "  - email: alice@example.com\n", "  - email: alice@example.com\n    oidc_subject: someone-else\n", 1))), false); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.c.session(lr.SessionToken); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("session of a subject no longer bound: %v", err)
	}
	// Two accounts cannot bind one subject.
	bad := strings.Replace(yaml, "  - email: bob@example.com\n", "  - email: bob@example.com\n    oidc_subject: x\n", 1)
	bad = strings.Replace(bad, "  - email: alice@example.com\n", "  - email: alice@example.com\n    oidc_subject: x\n", 1)
	if _, err := e.c.ApplyYAML(context.Background(), []byte(fastYAML(bad)), true); err == nil || !strings.Contains(err.Error(), "already bound") {
		t.Fatalf("one subject bound twice: %v", err)
	}
}
