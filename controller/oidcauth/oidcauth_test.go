package oidcauth_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/oidcauth"
	"postern.dev/postern/controller/oidcauth/oidctest"
)

var accounts = map[string]oidctest.Account{
	"alice": {Password: "alice-pw", Email: "alice@example.com", Name: "Alice", Groups: []string{"engineering", "staff"}, Roles: []string{"db-admin"}},
	"bob":   {Password: "bob-pw", Email: "bob@example.com", Groups: []string{"sales"}},
	// mallory claims alice's address, which the provider has not verified.
	"mallory": {Password: "mallory-pw", Email: "alice@example.com", Unverified: true, Groups: []string{"engineering"}},
}

func startIdP(t *testing.T) *oidctest.Provider {
	t.Helper()
	return oidctest.Start(t, oidctest.Options{
		Clients: []oidctest.Client{
			{ID: "postern", Secret: "postern-secret"},
			{ID: "other-app", Secret: "other-secret"},
		},
		Accounts: accounts,
	})
}

func newProvider(t *testing.T, idp *oidctest.Provider, mod func(*oidcauth.Config)) *oidcauth.Provider {
	t.Helper()
	cfg := oidcauth.Config{Issuer: idp.Issuer, ClientID: "postern", ClientSecret: "postern-secret", Scopes: []string{"groups"}}
	if mod != nil {
		mod(&cfg)
	}
	p, err := oidcauth.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

// loopback is a client's RFC 8252 redirect listener: it records the query.
type loopback struct {
	URL   string
	mu    sync.Mutex
	query url.Values
}

func newLoopback(t *testing.T) *loopback {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lb := &loopback{URL: "http://" + ln.Addr().String() + "/callback"}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lb.mu.Lock()
		lb.query = r.URL.Query()
		lb.mu.Unlock()
		_, _ = w.Write([]byte("signed in, you may close this page"))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return lb
}

func (l *loopback) got() url.Values {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.query
}

func pkce(t *testing.T) (verifier, challenge string) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	v := base64.RawURLEncoding.EncodeToString(b)
	return v, oidcauth.S256(v)
}

// browserSignIn runs the browser flow end to end and returns what the
// loopback listener received.
func browserSignIn(t *testing.T, p *oidcauth.Provider, login, password string) (controlapi.OIDCCodeGrant, error) {
	t.Helper()
	lb := newLoopback(t)
	verifier, challenge := pkce(t)
	st, err := p.Start(controlapi.OIDCStartRequest{RedirectURI: lb.URL, CodeChallenge: challenge, CodeChallengeMethod: "S256"})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if _, err := oidctest.NewBrowser().SignIn(st.AuthURL, login, password); err != nil {
		return controlapi.OIDCCodeGrant{}, err
	}
	q := lb.got()
	if q.Get("code") == "" || q.Get("state") != st.State {
		t.Fatalf("loopback got %v, want a code and state %q", q, st.State)
	}
	return controlapi.OIDCCodeGrant{Flow: st.Flow, State: q.Get("state"), Code: q.Get("code"), CodeVerifier: verifier, RedirectURI: lb.URL}, nil
}

