package controller

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/pki"
)

const testYAML = `remote_networks:
  - name: corp
    connectors: [corp-a, corp-b]
  - name: lab
    connectors: [lab-a]
groups:
  - name: engineering
    users: [alice@example.com]
  - name: ops
    users: [bob@example.com]
users:
  - email: alice@example.com
    password: "correct horse"
  - email: bob@example.com
    password: "battery staple"
resources:
  - name: db
    address: db.corp.internal
    network: corp
    ports: [tcp/22, tcp/5432, udp/53, icmp]
    groups: [engineering]
  - name: web
    address: "*.corp.internal"
    network: corp
    ports: [tcp/8000-8100]
    groups: [engineering]
  - name: labnet
    address: 198.51.100.0/24
    network: lab
    groups: [ops]
service_accounts:
  - name: ci
    groups: [engineering]
`

type testEnv struct {
	t      *testing.T
	c      *Controller
	url    string
	dir    string
	pool   *x509.CertPool
	cancel context.CancelFunc
	done   chan error

	mu      sync.Mutex
	clients []*http.Client
}

func newTestController(t *testing.T, dir string, mod func(*Config)) *testEnv {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return newTestControllerOn(t, ln, dir, mod)
}

// openController opens a controller on dir without serving it; it closes
// when the test ends.
func openController(t *testing.T, dir string) *Controller {
	t.Helper()
	c, err := Open(Config{DataDir: dir, PublicURL: "https://127.0.0.1:8443"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// newTestControllerOn is newTestController on a listener the test made
// (to know the controller's URL before it starts).
func newTestControllerOn(t *testing.T, ln net.Listener, dir string, mod func(*Config)) *testEnv {
	t.Helper()
	return serveTestController(t, ln, dir, "https://"+ln.Addr().String(), mod)
}

// serveTestController opens a controller on dir with public URL u and
// serves it on ln until the test ends.
func serveTestController(t *testing.T, ln net.Listener, dir, u string, mod func(*Config)) *testEnv {
	t.Helper()
	cfg := Config{DataDir: dir, PublicURL: u, RateLimit: 10000, RateBurst: 10000}
	if mod != nil {
		mod(&cfg)
	}
	c, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	env := &testEnv{t: t, c: c, url: u, dir: dir, cancel: cancel, done: make(chan error, 1)}
	ca, _ := pki.ParseCertPEM(c.CACertPEM())
	env.pool = pki.CAPool(ca)
	go func() { env.done <- c.Serve(ctx, ln) }()
	t.Cleanup(env.stop)
	return env
}

func (e *testEnv) stop() {
	if e.cancel == nil {
		return
	}
	e.mu.Lock()
	for _, cl := range e.clients {
		cl.CloseIdleConnections()
	}
	e.mu.Unlock()
	e.cancel()
	select {
	case <-e.done:
	case <-time.After(10 * time.Second):
		e.t.Error("Serve did not return after cancel")
	}
	e.c.Close()
	e.cancel = nil
}

func (e *testEnv) client(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: e.pool}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	cl := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
	e.mu.Lock()
	e.clients = append(e.clients, cl)
	e.mu.Unlock()
	return cl
}

// call does a JSON request and returns the status and body.
func (e *testEnv) call(cl *http.Client, method, path, bearerTok string, body any) (int, []byte) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, e.url+path, rd)
	if bearerTok != "" {
		req.Header.Set("Authorization", "Bearer "+bearerTok)
	}
	if cl == nil {
		cl = e.client(nil)
	}
	resp, err := cl.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func (e *testEnv) admin(method, path string, body any, want int) []byte {
	e.t.Helper()
	st, data := e.call(nil, method, path, e.c.AdminToken(), body)
	if st != want {
		e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, st, want, data)
	}
	return data
}

// fastYAML swaps the test passwords for precomputed argon2id hashes (hashing
// under the race detector takes ~0.4 s each); the plaintext path is covered
// by the apply tests.
func fastYAML(y string) string {
	hashOnce.Do(func() {
		for _, pw := range []string{"correct horse", "battery staple"} {
			h, _ := hashPassword(pw)
			hashes = append(hashes, [2]string{`password: "` + pw + `"`, `password_hash: "` + h + `"`})
		}
	})
	for _, h := range hashes {
		y = strings.ReplaceAll(y, h[0], h[1])
	}
	return y
}

var (
	hashOnce sync.Once
	hashes   [][2]string
)

func (e *testEnv) apply(yaml string) *Plan {
	e.t.Helper()
	p, err := e.c.ApplyYAML(context.Background(), []byte(fastYAML(yaml)), false)
	if err != nil {
		e.t.Fatalf("apply: %v", err)
	}
	return p
}

