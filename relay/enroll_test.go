package relay

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/pki"
)

// testController is an in-memory stand-in for the controller's relay
// endpoints (enrollment, registration), served over real TLS with the
// deployment CA in the chain.
type testController struct {
	ca       *pki.CA
	srv      *httptest.Server
	secret   string
	mu       sync.Mutex
	enrolled int
	regs     []controlapi.RelayRegister
	regCN    string
}

func newTestController(t *testing.T) *testController {
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	tc := &testController{ca: ca, secret: "enroll-secret"}
	_, sk, _ := ed25519.GenerateKey(rand.Reader)
	jwks, _ := json.Marshal(ctoken.JWKS{Keys: []ctoken.JWK{ctoken.PublicJWK("k1", sk.Public().(ed25519.PublicKey))}})
	mux := http.NewServeMux()
	mux.HandleFunc(controlapi.PathEnrollRelay, func(w http.ResponseWriter, r *http.Request) {
		var req controlapi.EnrollRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Secret != tc.secret {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(controlapi.Error{Error: "bad enrollment secret"})
			return
		}
		blk, _ := pem.Decode([]byte(req.PublicKeyPEM))
		pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		cert, _ := ca.IssueClient("relay:r-1", pub, time.Hour)
		tc.mu.Lock()
		tc.enrolled++
		tc.mu.Unlock()
		_ = json.NewEncoder(w).Encode(controlapi.EnrollResponse{ID: "r-1", Name: "relay-a",
			CertificatePEM: string(pki.EncodeCertPEM(cert)), CAPEM: string(pki.EncodeCertPEM(ca.Cert)), NotAfter: cert.NotAfter})
	})
	mux.HandleFunc(controlapi.PathRelayRegister, func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var reg controlapi.RelayRegister
		_ = json.NewDecoder(r.Body).Decode(&reg)
		tc.mu.Lock()
		tc.regs = append(tc.regs, reg)
		tc.regCN = r.TLS.PeerCertificates[0].Subject.CommonName
		tc.mu.Unlock()
		_ = json.NewEncoder(w).Encode(controlapi.RelayRegisterResponse{ID: "r-1", TURNSecret: "turn-secret",
			Realm: "postern.test", Issuer: "https://ctl.test", JWKS: jwks, IntervalSeconds: 1})
	})
	srv := httptest.NewUnstartedServer(mux)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, err := ca.IssueServer([]string{"127.0.0.1"}, key.Public(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw, ca.Cert.Raw}, PrivateKey: key}},
		ClientAuth:   tls.VerifyClientCertIfGiven, ClientCAs: pki.CAPool(ca.Cert),
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tc.srv = srv
	return tc
}

func (tc *testController) token() string {
	return controlapi.EnrollmentToken{Kind: "relay", Name: "relay-a", ControllerURL: tc.srv.URL,
		CAFingerprint: tc.ca.Fingerprint(), Secret: tc.secret}.Encode()
}

func runRelay(t *testing.T, o Options) (context.CancelFunc, chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, o) }()
	return cancel, done
}

func TestRunEnrollsRegistersAndRestartsWithoutToken(t *testing.T) {
	tc := newTestController(t)
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	o := Options{Token: tc.token(), StateDir: dir, ListenUDP: testenv.FreeAddr(t, "udp", "127.0.0.1"), ListenTLS: testenv.FreeAddr(t, "tcp", "127.0.0.1"),
		PublicIP: net.ParseIP("127.0.0.1"), Logger: log}
	cancel, done := runRelay(t, o)
	testenv.Eventually(t, 15*time.Second, "two registrations", func() bool { tc.mu.Lock(); defer tc.mu.Unlock(); return len(tc.regs) >= 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	tc.mu.Lock()
	reg, cn := tc.regs[0], tc.regCN
	tc.mu.Unlock()
	if cn != "relay:r-1" {
		t.Fatalf("registered with certificate %q", cn)
	}
	tlsCert, err := tls.LoadX509KeyPair(filepath.Join(dir, fileTLSCert), filepath.Join(dir, fileTLSKey))
	if err != nil {
		t.Fatal(err)
	}
	if reg.TLSCertSHA256 != pki.CertDigest(tlsCert.Certificate[0]) || reg.PublicIP != "127.0.0.1" {
		t.Fatalf("registration: %+v", reg)
	}
	for _, f := range []string{fileIdentity, fileKey, fileCert, fileCA} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("state file %s: %v", f, err)
		}
	}
	// Second start: no token, same identity, same TLS certificate.
	o.Token = ""
	tc.mu.Lock()
	n := len(tc.regs)
	tc.mu.Unlock()
	cancel, done = runRelay(t, o)
	testenv.Eventually(t, 15*time.Second, "another registration", func() bool { tc.mu.Lock(); defer tc.mu.Unlock(); return len(tc.regs) > n })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("second Run: %v", err)
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.enrolled != 1 {
		t.Fatalf("enrolled %d times", tc.enrolled)
	}
	if tc.regs[len(tc.regs)-1].TLSCertSHA256 != reg.TLSCertSHA256 {
		t.Fatal("TLS certificate changed across restarts")
	}
}

func TestRunRefusesBadInput(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	base := Options{StateDir: dir, ListenUDP: "127.0.0.1:0", ListenTLS: "127.0.0.1:0", PublicIP: net.ParseIP("127.0.0.1"), Logger: log}
	if err := Run(context.Background(), base); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("no token, no state: %v", err)
	}
	o := base
	o.Token = "pst1_garbage"
	if err := Run(context.Background(), o); !errors.Is(err, controlapi.ErrBadEnrollmentToken) {
		t.Fatalf("garbage token: %v", err)
	}
	o.Token = controlapi.EnrollmentToken{Kind: "connector", Name: "x", ControllerURL: "https://127.0.0.1:1",
		CAFingerprint: pki.CertDigest([]byte("x")), Secret: "s"}.Encode()
	if err := Run(context.Background(), o); !errors.Is(err, controlapi.ErrBadEnrollmentToken) {
		t.Fatalf("connector token: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("refused starts left state behind: %v", entries)
	}
	tc := newTestController(t)
	o.Token = controlapi.EnrollmentToken{Kind: "relay", Name: "relay-a", ControllerURL: tc.srv.URL,
		CAFingerprint: tc.ca.Fingerprint(), Secret: "wrong"}.Encode()
	if err := Run(context.Background(), o); !errors.Is(err, ErrControllerCall) {
		t.Fatalf("wrong secret: %v", err)
	}
}
