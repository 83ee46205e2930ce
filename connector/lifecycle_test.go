package connector

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/wire"
)

func TestEnrollmentErrorsAndStoredCredential(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	// The state directory holds the credential, private to the connector.
	for _, f := range []string{stateFile, keyFile, certFile, caFile, policyFile} {
		fi, err := os.Stat(filepath.Join(e.stateDir, f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	tok, err := e.ctl.EnrollmentToken("connector", "corp-a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Enroll(ctx, t.TempDir(), tok, EnrollOptions{}); err != nil {
		t.Fatalf("first use of a fresh token: %v", err)
	}
	_, err = Enroll(ctx, t.TempDir(), tok, EnrollOptions{})
	if !errors.Is(err, ErrEnrollRefused) {
		t.Fatalf("reused token: %v, want ErrEnrollRefused", err)
	}
	t.Logf("reused token: %v", err)
	if _, err := Enroll(ctx, t.TempDir(), "garbage", EnrollOptions{}); !errors.Is(err, controlapi.ErrBadEnrollmentToken) {
		t.Fatalf("garbage token: %v", err)
	}
	rt, err := e.ctl.EnrollmentToken("relay", "relay-x", time.Hour)
	if err == nil {
		if _, err := Enroll(ctx, t.TempDir(), rt, EnrollOptions{}); !errors.Is(err, ErrWrongTokenKind) {
			t.Fatalf("relay token: %v", err)
		}
	}
	// A token whose CA fingerprint does not match the controller is refused
	// before anything is sent.
	et, _ := controlapi.ParseEnrollmentToken(tok)
	et.CAFingerprint = strings.Repeat("0", 64)
	dir := t.TempDir()
	if _, err := Enroll(ctx, dir, et.Encode(), EnrollOptions{}); err == nil || !strings.Contains(err.Error(), "fingerprint") {
		t.Fatalf("wrong CA fingerprint: %v", err)
	}
	if Enrolled(dir) {
		t.Fatal("a failed enrollment left state behind")
	}
	// An unenrolled directory cannot be opened.
	if _, err := Open(Config{StateDir: t.TempDir()}); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("open unenrolled: %v", err)
	}
}

func TestCertificateRotation(t *testing.T) {
	e := newEnv(t, nil)
	oldTok := e.alice.token()
	old := e.c.certs.current()
	if oldTok.CertSHA256 != old {
		t.Fatalf("token digest %s, connector %s", oldTok.CertSHA256, old)
	}
	if err := e.c.Rotate(e.ctx); err != nil {
		t.Fatal(err)
	}
	ds := e.c.CertDigests()
	if len(ds) != 2 || ds[1] != old || ds[0] == old {
		t.Fatalf("digests after rotation: %v", ds)
	}
	if got := e.controllerDigest(); got != ds[0] {
		t.Fatalf("controller has %s, want the new digest %s", got, ds[0])
	}
	// A token issued before the rotation still works on a new connection:
	// the old certificate is served for its server name.
	conn, err := e.alice.dial(oldTok.CertSHA256)
	if err != nil {
		t.Fatalf("dial with the old digest: %v", err)
	}
	if _, st, msg, err := authenticate(conn, oldTok.Token); err != nil || st != wire.StatusOK {
		t.Fatalf("old token: %v %v %s", err, st, msg)
	}
	conn.CloseWithError(0, "")
	newTok := e.alice.token()
	if newTok.CertSHA256 != ds[0] {
		t.Fatalf("new token digest %s, want %s", newTok.CertSHA256, ds[0])
	}
	cc := e.alice.connect()
	st := cc.mustOpen(e.echoFlow(e.resourceID("echo")), "flow")
	echoRoundTrip(t, st, "after rotation")
	// After the overlap the old certificate is gone.
	e.c.certs.prune(time.Now().Add(e.c.cfg.CertOverlap + time.Second))
	if ds := e.c.CertDigests(); len(ds) != 1 {
		t.Fatalf("digests after the overlap: %v", ds)
	}
	if _, err := e.alice.dial(old); err == nil {
		t.Fatal("old certificate still served after the overlap")
	}
}

func TestRevokedDeviceIsDisconnected(t *testing.T) {
	e := newEnv(t, nil)
	cc := e.alice.connect()
	st := cc.mustOpen(e.echoFlow(e.resourceID("echo")), "flow")
	echoRoundTrip(t, st, "before logout")
	if err := e.post(controlapi.PathLogout, e.alice.session, struct{}{}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cc.conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection of a revoked device not closed")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(cc.conn.Context()); !errors.As(err, &ae) || uint64(ae.ErrorCode) != wire.CodeRevoked {
		t.Fatalf("close cause %v, want revoked", err)
	}
}

func TestMetricsAndHealth(t *testing.T) {
	e := newEnv(t, nil)
	cc := e.alice.connect()
	st := cc.mustOpen(e.echoFlow(e.resourceID("echo")), "flow")
	echoRoundTrip(t, st, "metrics")
	st.Close()
	io.Copy(io.Discard, st)
	cc.open(wire.OpenHeader{Proto: wire.ProtoTCP, Port: 22, ResourceID: e.resourceID("echo"), Destination: "127.0.0.1"})
	e.eventually(5*time.Second, "flow metrics", func() bool {
		body := get(t, e.c.MetricsHandler(), "/metrics")
		return strings.Contains(body, `postern_connector_flows_total{protocol="tcp",result="ok"} 1`) &&
			strings.Contains(body, `postern_connector_refusals_total{reason="port or protocol not allowed",status="denied"} 1`) &&
			strings.Contains(body, `postern_connector_bytes_total{direction="up"} 7`)
	})
	conn, _ := e.alice.dial(e.c.certs.current())
	authenticate(conn, "not-a-token")
	e.eventually(5*time.Second, "handshake failure metric", func() bool {
		return strings.Contains(get(t, e.c.MetricsHandler(), "/metrics"), `postern_connector_handshake_failures_total{reason="invalid token"} 1`)
	})
	if h := get(t, e.c.MetricsHandler(), "/healthz"); !strings.Contains(h, `"status":"ok"`) {
		t.Fatalf("healthz: %s", h)
	}
	if h := get(t, e.c.MetricsHandler(), "/readyz"); !strings.Contains(h, `"status":"ready"`) || !strings.Contains(h, `"controller_reachable":true`) {
		t.Fatalf("readyz: %s", h)
	}
}

func get(t *testing.T, h http.Handler, path string) string {
	t.Helper()
	rec := &recorder{header: http.Header{}}
	req, _ := http.NewRequest(http.MethodGet, path, nil)
	h.ServeHTTP(rec, req)
	return rec.body.String()
}

type recorder struct {
	header http.Header
	body   strings.Builder
	code   int
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(c int)           { r.code = c }

func TestCredentialRenewalAndMetricsEndpoint(t *testing.T) {
	e := newEnv(t, nil)
	old := e.c.state.Load()
	if err := e.c.ctl.renew(e.ctx); err != nil {
		t.Fatalf("renew: %v", err)
	}
	st, err := LoadState(e.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if st.ID != old.ID || st.cert.SerialNumber.Cmp(old.cert.SerialNumber) == 0 || publicKeysEqual(st.cert.PublicKey, old.key.Public()) {
		t.Fatal("renewal did not store a new credential with a new key")
	}
	// The controller accepts the renewed credential.
	if err := e.c.ctl.heartbeat(e.ctx); err != nil {
		t.Fatalf("heartbeat with the renewed credential: %v", err)
	}
	// The --metrics listener of Run serves health.
	e.stopC()
	e.stopC = func() {}
	e.startConnector(func(c *Config) { c.MetricsAddr = "127.0.0.1:0" })
	addr := e.c.MetricsListenAddr()
	if addr == "" {
		t.Fatal("metrics endpoint not started")
	}
	for path, want := range map[string]string{"/healthz": `"status":"ok"`, "/metrics": "postern_connector_policy_revision"} {
		// The controller may store the heartbeat's digest (what
		// startConnector waits for) a moment before the connector has
		// recorded the answer: allow that moment.
		var last string
		ok := false
		for deadline := time.Now().Add(5 * time.Second); !ok && time.Now().Before(deadline); {
			resp, body := testenv.Get(t, "http://"+addr+path)
			last = fmt.Sprintf("%d %s", resp.StatusCode, body)
			if ok = resp.StatusCode == 200 && strings.Contains(body, want); !ok {
				time.Sleep(50 * time.Millisecond)
			}
		}
		if !ok {
			t.Fatalf("%s: %s", path, last)
		}
	}
}
