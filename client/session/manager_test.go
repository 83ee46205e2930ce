package session

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/installer/preset"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/localapi"
	"postern.dev/postern/pki"
)

// fakeController is an in-process controller speaking the client endpoints
// of controlapi: login, the policy stream (resumed by revision), connection
// tokens signed with its own key, posture and logout.
type fakeController struct {
	t      *testing.T
	srv    *httptest.Server
	caPEM  string
	signer *ctoken.Signer
	jwks   json.RawMessage

	mu       sync.Mutex
	devKey   ed25519.PublicKey // from the last login
	policies []controlapi.ClientPolicy
	wake     chan struct{} // closed when policies change or streams must end
	asks     []string      // the rev of every policy stream request
	revoked  bool          // the session is refused (401)
	wrongJKT bool          // tokens are bound to another key
}

const (
	fakeToken  = "sess-1"
	fakeDevice = "dev-1"
	fakeDigest = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

func newFakeController(t *testing.T) *fakeController {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(ctoken.JWKS{Keys: []ctoken.JWK{ctoken.PublicJWK("k1", pub)}})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeController{t: t, signer: &ctoken.Signer{Issuer: "https://ctl.test", KeyID: "k1", Key: priv}, jwks: jwks, wake: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+controlapi.PathLogin, f.login)
	mux.HandleFunc("GET "+controlapi.PathClientPolicy, f.policy)
	mux.HandleFunc("POST "+controlapi.PathConnectionToken, f.token)
	mux.HandleFunc("POST "+controlapi.PathPosture, func(w http.ResponseWriter, r *http.Request) {
		if f.authorized(w, r) {
			_ = json.NewEncoder(w).Encode(controlapi.PostureVerdict{Satisfied: []string{}})
		}
	})
	mux.HandleFunc("POST "+controlapi.PathLogout, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	f.srv = httptest.NewTLSServer(mux)
	f.caPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw}))
	t.Cleanup(func() {
		f.endStreams()
		f.srv.Close()
	})
	return f
}

// push publishes the next policy revision with the given connectors.
func (f *fakeController) push(connectors ...controlapi.ConnectorInfo) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	rev := int64(len(f.policies) + 1)
	f.policies = append(f.policies, controlapi.ClientPolicy{Revision: rev, Issuer: f.signer.Issuer, JWKS: f.jwks, Connectors: connectors,
		Relays: []controlapi.RelayInfo{{ID: "rel_" + strconv.FormatInt(rev, 10)}}})
	close(f.wake)
	f.wake = make(chan struct{})
	return rev
}

// endStreams closes the open policy streams (a controller restart).
func (f *fakeController) endStreams() {
	f.srv.CloseClientConnections()
}

func (f *fakeController) set(fn func(f *fakeController)) {
	f.mu.Lock()
	fn(f)
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
}

func (f *fakeController) authorized(w http.ResponseWriter, r *http.Request) bool {
	f.mu.Lock()
	revoked := f.revoked
	f.mu.Unlock()
	if revoked || r.Header.Get("Authorization") != "Bearer "+fakeToken {
		http.Error(w, `{"error":"session revoked"}`, http.StatusUnauthorized)
		return false
	}
	return true
}