// component is an enrolled connector or relay.
type component struct {
	id     string
	key    ed25519.PrivateKey
	cert   tls.Certificate
	http   *http.Client
	enroll controlapi.EnrollResponse
}

func pubPEM(pub ed25519.PublicKey) string {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func (e *testEnv) enroll(kind, name string) *component {
	e.t.Helper()
	tok, err := e.c.EnrollmentToken(kind, name, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	et, err := controlapi.ParseEnrollmentToken(tok)
	if err != nil {
		e.t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	path := controlapi.PathEnrollConnector
	if kind == KindRelay {
		path = controlapi.PathEnrollRelay
	}
	st, data := e.call(nil, "POST", path, "", controlapi.EnrollRequest{Secret: et.Secret, PublicKeyPEM: pubPEM(pub), Version: "test"})
	if st != 200 {
		e.t.Fatalf("enroll %s %s: %d %s", kind, name, st, data)
	}
	var resp controlapi.EnrollResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		e.t.Fatal(err)
	}
	leaf, err := pki.ParseCertPEM([]byte(resp.CertificatePEM))
	if err != nil {
		e.t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: priv, Leaf: leaf}
	return &component{id: resp.ID, key: priv, cert: cert, http: e.client(&cert), enroll: resp}
}

// heartbeat reports a fresh self-signed certificate digest for connector c.
func (e *testEnv) heartbeat(c *component, digest string, addrs ...string) {
	e.t.Helper()
	st, data := e.call(c.http, "POST", controlapi.PathConnectorHeartbeat, "", controlapi.Heartbeat{CertSHA256: []string{digest}, Version: "test", Addrs: addrs})
	if st != 200 {
		e.t.Fatalf("heartbeat: %d %s", st, data)
	}
}

func randomDigest() string {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	_ = pub
	c, _ := pki.SelfSigned(priv, "connector", time.Hour)
	return pki.CertDigest(c.Certificate[0])
}

type device struct {
	pub     ed25519.PublicKey
	priv    ed25519.PrivateKey
	session controlapi.LoginResponse
}

func (e *testEnv) login(email, password string) *device {
	e.t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	st, data := e.call(nil, "POST", controlapi.PathLogin, "", controlapi.LoginRequest{Email: email, Password: password,
		DevicePublicKey: base64.StdEncoding.EncodeToString(pub), DeviceName: "laptop", OS: "linux"})
	if st != 200 {
		e.t.Fatalf("login %s: %d %s", email, st, data)
	}
	d := &device{pub: pub, priv: priv}
	if err := json.Unmarshal(data, &d.session); err != nil {
		e.t.Fatal(err)
	}
	return d
}

// stream opens a push stream and delivers decoded lines.
type pushStream struct {
	lines  chan []byte
	cancel context.CancelFunc
	body   io.Closer
}

func (e *testEnv) openStream(cl *http.Client, path, bearerTok string) *pushStream {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.url+path, nil)
	if bearerTok != "" {
		req.Header.Set("Authorization", "Bearer "+bearerTok)
	}
	resp, err := cl.Do(req)
	if err != nil {
		cancel()
		e.t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		cancel()
		e.t.Fatalf("stream %s: %d %s", path, resp.StatusCode, b)
	}
	ps := &pushStream{lines: make(chan []byte, 64), cancel: cancel, body: resp.Body}
	go func() {
		defer close(ps.lines)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			ps.lines <- append([]byte(nil), sc.Bytes()...)
		}
	}()
	e.t.Cleanup(ps.close)
	return ps
}

func (ps *pushStream) close() { ps.cancel(); ps.body.Close() }

// next returns the next non-keepalive line within d.
func (ps *pushStream) next(t *testing.T, d time.Duration, v any) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case line, ok := <-ps.lines:
			if !ok {
				t.Fatal("stream ended")
			}
			if bytes.Contains(line, []byte(`"keepalive":true`)) {
				continue
			}
			if err := json.Unmarshal(line, v); err != nil {
				t.Fatalf("decode %s: %v", line, err)
			}
			return
		case <-deadline:
			t.Fatalf("no snapshot within %s", d)
		}
	}
}

func mustJSON(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
}

var _ = fmt.Sprintf

func x509Opts(ca *x509.Certificate) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: pki.CAPool(ca), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
}

func x509PoolFromPEM(p []byte) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p)
	return pool
}

func tlsCertFromPEM(certPEM string, key ed25519.PrivateKey) (tls.Certificate, error) {
	leaf, err := pki.ParseCertPEM([]byte(certPEM))
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}, nil
}
