package oidcauth_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/oidcauth"
	"postern.dev/postern/controller/oidcauth/oidctest"
)

// rawIDToken redeems a code directly at the provider, as the client
// other-app would, and returns its ID token.
func rawIDToken(t *testing.T, idp *oidctest.Provider, g controlapi.OIDCCodeGrant, id, secret string) string {
	t.Helper()
	return idp.RedeemIDToken(t, id, secret, g.RedirectURI, g.Code, g.CodeVerifier)
}

func pollUntil(t *testing.T, p *oidcauth.Provider, flow string) (*oidcauth.Grant, error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		g, err := p.DevicePoll(context.Background(), flow)
		if errors.Is(err, oidcauth.ErrPending) || errors.Is(err, oidcauth.ErrSlowDown) {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		return g, err
	}
	t.Fatal("device sign-in still pending after 30s")
	return nil, nil
}

func TestDeviceFlow(t *testing.T) {
	idp := startIdP(t)
	p := newProvider(t, idp, nil)
	if !p.DeviceFlow() || !p.PublicConfig().DeviceFlow {
		t.Fatal("the provider offers the device grant but DeviceFlow() is false")
	}
	ctx := context.Background()

	t.Run("approved", func(t *testing.T) {
		ds, err := p.DeviceStart(ctx)
		if err != nil {
			t.Fatalf("DeviceStart: %v", err)
		}
		if ds.UserCode == "" || ds.VerificationURI == "" || ds.IntervalSeconds <= 0 {
			t.Fatalf("DeviceStart = %+v", ds)
		}
		if _, err := p.DevicePoll(ctx, ds.Flow); !errors.Is(err, oidcauth.ErrPending) {
			t.Fatalf("first poll = %v, want ErrPending", err)
		}
		if _, err := oidctest.NewBrowser().ApproveDevice(ds.VerificationURI, ds.UserCode, "bob", "bob-pw"); err != nil {
			t.Fatalf("approve: %v", err)
		}
		g, err := pollUntil(t, p, ds.Flow)
		if err != nil {
			t.Fatalf("DevicePoll: %v", err)
		}
		if g.Identity.Email != "bob@example.com" || !slices.Equal(g.Identity.Groups, []string{"sales"}) || g.RefreshToken == "" {
			t.Fatalf("grant = %+v", g)
		}
	})

	t.Run("refused", func(t *testing.T) {
		ds, err := p.DeviceStart(ctx)
		if err != nil {
			t.Fatalf("DeviceStart: %v", err)
		}
		if _, err := oidctest.NewBrowser().DenyDevice(ds.VerificationURI, ds.UserCode); err != nil {
			t.Fatalf("deny: %v", err)
		}
		if _, err := pollUntil(t, p, ds.Flow); !errors.Is(err, oidcauth.ErrRefused) {
			t.Fatalf("DevicePoll after refusal = %v, want ErrRefused", err)
		}
	})

	t.Run("handle of the other kind", func(t *testing.T) {
		_, challenge := pkce(t)
		st, err := p.Start(controlapi.OIDCStartRequest{RedirectURI: "http://127.0.0.1:1/callback", CodeChallenge: challenge, CodeChallengeMethod: "S256"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.DevicePoll(ctx, st.Flow); !errors.Is(err, oidcauth.ErrBadRequest) {
			t.Fatalf("DevicePoll(browser flow) = %v, want ErrBadRequest", err)
		}
	})
}

// memStore is an in-memory oidcauth.SessionStore.
type memStore struct {
	mu       sync.Mutex
	sessions map[string]oidcauth.Session
	groups   map[string][]string
	revoked  map[string]error
}

func (m *memStore) DueOIDCSessions(_ context.Context, _ time.Time) ([]oidcauth.Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []oidcauth.Session
	for _, s := range m.sessions {
		out = append(out, s)
	}
	return out, nil
}

func (m *memStore) UpdateOIDCSession(_ context.Context, id string, g *oidcauth.Grant) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[id]
	s.RefreshToken = g.RefreshToken
	m.sessions[id] = s
	m.groups[id] = g.Identity.Groups
	return nil
}

func (m *memStore) RevokeOIDCSession(_ context.Context, id string, reason error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.sessions, id)
	m.revoked[id] = reason
	return nil
}

func TestRefreshDueRevokesWhenProviderStopsVouching(t *testing.T) {
	idp := startIdP(t)
	p := newProvider(t, idp, nil)
	ctx := context.Background()
	st := &memStore{sessions: map[string]oidcauth.Session{}, groups: map[string][]string{}, revoked: map[string]error{}}
	for _, u := range []struct{ login, pw string }{{"alice", "alice-pw"}, {"bob", "bob-pw"}} {
		grant, err := browserSignIn(t, p, u.login, u.pw)
		if err != nil {
			t.Fatal(err)
		}
		g, err := p.Exchange(ctx, grant)
		if err != nil {
			t.Fatal(err)
		}
		st.sessions[u.login] = oidcauth.Session{ID: u.login, Subject: g.Identity.Subject, RefreshToken: g.RefreshToken}
	}
	idp.Disable(t, "bob")
	up, rev, err := p.RefreshDue(ctx, st)
	if err != nil || up != 1 || rev != 1 {
		t.Fatalf("RefreshDue = %d updated, %d revoked, %v; want 1, 1, nil", up, rev, err)
	}
	if _, ok := st.revoked["bob"]; !ok || !errors.Is(st.revoked["bob"], oidcauth.ErrRevoked) {
		t.Fatalf("bob not revoked: %v", st.revoked)
	}
	if !slices.Equal(st.groups["alice"], []string{"engineering", "staff"}) {
		t.Fatalf("alice's groups after refresh = %v", st.groups["alice"])
	}
}
