package controlapi_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/pki"
)

func newClient(t *testing.T, srv *httptest.Server, mod func(*controlapi.ClientConfig)) *controlapi.Client {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	cfg := controlapi.ClientConfig{URL: srv.URL, Roots: roots}
	if mod != nil {
		mod(&cfg)
	}
	c, err := controlapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestNewClientRejectsBadURL(t *testing.T) {
	for _, u := range []string{"", "controller.example", "http://controller.example", "ftp://x"} {
		if _, err := controlapi.NewClient(controlapi.ClientConfig{URL: u}); err == nil {
			t.Errorf("NewClient(%q) accepted", u)
		}
	}
}

func TestCallDecodesAndSendsToken(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(controlapi.Error{Error: "no session"})
			return
		}
		var in controlapi.TokenRequest
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || r.Method != http.MethodPost {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		_ = json.NewEncoder(w).Encode(controlapi.TokenResponse{Token: "tok-for-" + in.ConnectorID})
	}))
	defer srv.Close()

	var out controlapi.TokenResponse
	c := newClient(t, srv, func(cfg *controlapi.ClientConfig) { cfg.Token = "s3cret" })
	if err := c.Call(context.Background(), http.MethodPost, controlapi.PathConnectionToken, controlapi.TokenRequest{ConnectorID: "c1"}, &out); err != nil {
		t.Fatal(err)
	}
	if out.Token != "tok-for-c1" {
		t.Fatalf("token %q", out.Token)
	}

	anon := newClient(t, srv, nil)
	err := anon.Call(context.Background(), http.MethodPost, controlapi.PathConnectionToken, controlapi.TokenRequest{}, &out)
	var se *controlapi.StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusUnauthorized || se.Message != "no session" || se.Path != controlapi.PathConnectionToken {
		t.Fatalf("err %#v, want StatusError 401 %q", err, "no session")
	}
	if controlapi.StatusCode(fmt.Errorf("wrapped: %w", err)) != http.StatusUnauthorized {
		t.Fatal("StatusCode does not see through wrapping")
	}
	// A login's token is used by the calls that follow.
	anon.SetToken("s3cret")
	if err := anon.Call(context.Background(), http.MethodPost, controlapi.PathConnectionToken, controlapi.TokenRequest{ConnectorID: "c2"}, &out); err != nil || out.Token != "tok-for-c2" {
		t.Fatalf("after SetToken: %v, token %q", err, out.Token)
	}
}

func TestCallTransportErrors(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	c := newClient(t, srv, nil)
	// Another CA pinned: the certificate does not verify.
	wrong := newClient(t, srv, func(cfg *controlapi.ClientConfig) { cfg.Roots = x509.NewCertPool() })
	err := wrong.Call(context.Background(), http.MethodGet, "/x", nil, nil)
	var te *controlapi.TransportError
	var cv *tls.CertificateVerificationError
	if !errors.As(err, &te) || !errors.As(err, &cv) {
		t.Fatalf("unverified controller: %v, want TransportError with a certificate error", err)
	}
	srv.Close()
	if err := c.Call(context.Background(), http.MethodGet, "/x", nil, nil); !errors.As(err, &te) {
		t.Fatalf("closed controller: %v, want TransportError", err)
	}
}

func TestCallTimeout(t *testing.T) {
	// The handler answers only when the test ends: r.Context() can end
	// before the client's deadline (the server's background read sees the
	// connection's state), and returning then would answer 200 in time.
	release := make(chan struct{})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer srv.Close()
	defer close(release)
	c := newClient(t, srv, func(cfg *controlapi.ClientConfig) { cfg.CallTimeout = 50 * time.Millisecond })
	err := c.Call(context.Background(), http.MethodGet, "/slow", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want deadline exceeded", err)
	}
}