func TestBrowserFlowGroupsAndRefresh(t *testing.T) {
	idp := startIdP(t)
	p := newProvider(t, idp, nil)
	ctx := context.Background()

	grant, err := browserSignIn(t, p, "alice", "alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	g, err := p.Exchange(ctx, grant)
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	if g.Identity.Subject != "alice" || g.Identity.Email != "alice@example.com" || g.Identity.Issuer != idp.Issuer {
		t.Fatalf("identity = %+v", g.Identity)
	}
	if !slices.Equal(g.Identity.Groups, []string{"engineering", "staff"}) {
		t.Fatalf("groups = %v, want [engineering staff]", g.Identity.Groups)
	}
	if g.RefreshToken == "" {
		t.Fatal("no refresh token kept")
	}

	// Groups follow the provider at each refresh.
	idp.SetGroups(t, "alice", []string{"engineering"})
	g2, err := p.Refresh(ctx, "alice", g.RefreshToken)
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if !slices.Equal(g2.Identity.Groups, []string{"engineering"}) {
		t.Fatalf("groups after refresh = %v", g2.Identity.Groups)
	}

	// The provider stops vouching: the refresh revokes.
	idp.Disable(t, "alice")
	if _, err := p.Refresh(ctx, "alice", g2.RefreshToken); !errors.Is(err, oidcauth.ErrRevoked) {
		t.Fatalf("Refresh of a disabled user: %v, want ErrRevoked", err)
	}
}

func TestGroupsFromConfiguredClaim(t *testing.T) {
	idp := startIdP(t)
	p := newProvider(t, idp, func(c *oidcauth.Config) { c.GroupsClaim = "roles" })
	grant, err := browserSignIn(t, p, "alice", "alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	g, err := p.Exchange(context.Background(), grant)
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	if !slices.Equal(g.Identity.Groups, []string{"db-admin"}) {
		t.Fatalf("groups from roles = %v, want [db-admin]", g.Identity.Groups)
	}
}

func TestRefusedSignIns(t *testing.T) {
	idp := startIdP(t)
	p := newProvider(t, idp, nil)
	ctx := context.Background()

	t.Run("wrong password", func(t *testing.T) {
		lb := newLoopback(t)
		_, challenge := pkce(t)
		st, err := p.Start(controlapi.OIDCStartRequest{RedirectURI: lb.URL, CodeChallenge: challenge, CodeChallengeMethod: "S256"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := oidctest.NewBrowser().SignIn(st.AuthURL, "alice", "guess"); !errors.Is(err, oidctest.ErrLoginRejected) {
			t.Fatalf("SignIn with a wrong password: %v", err)
		}
		if q := lb.got(); q != nil {
			t.Fatalf("the client received %v after a failed login", q)
		}
	})

	t.Run("user cancels", func(t *testing.T) {
		lb := newLoopback(t)
		_, challenge := pkce(t)
		st, err := p.Start(controlapi.OIDCStartRequest{RedirectURI: lb.URL, CodeChallenge: challenge, CodeChallengeMethod: "S256"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := oidctest.NewBrowser().Refuse(st.AuthURL); err != nil {
			t.Fatal(err)
		}
		if q := lb.got(); q.Get("error") != "access_denied" || q.Get("code") != "" {
			t.Fatalf("loopback got %v, want error=access_denied", q)
		}
	})

	t.Run("unverified email", func(t *testing.T) {
		grant, err := browserSignIn(t, p, "mallory", "mallory-pw")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Exchange(ctx, grant); !errors.Is(err, oidcauth.ErrRefused) || !strings.Contains(err.Error(), "not verified") {
			t.Fatalf("Exchange with an unverified email = %v, want ErrRefused", err)
		}
		lax := newProvider(t, idp, func(c *oidcauth.Config) { c.AllowUnverifiedEmail = true })
		grant, err = browserSignIn(t, lax, "mallory", "mallory-pw")
		if err != nil {
			t.Fatal(err)
		}
		g, err := lax.Exchange(ctx, grant)
		if err != nil || g.Identity.EmailVerified || g.Identity.Subject != "mallory" {
			t.Fatalf("Exchange allowing unverified email = %+v, %v", g, err)
		}
	})

	t.Run("code replayed", func(t *testing.T) {
		grant, err := browserSignIn(t, p, "bob", "bob-pw")
		if err != nil {
			t.Fatal(err)
		}
		g, err := p.Exchange(ctx, grant)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Exchange(ctx, grant); !errors.Is(err, oidcauth.ErrRefused) {
			t.Fatalf("second Exchange: %v, want ErrRefused", err)
		}
		// RFC 6749 section 4.1.2: the provider revokes what the code gave.
		if _, err := p.Refresh(ctx, "bob", g.RefreshToken); !errors.Is(err, oidcauth.ErrRevoked) {
			t.Fatalf("Refresh after a replayed code: %v, want ErrRevoked", err)
		}
	})

	t.Run("wrong verifier", func(t *testing.T) {
		grant, err := browserSignIn(t, p, "bob", "bob-pw")
		if err != nil {
			t.Fatal(err)
		}
		other, _ := pkce(t)
		grant.CodeVerifier = other
		if _, err := p.Exchange(ctx, grant); !errors.Is(err, oidcauth.ErrBadRequest) {
			t.Fatalf("Exchange with another verifier: %v", err)
		}
	})

	t.Run("tampered state", func(t *testing.T) {
		grant, err := browserSignIn(t, p, "bob", "bob-pw")
		if err != nil {
			t.Fatal(err)
		}
		grant.State = "x" + grant.State
		if _, err := p.Exchange(ctx, grant); !errors.Is(err, oidcauth.ErrBadRequest) {
			t.Fatalf("Exchange with another state: %v", err)
		}
	})

	t.Run("flow of another deployment", func(t *testing.T) {
		grant, err := browserSignIn(t, p, "bob", "bob-pw")
		if err != nil {
			t.Fatal(err)
		}
		p2 := newProvider(t, idp, nil) // another random flow key
		if _, err := p2.Exchange(ctx, grant); !errors.Is(err, oidcauth.ErrBadRequest) {
			t.Fatalf("Exchange at another deployment: %v", err)
		}
	})

	t.Run("expired flow", func(t *testing.T) {
		later := time.Now().Add(time.Hour)
		p3 := newProvider(t, idp, func(c *oidcauth.Config) {
			c.FlowKey = []byte("0123456789abcdef0123456789abcdef")
		})
		p4 := newProvider(t, idp, func(c *oidcauth.Config) {
			c.FlowKey = []byte("0123456789abcdef0123456789abcdef")
			c.Now = func() time.Time { return later }
		})
		grant, err := browserSignIn(t, p3, "bob", "bob-pw")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p4.Exchange(ctx, grant); !errors.Is(err, oidcauth.ErrExpired) {
			t.Fatalf("Exchange an hour later: %v", err)
		}
		// The same key, in time: another replica finishes the sign-in.
		if _, err := p3.Exchange(ctx, grant); err != nil {
			t.Fatalf("Exchange at a replica with the same key: %v", err)
		}
	})
}

func TestStartRejectsBadInput(t *testing.T) {
	idp := startIdP(t)
	p := newProvider(t, idp, nil)
	_, challenge := pkce(t)
	for name, req := range map[string]controlapi.OIDCStartRequest{
		"foreign redirect": {RedirectURI: "http://evil.example/callback", CodeChallenge: challenge, CodeChallengeMethod: "S256"},
		"other path":       {RedirectURI: "http://127.0.0.1:4000/other", CodeChallenge: challenge, CodeChallengeMethod: "S256"},
		"plain method":     {RedirectURI: "http://127.0.0.1:4000/callback", CodeChallenge: challenge, CodeChallengeMethod: "plain"},
		"short challenge":  {RedirectURI: "http://127.0.0.1:4000/callback", CodeChallenge: "abc", CodeChallengeMethod: "S256"},
	} {
		if _, err := p.Start(req); !errors.Is(err, oidcauth.ErrBadRequest) {
			t.Errorf("%s: Start = %v, want ErrBadRequest", name, err)
		}
	}
	if _, err := p.Start(controlapi.OIDCStartRequest{RedirectURI: "http://[::1]:5999/callback", CodeChallenge: challenge, CodeChallengeMethod: "S256"}); err != nil {
		t.Errorf("IPv6 loopback on any port: %v", err)
	}
}

func TestIDTokenWithWrongAudienceRefused(t *testing.T) {
	idp := startIdP(t)
	ctx := context.Background()
	// A genuine ID token from the same provider, issued to another client.
	other := newProvider(t, idp, func(c *oidcauth.Config) { c.ClientID, c.ClientSecret = "other-app", "other-secret" })
	grant, err := browserSignIn(t, other, "alice", "alice-pw")
	if err != nil {
		t.Fatal(err)
	}
	raw := rawIDToken(t, idp, grant, "other-app", "other-secret")

	p := newProvider(t, idp, nil)
	if _, err := p.VerifyIDToken(ctx, raw); !errors.Is(err, oidcauth.ErrRefused) {
		t.Fatalf("VerifyIDToken(token for other-app) = %v, want ErrRefused", err)
	}
	// The same token is fine for its own audience.
	if id, err := other.VerifyIDToken(ctx, raw); err != nil || id.Email != "alice@example.com" {
		t.Fatalf("VerifyIDToken at its audience = %+v, %v", id, err)
	}
	// A tampered signature is refused too.
	if _, err := other.VerifyIDToken(ctx, raw[:len(raw)-4]+"AAAA"); !errors.Is(err, oidcauth.ErrRefused) {
		t.Fatalf("tampered token: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	ctx := context.Background()
	for name, cfg := range map[string]oidcauth.Config{
		"no issuer":      {ClientID: "a", ClientSecret: "b"},
		"no client":      {Issuer: "https://idp.example", ClientSecret: "b"},
		"no secret":      {Issuer: "https://idp.example", ClientID: "a"},
		"http redirect":  {Issuer: "https://idp.example", ClientID: "a", ClientSecret: "b", RedirectURLs: []string{"http://example.com/cb"}},
		"short flow key": {Issuer: "https://idp.example", ClientID: "a", ClientSecret: "b", FlowKey: []byte("short")},
	} {
		if _, err := oidcauth.New(ctx, cfg); !errors.Is(err, oidcauth.ErrConfig) {
			t.Errorf("%s: New = %v, want ErrConfig", name, err)
		}
	}
}

func TestStatusCode(t *testing.T) {
	for err, want := range map[error]int{
		nil: 200, oidcauth.ErrPending: 200, oidcauth.ErrBadRequest: 400, oidcauth.ErrRefused: 403,
		oidcauth.ErrRevoked: 403, oidcauth.ErrExpired: 410, oidcauth.ErrIdP: 502, oidcauth.ErrConfig: 501,
	} {
		if got := oidcauth.StatusCode(err); got != want {
			t.Errorf("StatusCode(%v) = %d, want %d", err, got, want)
		}
	}
}
