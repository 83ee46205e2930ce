package controller

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/adminapi"
	"postern.dev/postern/controller/store"
	"postern.dev/postern/controller/store/pgtest"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/pki"
)

// newReplica starts a controller on the shared database dbURL serving on its
// own port; publicURL is the deployment's (load balancer's) URL, the same
// for every replica.
func newReplica(t *testing.T, dir, publicURL, dbURL string, mod func(*Config)) *testEnv {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if publicURL == "" {
		publicURL = "https://" + ln.Addr().String()
	}
	cfg := Config{DataDir: dir, DatabaseURL: dbURL, PublicURL: publicURL, RateLimit: 10000, RateBurst: 10000}
	if mod != nil {
		mod(&cfg)
	}
	if cfg.AdvertiseURL == advertiseSelf {
		cfg.AdvertiseURL = "https://" + ln.Addr().String()
	}
	c, err := Open(cfg)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	env := &testEnv{t: t, c: c, url: "https://" + ln.Addr().String(), dir: dir, cancel: cancel, done: make(chan error, 1)}
	ca, _ := pki.ParseCertPEM(c.CACertPEM())
	env.pool = pki.CAPool(ca)
	go func() { env.done <- c.Serve(ctx, ln) }()
	t.Cleanup(env.stop)
	return env
}

// newReplicaPair starts two replicas, A and B, of one deployment on a fresh
// PostgreSQL database (B with A's copied deployment files and public URL),
// both configured by mod.
func newReplicaPair(t *testing.T, mod func(*Config)) (a, b *testEnv) {
	t.Helper()
	dbURL := pgtest.Start(t).NewDatabase(t)
	base := t.TempDir()
	a = newReplica(t, filepath.Join(base, "a"), "", dbURL, mod)
	copyDeployment(t, a.dir, filepath.Join(base, "b"))
	b = newReplica(t, filepath.Join(base, "b"), a.c.Issuer(), dbURL, mod)
	return a, b
}

// advertiseSelf, as Config.AdvertiseURL of newReplica, stands for the
// replica's own listener URL.
const advertiseSelf = "self"

// copyDeployment copies what replicas share from one data directory to
// another, as docs/controller.md tells operators to.
func copyDeployment(t *testing.T, from, to string) {
	t.Helper()
	if err := CopyDeployment(from, to); err != nil {
		t.Fatal(err)
	}
}

