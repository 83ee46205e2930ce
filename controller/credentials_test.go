package controller

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/store"
)

// fakeClock is a Config.Now the test moves.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeClock) Add(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

// connectorWatch is a connector's policy stream.
type connectorWatch struct {
	t  *testing.T
	ps *pushStream
}

func (e *testEnv) watchConnector(name string) (*component, *connectorWatch) {
	e.t.Helper()
	con := e.enroll(KindConnector, name)
	e.heartbeat(con, randomDigest())
	cs := e.openStream(con.http, controlapi.PathConnectorPolicy, "")
	var cp controlapi.ConnectorPolicy
	cs.next(e.t, time.Second, &cp)
	return con, &connectorWatch{t: e.t, ps: cs}
}

// waitRevoked waits (at most d) for a snapshot listing device among the
// revoked devices, and returns how long it took.
func (w *connectorWatch) waitRevoked(device string, d time.Duration) time.Duration {
	w.t.Helper()
	start := time.Now()
	for {
		left := d - time.Since(start)
		if left <= 0 {
			w.t.Fatalf("device %s not revoked at the connector within %s", device, d)
		}
		var cp controlapi.ConnectorPolicy
		w.ps.next(w.t, left, &cp)
		if slices.Contains(cp.RevokedDevices, device) {
			return time.Since(start)
		}
	}
}

func newDeviceKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(pub)
}

func (e *testEnv) serviceLogin(key *controlapi.ServiceKey) controlapi.LoginResponse {
	e.t.Helper()
	st, data := e.call(nil, "POST", controlapi.PathLogin, "", controlapi.LoginRequest{ServiceKey: key, DevicePublicKey: newDeviceKey(e.t)})
	if st != 200 {
		e.t.Fatalf("service login: %d %s", st, data)
	}
	var lr controlapi.LoginResponse
	mustJSON(e.t, data, &lr)
	return lr
}

func TestDeletingServiceKeyEndsItsSessions(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	e.apply(testYAML)
	con, cw := e.watchConnector("corp-a")
	k1, err := e.c.CreateServiceKey(context.Background(), "ci", 0)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := e.c.CreateServiceKey(context.Background(), "ci", 0)
	if err != nil {
		t.Fatal(err)
	}
	s1, s2 := e.serviceLogin(k1), e.serviceLogin(k2)
	for _, s := range []controlapi.LoginResponse{s1, s2} {
		if _, err := e.c.IssueConnectionToken(s.SessionToken, con.id); err != nil {
			t.Fatal(err)
		}
	}
	e.admin("DELETE", "/api/v1/service-accounts/ci/keys/"+k1.KeyID, nil, 204)
	if _, err := e.c.IssueConnectionToken(s1.SessionToken, con.id); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("token for a session of a deleted key: %v", err)
	}
	if st, data := e.call(nil, "POST", controlapi.PathConnectionToken, s1.SessionToken, controlapi.TokenRequest{ConnectorID: con.id}); st != 401 {
		t.Fatalf("token over HTTP after key deletion: %d %s", st, data)
	}
	took := cw.waitRevoked(s1.DeviceID, time.Second)
	t.Logf("device of the deleted key's session revoked at the connector after %s", took)
	// The other key's session is untouched.
	if _, err := e.c.IssueConnectionToken(s2.SessionToken, con.id); err != nil {
		t.Fatalf("session of the remaining key: %v", err)
	}
	if s := e.c.model().SessionByID[sessionIDOf(t, e, s1.SessionToken)]; s == nil || !s.Revoked || s.RevokeReason != "service key deleted" {
		t.Fatalf("stored session: %+v", s)
	}
}

func sessionIDOf(t *testing.T, e *testEnv, token string) string {
	t.Helper()
	for _, s := range e.c.model().SessionByID {
		if s.TokenHash == sha256Hex(token) {
			return s.ID
		}
	}
	t.Fatal("no such session")
	return ""
}

func TestPasswordChangeEndsSessions(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	e.apply(testYAML)
	con, cw := e.watchConnector("corp-a")
	alice := e.login("alice@example.com", "correct horse")
	bob := e.login("bob@example.com", "battery staple")
	if _, err := e.c.IssueConnectionToken(alice.session.SessionToken, con.id); err != nil {
		t.Fatal(err)
	}
	// Through apply.
	changed := fastYAML(strings.Replace(testYAML, `password: "correct horse"`, `password: "new horse"`, 1))
	if _, err := e.c.ApplyYAML(context.Background(), []byte(changed), false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.IssueConnectionToken(alice.session.SessionToken, con.id); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("old session after password change (apply): %v", err)
	}
	cw.waitRevoked(alice.session.DeviceID, time.Second)
	if _, _, err := e.c.session(bob.session.SessionToken); err != nil {
		t.Fatalf("another user's session ended: %v", err)
	}
	// The same device signs in with the new password.
	st, data := e.call(nil, "POST", controlapi.PathLogin, "", controlapi.LoginRequest{Email: "alice@example.com", Password: "new horse",
		DevicePublicKey: base64.StdEncoding.EncodeToString(alice.pub)})
	if st != 200 {
		t.Fatalf("sign-in with the new password on the same device: %d %s", st, data)
	}
	var again controlapi.LoginResponse
	mustJSON(t, data, &again)
	if _, err := e.c.IssueConnectionToken(again.SessionToken, con.id); err != nil {
		t.Fatal(err)
	}
	// Through the REST API.
	e.admin("PUT", "/api/v1/users/alice@example.com", map[string]any{"email": "alice@example.com", "password": "newer horse"}, 200)
	if _, err := e.c.IssueConnectionToken(again.SessionToken, con.id); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("old session after password change (REST): %v", err)
	}
	// The audit log names the credential change and the revocations.
	var audit struct {
		Items []store.AuditEntry `json:"items"`
	}
	mustJSON(t, e.admin("GET", "/api/v1/audit?limit=1000", nil, 200), &audit)
	changes, revokes := 0, 0
	for _, a := range audit.Items {
		if a.Action == "credential-change" && a.Name == "alice@example.com" {
			changes++
		}
		if a.Action == "revoke" && a.Kind == KindSession && strings.Contains(string(a.After), "password changed") {
			revokes++
		}
	}
	if changes != 2 || revokes != 2 {
		t.Fatalf("audit: %d credential changes, %d revocations: %+v", changes, revokes, audit.Items)
	}
}

