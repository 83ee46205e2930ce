package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/store"
	"postern.dev/postern/controller/store/pgtest"
	"postern.dev/postern/ctoken"
	"postern.dev/postern/internal/testenv"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestPartsFailOverToAnotherReplica: a client that knows only replica A
// learns B from its policy push; when A dies, its policy stream resumes on
// B by revision and sees a change applied through B, and its calls go to B.
func TestPartsFailOverToAnotherReplica(t *testing.T) {
	adv := func(c *Config) { c.HeartbeatInterval = time.Second; c.AdvertiseURL = advertiseSelf }
	a, b := newReplicaPair(t, adv)
	a.admin("POST", "/api/v1/apply", fastYAML(testYAML), 200)

	// Each replica hears of the other within a few heartbeats.
	want := []string{a.url, b.url}
	slices.Sort(want[1:])
	testenv.Poll(t, 5*time.Second, "each replica to hear of the other", func() error {
		if ga, gb := a.c.controllerURLs(), b.c.controllerURLs(); !slices.Equal(ga, want) || !slices.Equal(gb, want) {
			return fmt.Errorf("replica URLs: A %v, B %v; want %v", ga, gb, want)
		}
		return nil
	})

	dev := a.login("alice@example.com", "correct horse")
	api, err := controlapi.NewClient(controlapi.ClientConfig{URL: a.url, Roots: a.pool, Token: dev.session.SessionToken})
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()

	type got struct {
		p   controlapi.ClientPolicy
		err error
	}
	ch := make(chan got, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		var rev int64
		for ctx.Err() == nil {
			err := api.Stream(ctx, controlapi.PathClientPolicy, rev, func(line []byte) error {
				var p controlapi.ClientPolicy
				if line == nil || json.Unmarshal(line, &p) != nil || p.Keepalive {
					return nil
				}
				rev = p.Revision
				if err := api.SetLearned(p.ControllerURLs); err != nil {
					return err
				}
				ch <- got{p: p}
				return nil
			})
			if ctx.Err() == nil {
				ch <- got{err: err}
			}
		}
	}()
	next := func(what string) controlapi.ClientPolicy {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case g := <-ch:
				if g.err != nil {
					t.Logf("%s: stream ended: %v", what, g.err)
					continue
				}
				return g.p
			case <-timeout:
				t.Fatalf("%s: no policy within 10 s", what)
			}
		}
	}
	p1 := next("first snapshot")
	if !slices.Equal(p1.ControllerURLs, want) {
		t.Fatalf("policy names replicas %v, want %v", p1.ControllerURLs, want)
	}
	if got := api.URLs(); !slices.Equal(got, want) {
		t.Fatalf("client knows %v, want %v", got, want)
	}

	a.stop()
	start := time.Now()
	b.admin("POST", "/api/v1/apply", fastYAML(strings.Replace(testYAML, "tcp/8000-8100", "tcp/8000-8199", 1)), 200)
	p2 := next("after A died")
	t.Logf("the change applied on B reached the client %v after A died", time.Since(start))
	if p2.Revision <= p1.Revision || !slices.ContainsFunc(p2.Resources, func(r controlapi.PolicyResource) bool {
		return slices.Contains(r.Ports, "tcp/8000-8199")
	}) {
		t.Fatalf("resumed snapshot rev %d (was %d): %+v", p2.Revision, p1.Revision, p2.Resources)
	}
	if api.URL() != b.url {
		t.Fatalf("client talks to %s, want B %s", api.URL(), b.url)
	}
	var tok controlapi.TokenResponse
	err = api.Call(context.Background(), "POST", controlapi.PathConnectionToken, controlapi.TokenRequest{ConnectorID: "corp-a"}, &tok)
	var se *controlapi.StatusError
	if err != nil && !errors.As(err, &se) {
		t.Fatalf("a call after A died got no answer: %v", err)
	}
}

// TestSessionFromAnotherReplicaIsKnownAtOnce: a device that signed in on A
// and calls B right away (A died under it) is not told its session is
// unknown because B has not yet heard of the commit: B catches up with the
// database first.
func TestSessionFromAnotherReplicaIsKnownAtOnce(t *testing.T) {
	a, b := newReplicaPair(t, nil)
	a.admin("POST", "/api/v1/apply", fastYAML(testYAML), 200)
	for i := 0; i < 20; i++ {
		dev := a.login("alice@example.com", "correct horse")
		if st, body := b.call(nil, "GET", controlapi.PathMFA, dev.session.SessionToken, nil); st != 200 {
			t.Fatalf("sign-in %d on A, call on B at once: %d %s", i, st, body)
		}
	}
}