// TestReplicasOnPostgres runs two controllers on one PostgreSQL database:
// a change applied through A reaches a client policy stream on B within
// 1 s, a connector heartbeating only to B stays online and visible on A,
// and a replica with another CA is refused.
func TestReplicasOnPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	dbURL := pg.NewDatabase(t)
	base := t.TempDir()
	hb := func(c *Config) { c.HeartbeatInterval = time.Second }
	a := newReplica(t, filepath.Join(base, "a"), "", dbURL, hb)
	copyDeployment(t, a.dir, filepath.Join(base, "b"))
	b := newReplica(t, filepath.Join(base, "b"), a.c.Issuer(), dbURL, hb)
	if a.c.AdminToken() != b.c.AdminToken() || a.c.CAFingerprint() != b.c.CAFingerprint() || string(a.c.JWKS()) != string(b.c.JWKS()) {
		t.Fatal("replicas do not share the deployment identity")
	}

	// Apply through A's admin API; B's model follows.
	a.admin("POST", "/api/v1/apply", fastYAML(testYAML), 200)
	testenv.Poll(t, time.Second, "B to follow A's apply", func() error {
		if rb, ra := b.c.model().Rev, a.c.model().Rev; rb != ra {
			return fmt.Errorf("replica B at revision %d, A at %d", rb, ra)
		}
		return nil
	})

	// Alice signs in on B and watches her policy there.
	dev := b.login("alice@example.com", "correct horse")
	cs := b.openStream(b.client(nil), controlapi.PathClientPolicy, dev.session.SessionToken)
	var p1 controlapi.ClientPolicy
	cs.next(t, 2*time.Second, &p1)
	if len(p1.Resources) != 2 {
		t.Fatalf("client snapshot on B: %+v", p1)
	}
	// A change committed through A reaches the stream on B within 1 s.
	for i, change := range []string{"tcp/8000-8101", "tcp/8000-8102"} {
		a.admin("POST", "/api/v1/apply", fastYAML(strings.Replace(testYAML, "tcp/8000-8100", change, 1)), 200)
		start := time.Now()
		var p2 controlapi.ClientPolicy
		cs.next(t, time.Second, &p2)
		t.Logf("change %d applied on A reached the client stream on B after %v", i+1, time.Since(start))
		if p2.Revision <= p1.Revision {
			t.Fatalf("revision did not move: %d -> %d", p1.Revision, p2.Revision)
		}
		found := false
		for _, r := range p2.Resources {
			found = found || slices.Contains(r.Ports, change)
		}
		if !found {
			t.Fatalf("change %s not in B's snapshot: %+v", change, p2.Resources)
		}
		p1 = p2
	}

	// A connector enrolled with a token minted by A, exchanged and
	// heartbeating only through B.
	tok, err := a.c.EnrollmentToken(KindConnector, "corp-a", 0)
	if err != nil {
		t.Fatal(err)
	}
	con := b.enrollWith(tok, "corp-a")
	digest := randomDigest()
	b.heartbeat(con, digest, "192.0.2.10:4433")
	start := time.Now()
	for {
		cn := a.c.model().Connectors[con.id]
		if cn != nil && cn.Online && slices.Equal(cn.CertSHA256, []string{digest}) {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("heartbeat through B not visible on A within 1 s: %+v", cn)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("heartbeat through B visible on A after %v", time.Since(start))
	// A can issue a Connection Token for it (it knows the digest), and its
	// admin API shows the heartbeat B received.
	resp, err := a.c.IssueConnectionToken(dev.session.SessionToken, "corp-a")
	if err != nil || resp.CertSHA256 != digest {
		t.Fatalf("token from A for a connector heartbeating to B: %+v %v", resp, err)
	}
	// Rotating the token-signing key through A reaches B (its JWKS, its
	// connector pushes and its DATA/token-keys.json) within 1 s, and a token
	// A signs with the new key verifies with the JWKS B pushes.
	ps := b.openStream(con.http, controlapi.PathConnectorPolicy, "")
	var cp1 controlapi.ConnectorPolicy
	ps.next(t, 2*time.Second, &cp1)
	var rotated ctoken.JWKS
	mustJSON(t, a.admin("POST", "/api/v1/token-keys/rotate", nil, 200), &rotated)
	if len(rotated.Keys) != 2 {
		t.Fatalf("JWKS after rotation: %+v", rotated)
	}
	start = time.Now()
	var cp2 controlapi.ConnectorPolicy
	ps.next(t, time.Second, &cp2)
	t.Logf("rotation on A reached a connector stream on B after %v", time.Since(start))
	var pushed ctoken.JWKS
	if err := json.Unmarshal(cp2.JWKS, &pushed); err != nil || len(pushed.Keys) != 2 || pushed.Keys[0].Kid != rotated.Keys[0].Kid {
		t.Fatalf("B pushed JWKS %s (%v), want the rotated one", cp2.JWKS, err)
	}
	if string(b.c.JWKS()) != string(a.c.JWKS()) {
		t.Fatal("replicas disagree on the JWKS after rotation")
	}
	fileA, _ := os.ReadFile(filepath.Join(a.dir, "token-keys.json"))
	fileB, _ := os.ReadFile(filepath.Join(b.dir, "token-keys.json"))
	if string(fileA) != string(fileB) {
		t.Fatal("token-keys.json differs between replicas after rotation")
	}
	// The database holds the keys sealed: no private key in the clear.
	var keys []signingKey
	mustJSON(t, fileB, &keys)
	if err := b.c.store.View(context.Background(), func(tx store.Tx) error {
		o, err := tx.Get(kindTokenKeys, tokenKeysID)
		for _, k := range keys {
			if err == nil && strings.Contains(string(o.Data), k.Private) {
				return errors.New("a private signing key is stored in the clear")
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	resp, err = a.c.IssueConnectionToken(dev.session.SessionToken, "corp-a")
	if err != nil {
		t.Fatal(err)
	}
	set, err := ctoken.ParseJWKS(cp2.JWKS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&ctoken.Verifier{Issuer: a.c.Issuer(), Keys: ctoken.NewKeySet(set)}).Verify(resp.Token, con.id); err != nil {
		t.Fatalf("token signed by A after rotation does not verify with B's pushed JWKS: %v", err)
	}

	// Heartbeats keep going to B for more than three intervals: A must not
	// mark the connector offline (it hears of them through the database).
	stop := time.Now().Add(4500 * time.Millisecond)
	for time.Now().Before(stop) {
		b.heartbeat(con, digest, "192.0.2.10:4433")
		time.Sleep(500 * time.Millisecond)
		if !a.c.model().Connectors[con.id].Online {
			t.Fatal("replica A marked a connector heartbeating to B offline")
		}
	}
	var cv adminapi.ConnectorView
	mustJSON(t, a.admin("GET", "/api/v1/connectors/corp-a", nil, 200), &cv)
	if !cv.Online || cv.LastHeartbeat == nil || time.Since(*cv.LastHeartbeat) > 2*time.Second || cv.Addrs[0] != "192.0.2.10:4433" {
		t.Fatalf("connector as A shows it: %+v", cv)
	}
	// When the heartbeats stop, one replica marks it offline and both agree.
	testenv.Eventually(t, 6*time.Second, "both replicas to mark the connector offline after its heartbeats stopped", func() bool {
		return !a.c.model().Connectors[con.id].Online && !b.c.model().Connectors[con.id].Online
	})

	// The audit log written through A is read through B.
	var audit struct {
		Items []store.AuditEntry `json:"items"`
	}
	mustJSON(t, b.admin("GET", "/api/v1/audit?limit=1000", nil, 200), &audit)
	if len(audit.Items) == 0 {
		t.Fatal("no audit entries through B")
	}

	// A replica with its own CA (a data directory not copied) is refused,
	// naming what differs.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	_, err = Open(Config{DataDir: filepath.Join(base, "c"), DatabaseURL: dbURL, PublicURL: a.c.Issuer()})
	if !errors.Is(err, store.ErrDeploymentMismatch) || !strings.Contains(err.Error(), "ca_sha256") || !strings.Contains(err.Error(), "admin_token_sha256") {
		t.Fatalf("replica with another identity: %v", err)
	}
	// A bad URL is a configuration error.
	if _, err := Open(Config{DataDir: filepath.Join(base, "d"), DatabaseURL: "mysql://x/y", PublicURL: a.c.Issuer()}); !errors.Is(err, ErrConfig) {
		t.Fatalf("bad database URL: %v", err)
	}
}

// enrollWith exchanges an enrollment token (minted by any replica) here.
func (e *testEnv) enrollWith(tok, name string) *component {
	e.t.Helper()
	et, err := controlapi.ParseEnrollmentToken(tok)
	if err != nil {
		e.t.Fatal(err)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	st, data := e.call(nil, "POST", controlapi.PathEnrollConnector, "", controlapi.EnrollRequest{Secret: et.Secret, PublicKeyPEM: pubPEM(pub), Version: "test"})
	if st != 200 {
		e.t.Fatalf("enroll connector %s: %d %s", name, st, data)
	}
	var resp controlapi.EnrollResponse
	mustJSON(e.t, data, &resp)
	leaf, err := pki.ParseCertPEM([]byte(resp.CertificatePEM))
	if err != nil {
		e.t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: priv, Leaf: leaf}
	return &component{id: resp.ID, key: priv, cert: cert, http: e.client(&cert), enroll: resp}
}
