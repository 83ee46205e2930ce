package controller

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
)

func TestExternalSignIn(t *testing.T) {
	e := newTestController(t, t.TempDir(), func(c *Config) {
		c.VerifyIDToken = func(ctx context.Context, raw string) (*ExternalIdentity, error) {
			if raw != "good-token" {
				return nil, errors.New("bad signature")
			}
			return &ExternalIdentity{Method: "oidc", Issuer: "https://idp.example", Subject: "u-42", Email: "Dana@Example.com", Groups: []string{"ops", "not-a-postern-group"}}, nil
		}
	})
	if err := e.c.Handle("GET /api/v1/client/extension", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, 200, map[string]bool{"enabled": true})
	})); err != nil {
		t.Fatal(err)
	}
	e.apply(testYAML)
	con := e.enroll(KindConnector, "lab-a")
	e.heartbeat(con, randomDigest())
	// A conflicting route is refused, not a panic.
	if err := e.c.Handle("GET /api/v1/client/extension", http.NotFoundHandler()); !errors.Is(err, ErrRoute) {
		t.Fatalf("duplicate Handle: %v", err)
	}
	if err := e.c.Handle("GET "+controlapi.PathOIDCConfig, http.NotFoundHandler()); !errors.Is(err, ErrRoute) {
		t.Fatalf("Handle over a built-in route: %v", err)
	}
	if st, body := e.call(nil, "GET", "/api/v1/client/extension", "", nil); st != 200 {
		t.Fatalf("mounted route: %d %s", st, body)
	}
	// Without OIDC configured, single sign-on says so.
	if st, body := e.call(nil, "GET", controlapi.PathOIDCConfig, "", nil); st != 200 || !strings.Contains(string(body), `"enabled": false`) {
		t.Fatalf("oidc config without OIDC: %d %s", st, body)
	}
	if st, body := e.call(nil, "POST", controlapi.PathOIDCDeviceStart, "", "{}"); st != http.StatusNotImplemented {
		t.Fatalf("device start without OIDC: %d %s", st, body)
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	st, data := e.call(nil, "POST", controlapi.PathLogin, "", controlapi.LoginRequest{IDToken: "bad", DevicePublicKey: base64.StdEncoding.EncodeToString(pub)})
	if st != 401 {
		t.Fatalf("bad id token: %d %s", st, data)
	}
	st, data = e.call(nil, "POST", controlapi.PathLogin, "", controlapi.LoginRequest{IDToken: "good-token", DevicePublicKey: base64.StdEncoding.EncodeToString(pub)})
	if st != 200 {
		t.Fatalf("id token login: %d %s", st, data)
	}
	var lr controlapi.LoginResponse
	mustJSON(t, data, &lr)
	if lr.Principal.Name != "dana@example.com" || !slices.Equal(lr.Principal.Groups, []string{"ops"}) {
		t.Fatalf("principal: %+v", lr.Principal)
	}
	// IdP group "ops" grants the lab resource.
	if _, err := e.c.IssueConnectionToken(lr.SessionToken, con.id); err != nil {
		t.Fatal(err)
	}
	// The OIDC user survives an apply that does not list it.
	if p := e.apply(testYAML); !p.Empty() {
		t.Fatalf("apply would touch the OIDC user: %s", p)
	}
	// Refresh bookkeeping and revocation.
	ss := e.c.ExternalSessions("oidc")
	if len(ss) != 1 || ss[0].Subject != "u-42" {
		t.Fatalf("external sessions: %+v", ss)
	}
	if err := e.c.UpdateExternalSession(context.Background(), ss[0].SessionID, []string{}, json.RawMessage(`{"refresh":"r2"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.IssueConnectionToken(lr.SessionToken, con.id); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("token after the IdP dropped the group: %v", err)
	}
	if ss := e.c.ExternalSessions("oidc"); string(ss[0].External) != `{"refresh":"r2"}` {
		t.Fatalf("external state: %s", ss[0].External)
	}
	if err := e.c.RevokeSession(context.Background(), "oidc-refresher", ss[0].SessionID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.c.session(lr.SessionToken); err == nil {
		t.Fatal("session alive after RevokeSession")
	}
	if len(e.c.ExternalSessions("oidc")) != 0 {
		t.Fatal("revoked session still listed")
	}
}

// External users are keyed by issuer and subject: a network.yaml account is
// linked on its first sign-in, email changes are followed, and no identity
// takes over an account bound to another.
func TestExternalIdentityKeying(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	e.apply(testYAML)
	ctx := context.Background()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	dev := controlapi.LoginRequest{DevicePublicKey: base64.StdEncoding.EncodeToString(pub)}
	sign := func(sub, email string, groups ...string) (*controlapi.LoginResponse, error) {
		return e.c.SignInExternal(ctx, ExternalIdentity{Method: "oidc", Issuer: "https://idp.example", Subject: sub, Email: email, EmailVerified: true, Groups: groups}, dev)
	}
	// Without a verified email, bob's account is not linked by address.
	if _, err := e.c.SignInExternal(ctx, ExternalIdentity{Method: "oidc", Issuer: "https://idp.example", Subject: "b-1", Email: "bob@example.com"}, dev); !errors.Is(err, ErrIdentityConflict) {
		t.Fatalf("unverified email linking bob: %v", err)
	}
	// alice is a network.yaml account: linked, keeps her yaml groups.
	lr, err := sign("a-1", "Alice@example.com", "ops")
	if err != nil {
		t.Fatal(err)
	}
	alice := e.c.model().UserByEmail["alice@example.com"]
	if lr.Principal.ID != alice.ID || alice.IdPSubject != "a-1" || alice.Source != "builtin" || !slices.Equal(lr.Principal.Groups, []string{"engineering", "ops"}) {
		t.Fatalf("linked alice: %+v, record %+v", lr.Principal, alice)
	}
	// Another subject claiming her address is refused.
	if _, err := sign("intruder", "alice@example.com"); !errors.Is(err, ErrIdentityConflict) {
		t.Fatalf("second subject for alice: %v", err)
	}
	// An OIDC user renamed at the provider keeps its account.
	d1, err := sign("d-1", "dana@example.com")
	if err != nil {
		t.Fatal(err)
	}
	d2, err := sign("d-1", "dana.new@example.com")
	if err != nil || d2.Principal.ID != d1.Principal.ID || d2.Principal.Name != "dana.new@example.com" {
		t.Fatalf("renamed dana: %+v, %v (was %+v)", d2, err, d1.Principal)
	}
	if _, ok := e.c.model().UserByEmail["dana@example.com"]; ok {
		t.Fatal("the old email is still a user")
	}
	// ... but not onto an address another account holds.
	if _, err := sign("d-1", "bob@example.com"); !errors.Is(err, ErrIdentityConflict) {
		t.Fatalf("rename onto bob: %v", err)
	}
	// The refused attempts made no users.
	if n := len(e.c.model().Users); n != 3 {
		t.Fatalf("%d users, want alice, bob and dana", n)
	}
}