func (f *fakeController) login(w http.ResponseWriter, r *http.Request) {
	var req controlapi.LoginRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Email != "alice@example.com" || req.Password != "pw" {
		http.Error(w, `{"error":"bad credentials"}`, http.StatusUnauthorized)
		return
	}
	b, err := base64.StdEncoding.DecodeString(req.DevicePublicKey)
	if err != nil || len(b) != ed25519.PublicKeySize {
		http.Error(w, `{"error":"bad device key"}`, http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.devKey = ed25519.PublicKey(b)
	f.mu.Unlock()
	_ = json.NewEncoder(w).Encode(controlapi.LoginResponse{SessionToken: fakeToken, DeviceID: fakeDevice, ExpiresAt: time.Now().Add(time.Hour),
		Principal: controlapi.Principal{ID: "usr_1", Kind: "user", Name: "alice@example.com"}})
}

func (f *fakeController) policy(w http.ResponseWriter, r *http.Request) {
	if !f.authorized(w, r) {
		return
	}
	from, _ := strconv.ParseInt(r.URL.Query().Get("rev"), 10, 64)
	f.mu.Lock()
	f.asks = append(f.asks, r.URL.Query().Get("rev"))
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	_ = enc.Encode(controlapi.ClientPolicy{Keepalive: true})
	w.(http.Flusher).Flush()
	for {
		f.mu.Lock()
		pending := []controlapi.ClientPolicy{}
		for _, p := range f.policies {
			if p.Revision > from {
				pending = append(pending, p)
			}
		}
		wake, revoked := f.wake, f.revoked
		f.mu.Unlock()
		if revoked {
			_ = enc.Encode(controlapi.Error{Error: "session revoked"})
			return
		}
		for _, p := range pending {
			_ = enc.Encode(p)
			from = p.Revision
		}
		w.(http.Flusher).Flush()
		select {
		case <-wake:
		case <-r.Context().Done():
			return
		}
	}
}

func (f *fakeController) token(w http.ResponseWriter, r *http.Request) {
	if !f.authorized(w, r) {
		return
	}
	var req controlapi.TokenRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, `{"error":"bad request"}`, http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	key, wrong := f.devKey, f.wrongJKT
	f.mu.Unlock()
	if wrong {
		other, _, _ := ed25519.GenerateKey(rand.Reader)
		key = other
	}
	exp := time.Now().Add(5 * time.Minute)
	tok, err := f.signer.Issue(ctoken.Claims{PrincipalKind: "user", Device: fakeDevice, ConnectorCertSHA256: fakeDigest,
		Cnf:              ctoken.Confirmation{JKT: pki.KeyThumbprint(key)},
		RegisteredClaims: jwt.RegisteredClaims{Subject: "usr_1", Audience: jwt.ClaimStrings{req.ConnectorID}, ExpiresAt: jwt.NewNumericDate(exp)}})
	if err != nil {
		f.t.Errorf("sign token: %v", err)
		http.Error(w, `{"error":"sign"}`, http.StatusInternalServerError)
		return
	}
	_ = json.NewEncoder(w).Encode(controlapi.TokenResponse{Token: tok, ExpiresAt: exp, CertSHA256: fakeDigest})
}

// events records what the Manager tells its Observer.
type events struct {
	ups   chan bool
	downs chan string
	ended chan error
	// m, when set, is asked whether it is still signed in when told the
	// session ended (endSignedIn).
	m           atomic.Pointer[Manager]
	endSignedIn chan bool
}

func newEvents() *events {
	return &events{ups: make(chan bool, 64), downs: make(chan string, 64), ended: make(chan error, 4), endSignedIn: make(chan bool, 4)}
}

func (e *events) ControllerUp(recovered bool) { e.ups <- recovered }
func (e *events) ControllerDown(msg string)   { e.downs <- msg }
func (e *events) SessionEnded(cause error) {
	if m := e.m.Load(); m != nil {
		e.endSignedIn <- m.SignedIn()
	}
	e.ended <- cause
}

func newManager(t *testing.T, dir string, obs Observer) *Manager {
	t.Helper()
	st, err := OpenStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Config{Dir: st, Logger: testenv.Logger(t), DeviceName: "test-device", Observer: obs,
		Preset: func() (preset.Preset, error) { return preset.Preset{}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// waitPolicy waits, through the policy view's change channel, until the
// current snapshot has revision rev (0: none).
func waitPolicy(t *testing.T, v interface {
	Current() (*controlapi.ClientPolicy, <-chan struct{})
}, rev int64) *controlapi.ClientPolicy {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		p, next := v.Current()
		if (p == nil && rev == 0) || (p != nil && p.Revision == rev) {
			return p
		}
		select {
		case <-next:
		case <-deadline:
			t.Fatalf("policy revision %d never became current (have %+v)", rev, p)
		}
	}
}

// passwordLogin is a password sign-in at f.
func passwordLogin(f *fakeController) localapi.LoginRequest {
	return localapi.LoginRequest{ControllerURL: f.srv.URL, CAPEM: f.caPEM, Email: "alice@example.com", Password: "pw"}
}

func signIn(t *testing.T, m *Manager, f *fakeController) {
	t.Helper()
	g, err := m.Authenticate(context.Background(), passwordLogin(f))
	if err != nil {
		t.Fatalf("authenticate: %v", err)
	}
	if err := m.Begin(g); err != nil {
		t.Fatalf("begin: %v", err)
	}
}

// TestPolicyViewAndTokenSource drives the two things the flow layer gets
// from a session through an in-process controller: the policy view follows
// the stream (and resumes it by revision after the controller drops it),
// and the token source hands out verified, key-bound Connection Tokens.
func TestPolicyViewAndTokenSource(t *testing.T) {
	f := newFakeController(t)
	ev := newEvents()
	dir := t.TempDir()
	m := newManager(t, dir, ev)
	if p, _ := m.Current(); p != nil || m.SignedIn() {
		t.Fatalf("fresh manager: policy %+v, signed in %v", p, m.SignedIn())
	}
	ca := controlapi.ConnectorInfo{ID: "con_a", Name: "corp-a", Network: "corp"}
	if _, _, err := m.ConnectionToken(context.Background(), ca); !errors.Is(err, ErrNotSignedIn) {
		t.Fatalf("token while signed out: %v, want ErrNotSignedIn", err)
	}

	f.push(ca)
	signIn(t, m, f)
	p1 := waitPolicy(t, m, 1)
	if len(p1.Connectors) != 1 || len(m.Relays()) != 1 || m.Relays()[0].ID != "rel_1" {
		t.Fatalf("policy 1: %+v, relays %+v", p1, m.Relays())
	}
	select {
	case rec := <-ev.ups:
		if !rec {
			t.Error("first connect not reported as recovered from unreachable")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("observer never heard the controller come up")
	}
	if st := m.State(); st.Info == nil || st.Info.DeviceID != fakeDevice || !st.Reachable {
		t.Fatalf("state: %+v", st)
	}

	tok, claims, err := m.ConnectionToken(context.Background(), ca)
	if err != nil || tok == "" || claims.Device != fakeDevice || claims.ConnectorCertSHA256 != fakeDigest || claims.Cnf.JKT != m.KeyThumbprint() {
		t.Fatalf("token: %q %+v %v", tok, claims, err)
	}
	// The relay signaling reuses that token without asking again.
	if st, err := m.SignalingToken(context.Background(), ca.ID); err != nil || st != tok {
		t.Fatalf("signaling token %q, %v; want the cached %q", st, err, tok)
	}

	// A new revision reaches the view on the open stream.
	cb := controlapi.ConnectorInfo{ID: "con_b", Name: "corp-b", Network: "corp"}
	f.push(ca, cb)
	if p2 := waitPolicy(t, m, 2); len(p2.Connectors) != 2 {
		t.Fatalf("policy 2: %+v", p2)
	}
	// The controller drops the stream and publishes meanwhile: the session
	// reports the outage, resumes from revision 2 and gets revision 3.
	f.endStreams()
	select {
	case <-ev.downs:
	case <-time.After(10 * time.Second):
		t.Fatal("observer never heard the stream fail")
	}
	f.push(cb)
	waitPolicy(t, m, 3)
	f.mu.Lock()
	asks := append([]string(nil), f.asks...)
	f.mu.Unlock()
	if len(asks) < 2 || asks[0] != "" || asks[len(asks)-1] != "2" {
		t.Errorf("stream requests asked for revisions %q, want a first without and a resume from 2", asks)
	}

	// A token bound to another key is refused, whatever its signature.
	f.set(func(f *fakeController) { f.wrongJKT = true })
	if _, _, err := m.ConnectionToken(context.Background(), cb); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("token bound to another key: %v, want ErrTokenInvalid", err)
	}

	// The session and its last policy survive a restart (fail static).
	m.Close()
	m2 := newManager(t, dir, nil)
	if p, _ := m2.Current(); p == nil || p.Revision != 3 || !m2.SignedIn() {
		t.Fatalf("after restart: policy %+v, signed in %v", p, m2.SignedIn())
	}
	if m2.KeyThumbprint() != m.KeyThumbprint() {
		t.Error("device key changed across restart")
	}
}

// TestControllerEndsSession: when the controller refuses the session, the
// Manager forgets it (files, policy, tokens) and tells the Observer once.
func TestControllerEndsSession(t *testing.T) {
	f := newFakeController(t)
	ev := newEvents()
	dir := t.TempDir()
	m := newManager(t, dir, ev)
	ev.m.Store(m)
	ca := controlapi.ConnectorInfo{ID: "con_a", Name: "corp-a", Network: "corp"}
	f.push(ca)
	signIn(t, m, f)
	waitPolicy(t, m, 1)
	if _, err := m.SignalingToken(context.Background(), ca.ID); err != nil {
		t.Fatalf("signaling token: %v", err)
	}

	f.set(func(f *fakeController) { f.revoked = true })
	select {
	case cause := <-ev.ended:
		if !errors.Is(cause, ErrSessionEnded) && !errors.Is(cause, ErrUnauthorized) {
			t.Errorf("ended with %v, want ErrSessionEnded or ErrUnauthorized", cause)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("observer never heard the session end")
	}
	// The observer hears it first, so that the daemon's part (tunnel down,
	// status message) is in place before status shows signed out.
	if !<-ev.endSignedIn {
		t.Error("the session was forgotten before the observer heard it ended")
	}
	waitPolicy(t, m, 0)
	if m.SignedIn() {
		t.Error("still signed in after the controller ended the session")
	}
	for _, name := range []string{SessionFile, PolicyFile} {
		if _, err := os.Stat(m.dir.Path(name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s kept after the session ended: %v", name, err)
		}
	}
	if _, err := m.SignalingToken(context.Background(), ca.ID); !errors.Is(err, ErrNotSignedIn) {
		t.Errorf("signaling token after the end: %v, want ErrNotSignedIn", err)
	}
	// The remembered controller stays: signing in again needs no URL.
	if u, caPEM := m.DefaultController(); u != f.srv.URL || caPEM != f.caPEM {
		t.Errorf("remembered controller %q (CA kept: %v), want %q", u, caPEM == f.caPEM, f.srv.URL)
	}
	select {
	case cause := <-ev.ended:
		t.Errorf("told twice that the session ended (%v)", cause)
	default:
	}
}