// TestAdvertiseURLGoesIntoTheCertificate: a replica's own host name is in
// its TLS certificate beside the public one, and a bad AdvertiseURL is
// refused by name.
func TestAdvertiseURLGoesIntoTheCertificate(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(Config{DataDir: dir, PublicURL: "https://postern.example:8443", AdvertiseURL: "https://replica-b.example:8443/"})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"postern.example", "replica-b.example"} {
		if err := c.tlsCert.Leaf.VerifyHostname(h); err != nil {
			t.Errorf("certificate: %v", err)
		}
	}
	c.Close()
	for _, bad := range []string{"http://replica-b.example", "https://", "https://replica-b.example/api"} {
		if _, err := Open(Config{DataDir: dir, PublicURL: "https://postern.example:8443", AdvertiseURL: bad}); err == nil || !strings.Contains(err.Error(), "AdvertiseURL") {
			t.Errorf("AdvertiseURL %q: %v", bad, err)
		}
	}
}

// TestRotationReachesStreamsAtOnceOnSQLite: rotating the token-signing key
// on a single SQLite controller is a commit: a connector's push stream gets
// the new JWKS at once, a stream resumed from the revision before the
// rotation gets it too, the old key stays in the set, and the rotation is
// in the audit log.
func TestRotationReachesStreamsAtOnceOnSQLite(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	e.apply(testYAML)
	con := e.enroll(KindConnector, "corp-a")
	ps := e.openStream(con.http, controlapi.PathConnectorPolicy, "")
	var before controlapi.ConnectorPolicy
	ps.next(t, 2*time.Second, &before)
	var rotated ctoken.JWKS
	mustJSON(t, e.admin("POST", "/api/v1/token-keys/rotate", nil, 200), &rotated)
	if len(rotated.Keys) != 2 {
		t.Fatalf("JWKS after rotation: %+v", rotated)
	}
	var after controlapi.ConnectorPolicy
	ps.next(t, time.Second, &after)
	var pushed ctoken.JWKS
	if err := json.Unmarshal(after.JWKS, &pushed); err != nil || len(pushed.Keys) != 2 || pushed.Keys[0].Kid != rotated.Keys[0].Kid {
		t.Fatalf("pushed JWKS %s (%v), want the rotated one", after.JWKS, err)
	}
	if after.Revision <= before.Revision {
		t.Fatalf("revision %d -> %d: a resumed stream would miss the rotation", before.Revision, after.Revision)
	}
	resumed := e.openStream(con.http, controlapi.PathConnectorPolicy+"?rev="+strconv.FormatInt(before.Revision, 10), "")
	var again controlapi.ConnectorPolicy
	resumed.next(t, time.Second, &again)
	if string(again.JWKS) != string(after.JWKS) {
		t.Fatalf("stream resumed at revision %d got JWKS %s", before.Revision, again.JWKS)
	}
	// The file mirrors the set: a restart keeps the rotated keys.
	var file []signingKey
	b, err := os.ReadFile(filepath.Join(e.dir, "token-keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	mustJSON(t, b, &file)
	if len(file) != 2 || file[0].KID != rotated.Keys[0].Kid {
		t.Fatalf("token-keys.json holds %d keys, first %q", len(file), file[0].KID)
	}
	var audit struct{ Items []store.AuditEntry }
	mustJSON(t, e.admin("GET", "/api/v1/audit", nil, 200), &audit)
	if !slices.ContainsFunc(audit.Items, func(a store.AuditEntry) bool { return a.Action == "rotate" && a.Kind == kindTokenKeys }) {
		t.Fatal("the rotation is not in the audit log")
	}
}

// TestJoiningReplicaIsPushedAtOnce: a replica that starts while streams are
// open is announced on them without waiting for a policy change.
func TestJoiningReplicaIsPushedAtOnce(t *testing.T) {
	pg := pgtest.Start(t)
	dbURL := pg.NewDatabase(t)
	base := t.TempDir()
	adv := func(c *Config) { c.HeartbeatInterval = time.Second; c.AdvertiseURL = advertiseSelf }
	a := newReplica(t, filepath.Join(base, "a"), "", dbURL, adv)
	a.admin("POST", "/api/v1/apply", fastYAML(testYAML), 200)
	dev := a.login("alice@example.com", "correct horse")
	cs := a.openStream(a.client(nil), controlapi.PathClientPolicy, dev.session.SessionToken)
	var p1 controlapi.ClientPolicy
	cs.next(t, 2*time.Second, &p1)
	if len(p1.ControllerURLs) != 0 {
		t.Fatalf("one replica: controller_urls %v, want none", p1.ControllerURLs)
	}
	copyDeployment(t, a.dir, filepath.Join(base, "b"))
	b := newReplica(t, filepath.Join(base, "b"), a.c.Issuer(), dbURL, adv)
	var p2 controlapi.ClientPolicy
	cs.next(t, 5*time.Second, &p2)
	if want := []string{a.url, b.url}; !slices.Equal(p2.ControllerURLs, want) {
		t.Fatalf("after B joined: controller_urls %v, want %v", p2.ControllerURLs, want)
	}
	if p2.Revision != p1.Revision {
		t.Logf("revision moved %d -> %d meanwhile", p1.Revision, p2.Revision)
	}
}

// TestReplicaFollowsSignInsIncrementally: sign-ins on replica A reach B's
// model by reading only the changes (no full reload per sign-in); B's model
// equals a full rebuild; a policy change still reloads in full; a logout
// on A (a tombstone-free update) and a deletion (a tombstone) follow too.
func TestReplicaFollowsSignInsIncrementally(t *testing.T) {
	a, b := newReplicaPair(t, nil)
	a.admin("POST", "/api/v1/apply", fastYAML(testYAML), 200)
	waitRev := func(rev int64) {
		t.Helper()
		testenv.Poll(t, 5*time.Second, "B to follow A", func() error {
			if got := b.c.model().Rev; got < rev {
				return fmt.Errorf("B at revision %d, want %d", got, rev)
			}
			return nil
		})
	}
	waitRev(a.c.model().Rev)
	count := func(how string) float64 {
		return testutil.ToFloat64(b.c.met.follows.WithLabelValues(how))
	}
	fullBefore, incBefore := count("full"), count("incremental")
	var devs []*device
	for i := 0; i < 10; i++ {
		devs = append(devs, a.login("alice@example.com", "correct horse"))
	}
	waitRev(a.c.model().Rev)
	if got := count("full") - fullBefore; got != 0 {
		t.Fatalf("B reloaded everything %v times for 10 sign-ins on A", got)
	}
	if count("incremental") == incBefore {
		t.Fatal("B did not follow incrementally")
	}
	for _, d := range devs {
		if b.c.model().Sessions[sha256Hex(d.session.SessionToken)] == nil {
			t.Fatal("a session created on A is missing from B's model")
		}
	}
	// A logout (a session revoked) and the gc's deletions follow too.
	a.call(nil, "POST", controlapi.PathLogout, devs[0].session.SessionToken, nil)
	if err := a.c.RevokeDevice(context.Background(), "test", devs[1].session.DeviceID); err != nil {
		t.Fatal(err)
	}
	waitRev(a.c.model().Rev)
	rev, objs, err := b.c.store.LoadAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	full, err := buildModel(rev, objs, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	inc := b.c.model()
	if inc.Rev != full.Rev || len(inc.Sessions) != len(full.Sessions) || len(inc.SessionByID) != len(full.SessionByID) || len(inc.Devices) != len(full.Devices) {
		t.Fatalf("B's followed model differs from a rebuild: rev %d/%d sessions %d/%d devices %d/%d",
			inc.Rev, full.Rev, len(inc.SessionByID), len(full.SessionByID), len(inc.Devices), len(full.Devices))
	}
	for id, s := range full.SessionByID {
		if is, ok := inc.SessionByID[id]; !ok || is.Revoked != s.Revoked {
			t.Fatalf("session %s differs on B", id)
		}
	}
	// A policy change is applied in full.
	fullBefore = count("full")
	a.admin("POST", "/api/v1/apply", fastYAML(strings.Replace(testYAML, "tcp/8000-8100", "tcp/8000-8150", 1)), 200)
	waitRev(a.c.model().Rev)
	if count("full") == fullBefore {
		t.Fatal("a policy change on A did not make B reload")
	}
}