func TestServiceKeyExpiryEndsSession(t *testing.T) {
	clock := newFakeClock()
	e := newTestController(t, t.TempDir(), func(c *Config) { c.Now = clock.Now })
	e.apply(testYAML)
	con, cw := e.watchConnector("corp-a")
	key, err := e.c.CreateServiceKey(context.Background(), "ci", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	lr := e.serviceLogin(key)
	keyExpiry := clock.Now().Add(time.Hour)
	if lr.ExpiresAt.After(keyExpiry) {
		t.Fatalf("session ends %s, after its key (%s)", lr.ExpiresAt, keyExpiry)
	}
	if _, err := e.c.IssueConnectionToken(lr.SessionToken, con.id); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Hour + time.Second)
	if _, err := e.c.IssueConnectionToken(lr.SessionToken, con.id); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("token after the key expired: %v", err)
	}
	took := cw.waitRevoked(lr.DeviceID, time.Second)
	t.Logf("session ended at the connector %s after its key expired", took)
}

// TestLegacySessionsGetTheirCredential: sessions stored before sessions
// recorded their credential are bound to it at start, so a later password
// change still ends them.
func TestLegacySessionsGetTheirCredential(t *testing.T) {
	dir := t.TempDir()
	e := newTestController(t, dir, nil)
	e.apply(testYAML)
	alice := e.login("alice@example.com", "correct horse")
	_, _, err := e.c.store.Update(context.Background(), func(tx store.Tx) error {
		return updateRecord(tx, KindSession, sessionIDOf(t, e, alice.session.SessionToken), func(v *Session) bool { v.Credential = ""; return true })
	})
	if err != nil {
		t.Fatal(err)
	}
	e.stop()
	e = newTestController(t, dir, nil)
	if _, _, err := e.c.session(alice.session.SessionToken); err != nil {
		t.Fatalf("legacy session after restart: %v", err)
	}
	if s := e.c.model().SessionByID[sessionIDOf(t, e, alice.session.SessionToken)]; s.Credential == "" || !strings.HasPrefix(s.Credential, "password:") {
		t.Fatalf("credential not backfilled: %+v", s)
	}
	e.admin("PUT", "/api/v1/users/alice@example.com", map[string]any{"email": "alice@example.com", "password": "new horse"}, 200)
	if _, _, err := e.c.session(alice.session.SessionToken); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("legacy session after password change: %v", err)
	}
}

func TestCredentialProblem(t *testing.T) {
	now := time.Now()
	live := now.Add(time.Hour)
	u := &User{ID: "usr_1", PasswordHash: "$argon2id$a", IdPIssuer: "https://idp.example", IdPSubject: "b"}
	sa := &ServiceAccount{ID: "sa_1", Keys: []ServiceKeyRec{{KeyID: "key_1"}, {KeyID: "key_2", ExpiresAt: now}}}
	for _, tc := range []struct {
		name string
		s    Session
		u    *User
		sa   *ServiceAccount
		want string
	}{
		{"password ok", Session{Credential: passwordCredential(u.PasswordHash), ExpiresAt: live}, u, nil, ""},
		{"password changed", Session{Credential: passwordCredential("$argon2id$old"), ExpiresAt: live}, u, nil, "password changed"},
		{"expired", Session{Credential: passwordCredential(u.PasswordHash), ExpiresAt: now}, u, nil, "expired"},
		{"account removed", Session{Credential: passwordCredential(u.PasswordHash), ExpiresAt: live}, nil, nil, "account removed"},
		{"key ok", Session{Credential: serviceKeyCredential("key_1"), ExpiresAt: live}, nil, sa, ""},
		{"key expired", Session{Credential: serviceKeyCredential("key_2"), ExpiresAt: live}, nil, sa, "service key expired"},
		{"key deleted", Session{Credential: serviceKeyCredential("key_3"), ExpiresAt: live}, nil, sa, "service key deleted"},
		{"subject ok", Session{Credential: externalCredential("oidc", "https://idp.example", "b"), ExpiresAt: live}, u, nil, ""},
		{"subject with #", Session{Credential: externalCredential("oidc", "https://idp.example", "a#b"), ExpiresAt: live}, u, nil, "identity provider binding changed"},
		{"other issuer", Session{Credential: externalCredential("oidc", "https://other.example", "b"), ExpiresAt: live}, u, nil, "identity provider binding changed"},
		{"admin binding, no issuer yet", Session{Credential: externalCredential("oidc", "https://idp.example", "b"), ExpiresAt: live},
			&User{ID: "usr_1", IdPSubject: "b"}, nil, ""},
		{"backfilled, nothing left", Session{Credential: "removed:password", ExpiresAt: live}, u, nil, "credential removed"},
	} {
		if got := credentialProblem(&tc.s, tc.u, tc.sa, now); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