func TestCallClientCertificate(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	cert, err := pki.SelfSigned(key, "connector:c1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(controlapi.Error{Error: r.TLS.PeerCertificates[0].Subject.CommonName})
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	defer srv.Close()
	calls := 0
	c := newClient(t, srv, func(cfg *controlapi.ClientConfig) {
		cfg.Certificate = func() (*tls.Certificate, error) { calls++; return &cert, nil }
	})
	var out controlapi.Error
	if err := c.Call(context.Background(), http.MethodGet, "/whoami", nil, &out); err != nil {
		t.Fatal(err)
	}
	if out.Error != "connector:c1" || calls == 0 {
		t.Fatalf("controller saw %q (callback called %d times)", out.Error, calls)
	}
}

// policyServer streams revisions after the one asked for, then closes the
// stream; it records the ?rev of every request.
type policyServer struct {
	mu   sync.Mutex
	asks []string
	head int64
}

func (p *policyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.asks = append(p.asks, r.URL.Query().Get("rev"))
	head := p.head
	p.mu.Unlock()
	from, _ := strconv.ParseInt(r.URL.Query().Get("rev"), 10, 64)
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	_ = enc.Encode(controlapi.ClientPolicy{Keepalive: true})
	for rev := from + 1; rev <= head; rev++ {
		_ = enc.Encode(controlapi.ClientPolicy{Revision: rev})
		_, _ = w.Write([]byte("\n"))
	}
}

func TestStreamResumesByRevision(t *testing.T) {
	ps := &policyServer{head: 3}
	srv := httptest.NewTLSServer(ps)
	defer srv.Close()
	c := newClient(t, srv, nil)

	var rev int64
	opened, keepalives := 0, 0
	read := func(line []byte) error {
		if line == nil {
			opened++
			return nil
		}
		var p controlapi.ClientPolicy
		if err := json.Unmarshal(line, &p); err != nil {
			return err
		}
		if p.Keepalive {
			keepalives++
			return nil
		}
		if p.Revision != rev+1 {
			return fmt.Errorf("revision %d after %d", p.Revision, rev)
		}
		rev = p.Revision
		return nil
	}
	err := c.Stream(context.Background(), controlapi.PathClientPolicy, rev, read)
	if !errors.Is(err, controlapi.ErrStreamEnded) || rev != 3 {
		t.Fatalf("first stream: %v at rev %d, want ErrStreamEnded at 3", err, rev)
	}
	ps.mu.Lock()
	ps.head = 5
	ps.mu.Unlock()
	err = c.Stream(context.Background(), controlapi.PathClientPolicy, rev, read)
	if !errors.Is(err, controlapi.ErrStreamEnded) || rev != 5 {
		t.Fatalf("resumed stream: %v at rev %d, want ErrStreamEnded at 5", err, rev)
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if fmt.Sprint(ps.asks) != "[ 3]" || opened != 2 || keepalives != 2 {
		t.Fatalf("asked revs %q, opened %d, keepalives %d", ps.asks, opened, keepalives)
	}
}

func TestStreamIdleTimeout(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("{\"keepalive\":true}\n"))
		w.(http.Flusher).Flush()
		<-r.Context().Done() // then silence
	}))
	defer srv.Close()
	c := newClient(t, srv, func(cfg *controlapi.ClientConfig) { cfg.StreamIdleTimeout = 150 * time.Millisecond })
	lines := 0
	start := time.Now()
	err := c.Stream(context.Background(), "/stream", 0, func(line []byte) error {
		if line != nil {
			lines++
		}
		return nil
	})
	if !errors.Is(err, controlapi.ErrStreamIdle) || lines != 1 {
		t.Fatalf("err %v after %d lines, want ErrStreamIdle after 1", err, lines)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("idle stream noticed after %s", d)
	}
}

func TestStreamErrors(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/refused":
			w.WriteHeader(http.StatusForbidden)
			_ = json.NewEncoder(w).Encode(controlapi.Error{Error: "device revoked"})
		case "/ended":
			_ = json.NewEncoder(w).Encode(controlapi.Error{Error: "credential revoked"})
		}
	}))
	defer srv.Close()
	c := newClient(t, srv, nil)
	nop := func([]byte) error { return nil }
	if err := c.Stream(context.Background(), "/refused", 7, nop); controlapi.StatusCode(err) != http.StatusForbidden {
		t.Fatalf("refused stream: %v", err)
	}
	var se *controlapi.StreamError
	if err := c.Stream(context.Background(), "/ended", 0, nop); !errors.As(err, &se) || se.Message != "credential revoked" {
		t.Fatalf("ended stream: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Stream(ctx, "/ended", 0, nop); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled stream: %v", err)
	}
	stop := errors.New("stop")
	if err := c.Stream(context.Background(), "/other", 0, func([]byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("fn's error: %v, want it returned", err)
	}
}

// After a credential renewal, Close makes the next call present the new
// certificate although a stream is still open (connectors renew while their
// policy stream runs).
func TestCloseRedialsCallsWithRenewedCertificate(t *testing.T) {
	certs := make([]tls.Certificate, 2)
	for i, cn := range []string{"old", "new"} {
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		c, err := pki.SelfSigned(key, cn, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		certs[i] = c
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		_ = json.NewEncoder(w).Encode(controlapi.Error{Error: r.TLS.PeerCertificates[0].Subject.CommonName})
	}))
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	defer srv.Close()
	var mu sync.Mutex
	cur := &certs[0]
	c := newClient(t, srv, func(cfg *controlapi.ClientConfig) {
		cfg.Certificate = func() (*tls.Certificate, error) { mu.Lock(); defer mu.Unlock(); return cur, nil }
	})
	whoami := func() string {
		t.Helper()
		var out controlapi.Error
		if err := c.Call(context.Background(), http.MethodGet, "/whoami", nil, &out); err != nil {
			t.Fatal(err)
		}
		return out.Error
	}
	if got := whoami(); got != "old" {
		t.Fatalf("first call as %q", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	opened := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- c.Stream(ctx, "/stream", 0, func(line []byte) error {
			if line == nil {
				close(opened)
			}
			return nil
		})
	}()
	<-opened
	mu.Lock()
	cur = &certs[1]
	mu.Unlock()
	c.Close()
	if got := whoami(); got != "new" {
		t.Fatalf("call after renewal and Close as %q, want new", got)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("stream: %v", err)
	}
}
