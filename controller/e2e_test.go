package controller

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/adminapi"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/pki"
)

func TestEnrollmentSingleUseAndMTLS(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	e.apply(testYAML)

	// The token for a connector not in any network is refused.
	if _, err := e.c.EnrollmentToken(KindConnector, "ghost", 0); err == nil || !strings.Contains(err.Error(), "not listed") {
		t.Fatalf("token for unlisted connector: %v", err)
	}
	st, data := e.call(nil, "POST", "/api/v1/connector-tokens", e.c.AdminToken(), map[string]string{"name": "ghost"})
	if st != 404 || !strings.Contains(string(data), "ghost") {
		t.Fatalf("REST token for unlisted connector: %d %s", st, data)
	}
	if st, _ := e.call(nil, "POST", "/api/v1/connector-tokens", "wrong", map[string]string{"name": "corp-a"}); st != 401 {
		t.Fatalf("mint without admin token: %d", st)
	}
	var mint MintResponse
	mustJSON(t, e.admin("POST", "/api/v1/connector-tokens", map[string]string{"name": "corp-a"}, 201), &mint)
	et, err := controlapi.ParseEnrollmentToken(mint.Token)
	if err != nil {
		t.Fatal(err)
	}
	if et.Kind != "connector" || et.Name != "corp-a" || et.ControllerURL != e.url || et.CAFingerprint != e.c.CAFingerprint() {
		t.Fatalf("token: %+v", et)
	}
	// The fingerprint lets a newcomer fetch and pin the CA (leaf + CA in the chain).
	u, _ := url.Parse(et.ControllerURL)
	ca, err := pki.FetchCAByFingerprint(u.Host, u.Hostname(), et.CAFingerprint, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if pki.CertDigest(ca.Raw) != e.c.CAFingerprint() {
		t.Fatal("fetched CA differs")
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	req := controlapi.EnrollRequest{Secret: et.Secret, PublicKeyPEM: pubPEM(pub), Hostname: "corp-a.internal"}
	if st, data := e.call(nil, "POST", controlapi.PathEnrollRelay, "", req); st != 400 {
		t.Fatalf("connector token at relay endpoint: %d %s", st, data)
	}
	st, data = e.call(nil, "POST", controlapi.PathEnrollConnector, "", req)
	if st != 200 {
		t.Fatalf("enroll: %d %s", st, data)
	}
	var er controlapi.EnrollResponse
	mustJSON(t, data, &er)
	leaf, _ := pki.ParseCertPEM([]byte(er.CertificatePEM))
	if leaf.Subject.CommonName != "connector:"+er.ID || er.Network != "corp" || er.Name != "corp-a" {
		t.Fatalf("credential: CN %q resp %+v", leaf.Subject.CommonName, er)
	}
	if _, err := leaf.Verify(x509Opts(ca)); err != nil {
		t.Fatalf("credential does not chain to the CA: %v", err)
	}
	// Second use refused.
	pub2, _, _ := ed25519.GenerateKey(rand.Reader)
	req.PublicKeyPEM = pubPEM(pub2)
	st, data = e.call(nil, "POST", controlapi.PathEnrollConnector, "", req)
	if st != 401 || !strings.Contains(string(data), "already used") {
		t.Fatalf("reuse: %d %s", st, data)
	}
	if st, _ := e.call(nil, "POST", controlapi.PathEnrollConnector, "", controlapi.EnrollRequest{Secret: "nope", PublicKeyPEM: pubPEM(pub2)}); st != 401 {
		t.Fatalf("unknown secret: %d", st)
	}
	// Expired token refused.
	short, _ := e.c.enrollmentToken(context.Background(), "admin", KindConnector, "corp-b", time.Millisecond)
	time.Sleep(5 * time.Millisecond)
	set, _ := controlapi.ParseEnrollmentToken(short)
	if st, data := e.call(nil, "POST", controlapi.PathEnrollConnector, "", controlapi.EnrollRequest{Secret: set.Secret, PublicKeyPEM: pubPEM(pub2)}); st != 401 || !strings.Contains(string(data), "expired") {
		t.Fatalf("expired token: %d %s", st, data)
	}

	cert := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: priv, Leaf: leaf}
	cl := e.client(&cert)
	hb := controlapi.Heartbeat{CertSHA256: []string{randomDigest()}, Addrs: []string{"192.0.2.1:443"}}
	if st, data := e.call(cl, "POST", controlapi.PathConnectorHeartbeat, "", hb); st != 200 {
		t.Fatalf("heartbeat: %d %s", st, data)
	}
	// Without a client certificate, or with a self-signed one, component endpoints refuse.
	if st, _ := e.call(nil, "POST", controlapi.PathConnectorHeartbeat, "", hb); st != 401 {
		t.Fatalf("heartbeat without cert: %d", st)
	}
	self, _ := pki.SelfSigned(priv, "connector:"+er.ID, time.Hour)
	// (Go's TLS client withholds a certificate the server's CA list does not
	// name; either way the request must not be authenticated.)
	if resp, err := e.client(&self).Post(e.url+controlapi.PathConnectorHeartbeat, "application/json", strings.NewReader("{}")); err == nil {
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("self-signed client certificate: %d", resp.StatusCode)
		}
	}
	// Bad heartbeat input is refused with the field named.
	st, data = e.call(cl, "POST", controlapi.PathConnectorHeartbeat, "", controlapi.Heartbeat{CertSHA256: []string{"xyz"}})
	if st != 400 || !strings.Contains(string(data), "cert_sha256[0]") {
		t.Fatalf("bad digest: %d %s", st, data)
	}
	// Renewal with a new key: the old credential stops working.
	pub3, priv3, _ := ed25519.GenerateKey(rand.Reader)
	st, data = e.call(cl, "POST", controlapi.PathRenew, "", controlapi.RenewRequest{PublicKeyPEM: pubPEM(pub3)})
	if st != 200 {
		t.Fatalf("renew: %d %s", st, data)
	}
	mustJSON(t, data, &er)
	leaf3, _ := pki.ParseCertPEM([]byte(er.CertificatePEM))
	cert3 := tls.Certificate{Certificate: [][]byte{leaf3.Raw}, PrivateKey: priv3, Leaf: leaf3}
	if st, data := e.call(e.client(&cert3), "POST", controlapi.PathConnectorHeartbeat, "", hb); st != 200 {
		t.Fatalf("heartbeat with renewed credential: %d %s", st, data)
	}
	if st, _ := e.call(e.client(&cert), "POST", controlapi.PathConnectorHeartbeat, "", hb); st != 401 {
		t.Fatalf("old credential after rekey: %d", st)
	}
	// Removing the connector from network.yaml revokes its credential.
	e.apply(strings.Replace(testYAML, "[corp-a, corp-b]", "[corp-b]", 1))
	if st, _ := e.call(e.client(&cert3), "POST", controlapi.PathConnectorHeartbeat, "", hb); st != 401 {
		t.Fatalf("heartbeat of removed connector: %d", st)
	}
}

func TestPolicyPushWithinOneSecondAndResume(t *testing.T) {
	e := newTestController(t, t.TempDir(), func(c *Config) { c.HeartbeatInterval = time.Minute })
	e.apply(testYAML)
	con := e.enroll(KindConnector, "corp-a")
	e.heartbeat(con, randomDigest(), "192.0.2.10:4433")
	dev := e.login("alice@example.com", "correct horse")

	cs := e.openStream(con.http, controlapi.PathConnectorPolicy, "")
	var cp controlapi.ConnectorPolicy
	cs.next(t, 2*time.Second, &cp)
	if cp.ConnectorID != con.id || cp.Network != "corp" || len(cp.Resources) != 2 || cp.Issuer != e.url || len(cp.JWKS) == 0 || cp.Revision == 0 {
		t.Fatalf("connector snapshot: %+v", cp)
	}
	alice := dev.session.Principal.ID
	if !slices.Contains(cp.Resources[0].Principals, alice) {
		t.Fatalf("alice not among principals: %+v", cp.Resources[0])
	}
	clStream := e.openStream(e.client(nil), controlapi.PathClientPolicy, dev.session.SessionToken)
	var clp controlapi.ClientPolicy
	clStream.next(t, 2*time.Second, &clp)
	if clp.Principal.Name != "alice@example.com" || len(clp.Resources) != 2 || len(clp.Connectors) != 2 {
		t.Fatalf("client snapshot: %+v", clp)
	}
	for _, ci := range clp.Connectors {
		if ci.ID == con.id && (!ci.Online || len(ci.CertSHA256) != 1 || ci.Addrs[0] != "192.0.2.10:4433") {
			t.Fatalf("connector info: %+v", ci)
		}
	}

	// A policy change reaches both within 1 s.
	e.apply(strings.Replace(testYAML, "tcp/8000-8100", "tcp/8000-8101", 1))
	start := time.Now()
	var cp2 controlapi.ConnectorPolicy
	cs.next(t, time.Second, &cp2)
	var clp2 controlapi.ClientPolicy
	clStream.next(t, time.Second, &clp2)
	t.Logf("change reached both subscribers in %s", time.Since(start))
	if cp2.Revision <= cp.Revision || clp2.Revision <= clp.Revision {
		t.Fatalf("revision did not move: %d -> %d", cp.Revision, cp2.Revision)
	}
	found := false
	for _, r := range cp2.Resources {
		if r.Name == "web" && slices.Equal(r.Ports, []string{"tcp/8000-8101"}) {
			found = true
		}
	}
	if !found {
		t.Fatalf("change not in snapshot: %+v", cp2.Resources)
	}
	// Removing alice from engineering empties her resource list.
	e.apply(strings.Replace(testYAML, "users: [alice@example.com]", "users: []", 1))
	clStream.next(t, time.Second, &clp2)
	if len(clp2.Resources) != 0 {
		t.Fatalf("alice still has %d resources", len(clp2.Resources))
	}
	cs.next(t, time.Second, &cp2)
	if slices.Contains(cp2.Resources[0].Principals, alice) {
		t.Fatal("alice still allowed on connector")
	}

	// Resume: with ?rev=current nothing arrives until the revision moves.
	cur := e.c.model().Rev
	rs := e.openStream(con.http, fmt.Sprintf("%s?rev=%d", controlapi.PathConnectorPolicy, cur), "")
	select {
	case line := <-rs.lines:
		t.Fatalf("resumed stream sent %s before a change", line)
	case <-time.After(300 * time.Millisecond):
	}
	e.apply(testYAML)
	var cp3 controlapi.ConnectorPolicy
	rs.next(t, time.Second, &cp3)
	if cp3.Revision <= cur {
		t.Fatalf("resumed snapshot rev %d <= %d", cp3.Revision, cur)
	}
	// A stale rev gets the snapshot at once.
	old := e.openStream(con.http, controlapi.PathConnectorPolicy+"?rev=1", "")
	old.next(t, time.Second, &cp3)
	future := e.openStream(con.http, controlapi.PathConnectorPolicy+"?rev=999999", "")
	future.next(t, time.Second, &cp3)
	if st, _ := e.call(con.http, "GET", controlapi.PathConnectorPolicy+"?rev=abc", "", nil); st != 400 {
		t.Fatalf("bad rev: %d", st)
	}
}

func TestKeepalive(t *testing.T) {
	e := newTestController(t, t.TempDir(), func(c *Config) { c.KeepaliveInterval = 100 * time.Millisecond })
	e.apply(testYAML)
	con := e.enroll(KindConnector, "corp-a")
	s := e.openStream(con.http, controlapi.PathConnectorPolicy, "")
	<-s.lines
	select {
	case line := <-s.lines:
		if string(line) != `{"keepalive":true}` {
			t.Fatalf("got %s", line)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no keepalive")
	}
}

func TestRevocationAndLogout(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	e.apply(testYAML)
	con := e.enroll(KindConnector, "corp-a")
	e.heartbeat(con, randomDigest())
	cs := e.openStream(con.http, controlapi.PathConnectorPolicy, "")
	var cp controlapi.ConnectorPolicy
	cs.next(t, time.Second, &cp)

	dev := e.login("alice@example.com", "correct horse")
	if _, err := e.c.IssueConnectionToken(dev.session.SessionToken, con.id); err != nil {
		t.Fatal(err)
	}
	// Sessions and devices are listed.
	var sessions ListResponse
	mustJSON(t, e.admin("GET", "/api/v1/sessions", nil, 200), &sessions)
	if len(sessions.Items) != 1 || strings.Contains(fmt.Sprint(sessions.Items), dev.session.SessionToken) {
		t.Fatalf("sessions: %+v", sessions.Items)
	}
	sid := sessions.Items[0].(map[string]any)["id"].(string)
	e.admin("DELETE", "/api/v1/sessions/"+sid, nil, 204)
	deadline := time.Now().Add(time.Second)
	for {
		cs.next(t, time.Second, &cp)
		if slices.Contains(cp.RevokedDevices, dev.session.DeviceID) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("revoked device not pushed within 1 s")
		}
	}
	if _, err := e.c.IssueConnectionToken(dev.session.SessionToken, con.id); err == nil {
		t.Fatal("token issued after revocation")
	}
	if st, _ := e.call(nil, "POST", controlapi.PathConnectionToken, dev.session.SessionToken, controlapi.TokenRequest{ConnectorID: con.id}); st != 401 {
		t.Fatalf("token after revoke: %d", st)
	}
	// The revoked device key cannot sign in again.
	st, data := e.call(nil, "POST", controlapi.PathLogin, "", controlapi.LoginRequest{Email: "alice@example.com", Password: "correct horse",
		DevicePublicKey: base64.StdEncoding.EncodeToString(dev.pub)})
	if st != 403 {
		t.Fatalf("login with revoked device: %d %s", st, data)
	}
	// Logout ends a session; the audit log records the revocation.
	dev2 := e.login("alice@example.com", "correct horse")
	if st, _ := e.call(nil, "POST", controlapi.PathLogout, dev2.session.SessionToken, nil); st != 204 {
		t.Fatalf("logout: %d", st)
	}
	if _, err := e.c.IssueConnectionToken(dev2.session.SessionToken, con.id); err == nil {
		t.Fatal("token after logout")
	}
	var audit struct {
		Items []map[string]any `json:"items"`
	}
	mustJSON(t, e.admin("GET", "/api/v1/audit?limit=1000", nil, 200), &audit)
	revokes := 0
	for _, a := range audit.Items {
		if a["action"] == "revoke" {
			revokes++
		}
	}
	if revokes < 3 {
		t.Fatalf("audit has %d revocations: %+v", revokes, audit.Items)
	}
}

func TestPasswordGuessingThrottled(t *testing.T) {
	clock := newFakeClock()
	e := newTestController(t, t.TempDir(), func(c *Config) { c.Now = clock.Now })
	e.apply(testYAML)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	try := func(pw string) (int, http.Header) {
		body, _ := json.Marshal(controlapi.LoginRequest{Email: "bob@example.com", Password: pw, DevicePublicKey: base64.StdEncoding.EncodeToString(pub)})
		resp, err := e.client(nil).Post(e.url+controlapi.PathLogin, "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header
	}
	for i := 0; i < pairFreeFailures; i++ {
		if st, _ := try(fmt.Sprintf("guess%d", i)); st != 401 {
			t.Fatalf("guess %d: %d", i, st)
		}
	}
	// Now even the right password from this IP waits a second.
	if st, h := try("battery staple"); st != 429 || h.Get("Retry-After") == "" {
		t.Fatalf("after %d failures: %d (Retry-After %q), want 429", pairFreeFailures, st, h.Get("Retry-After"))
	}
	// Other accounts from this IP are not delayed.
	e.login("alice@example.com", "correct horse")
	clock.Add(1100 * time.Millisecond)
	if st, _ := try("battery staple"); st != 200 {
		t.Fatalf("after the delay: %d", st)
	}
	// Unknown accounts fail the same way.
	if st, data := e.call(nil, "POST", controlapi.PathLogin, "", controlapi.LoginRequest{Email: "nobody@example.com", Password: "x", DevicePublicKey: base64.StdEncoding.EncodeToString(pub)}); st != 401 || !strings.Contains(string(data), "wrong email or password") {
		t.Fatalf("unknown account: %d %s", st, data)
	}
	// Per-IP: many accounts guessed from one IP get throttled too.
	lt := newLoginThrottle(clock.Now)
	for i := 0; i < ipFreeFailures; i++ {
		lt.fail(context.Background(), loginAttempt{Account: fmt.Sprintf("user:%d", i), IP: "x"})
	}
	if lt.check(context.Background(), loginAttempt{Account: "user:new", IP: "x"}).wait == 0 {
		t.Fatal("IP not throttled")
	}
}

func TestOfflineAfterMissedHeartbeats(t *testing.T) {
	t.Parallel()
	e := newTestController(t, t.TempDir(), func(c *Config) { c.HeartbeatInterval = time.Second })
	e.apply(testYAML)
	con := e.enroll(KindConnector, "corp-a")
	e.heartbeat(con, randomDigest(), "192.0.2.10:4433")
	var cv adminapi.ConnectorView
	mustJSON(t, e.admin("GET", "/api/v1/connectors/"+con.id, nil, 200), &cv)
	if !cv.Online || cv.LastHeartbeat == nil || len(cv.CertSHA256) != 1 || cv.Addrs[0] != "192.0.2.10:4433" || !cv.Enrolled {
		t.Fatalf("connector view: %+v", cv)
	}
	testenv.Eventually(t, 6*time.Second, "the connector to go offline after missed heartbeats", func() bool {
		return !e.c.model().Connectors[con.id].Online
	})
	mustJSON(t, e.admin("GET", "/api/v1/connectors/corp-a", nil, 200), &cv)
	if cv.Online {
		t.Fatal("API shows connector online")
	}
	e.heartbeat(con, cv.CertSHA256[0])
	if !e.c.model().Connectors[con.id].Online {
		t.Fatal("heartbeat did not bring it back online")
	}
}

func TestRelayAndTURN(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	e.apply(testYAML)
	rl := e.enroll(KindRelay, "relay-1")
	if !strings.HasPrefix(rl.cert.Leaf.Subject.CommonName, "relay:") {
		t.Fatal(rl.cert.Leaf.Subject.CommonName)
	}
	st, data := e.call(rl.http, "POST", controlapi.PathRelayRegister, "", controlapi.RelayRegister{PublicIP: "203.0.113.5", UDPAddr: "203.0.113.5:3478", TLSAddr: "203.0.113.5:443", Version: "t", TLSCertSHA256: strings.Repeat("ab", 32)})
	if st != 200 {
		t.Fatalf("register: %d %s", st, data)
	}
	var rr controlapi.RelayRegisterResponse
	mustJSON(t, data, &rr)
	if rr.ID != rl.id || rr.TURNSecret == "" || rr.Issuer != e.url || len(rr.JWKS) == 0 {
		t.Fatalf("register response: %+v", rr)
	}
	// A relay cannot use connector endpoints.
	if st, _ := e.call(rl.http, "POST", controlapi.PathConnectorHeartbeat, "", controlapi.Heartbeat{CertSHA256: []string{randomDigest()}}); st != 403 {
		t.Fatalf("relay heartbeat as connector: %d", st)
	}
	dev := e.login("alice@example.com", "correct horse")
	st, data = e.call(nil, "GET", controlapi.PathTURNCredentials, dev.session.SessionToken, nil)
	if st != 200 {
		t.Fatalf("turn: %d %s", st, data)
	}
	var tc controlapi.TURNCredentials
	mustJSON(t, data, &tc)
	mac := hmac.New(sha1.New, []byte(rr.TURNSecret))
	mac.Write([]byte(tc.Username))
	if base64.StdEncoding.EncodeToString(mac.Sum(nil)) != tc.Password || !strings.HasSuffix(tc.Username, ":"+dev.session.Principal.ID+"/"+dev.session.DeviceID) {
		t.Fatalf("TURN credential does not verify with the relay's secret: %+v", tc)
	}
	if len(tc.Relays) != 1 || tc.Relays[0].UDPAddr != "203.0.113.5:3478" || tc.Relays[0].TLSCertSHA256 != strings.Repeat("ab", 32) || !tc.Relays[0].Online {
		t.Fatalf("relays: %+v", tc.Relays)
	}
	con := e.enroll(KindConnector, "corp-a")
	if st, data := e.call(con.http, "POST", controlapi.PathTURNCredentials, "", nil); st != 200 || !strings.Contains(string(data), "connector:"+con.id) {
		t.Fatalf("connector turn: %d %s", st, data)
	}
	if st, _ := e.call(nil, "GET", controlapi.PathTURNCredentials, "", nil); st != 401 {
		t.Fatalf("anonymous turn: %d", st)
	}
}

func TestServiceAccountLoginAndEvents(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	e.apply(testYAML)
	var key controlapi.ServiceKey
	mustJSON(t, e.admin("POST", "/api/v1/service-accounts/ci/keys", nil, 201), &key)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	st, data := e.call(nil, "POST", controlapi.PathLogin, "", controlapi.LoginRequest{ServiceKey: &key, DevicePublicKey: base64.StdEncoding.EncodeToString(pub)})
	if st != 200 {
		t.Fatalf("service login: %d %s", st, data)
	}
	var lr controlapi.LoginResponse
	mustJSON(t, data, &lr)
	if lr.Principal.Kind != "service_account" || lr.Principal.Name != "ci" || !slices.Contains(lr.Principal.Groups, "engineering") {
		t.Fatalf("principal: %+v", lr.Principal)
	}
	bad := key
	bad.Secret = strings.Repeat("0", 64)
	if st, _ := e.call(nil, "POST", controlapi.PathLogin, "", controlapi.LoginRequest{ServiceKey: &bad, DevicePublicKey: base64.StdEncoding.EncodeToString(pub)}); st != 401 {
		t.Fatalf("bad service key: %d", st)
	}
	if st, _ := e.call(nil, "POST", controlapi.PathLogin, "", controlapi.LoginRequest{ServiceKey: &key, DevicePublicKey: "short"}); st != 400 {
		t.Fatalf("bad device key: %d", st)
	}
	// Deleting the key ends new sign-ins.
	e.admin("DELETE", "/api/v1/service-accounts/ci/keys/"+key.KeyID, nil, 204)
	if st, _ := e.call(nil, "POST", controlapi.PathLogin, "", controlapi.LoginRequest{ServiceKey: &key, DevicePublicKey: base64.StdEncoding.EncodeToString(pub)}); st != 401 {
		t.Fatalf("deleted service key: %d", st)
	}

	con := e.enroll(KindConnector, "corp-a")
	ev := controlapi.FlowEvents{Events: []controlapi.FlowEvent{{Principal: lr.Principal.ID, Device: lr.DeviceID, ResourceID: "res_x", Destination: "db.corp.internal", Port: 5432, Protocol: "tcp", Start: time.Now(), DurationMS: 12, BytesUp: 100, BytesDown: 2000, Result: "ok"}}}
	if st, data := e.call(con.http, "POST", controlapi.PathConnectorEvents, "", ev); st != 204 {
		t.Fatalf("events: %d %s", st, data)
	}
	var evs struct {
		Items []EventView `json:"items"`
	}
	mustJSON(t, e.admin("GET", "/api/v1/events", nil, 200), &evs)
	if len(evs.Items) != 1 || evs.Items[0].ConnectorID != con.id || evs.Items[0].BytesDown != 2000 {
		t.Fatalf("events: %+v", evs.Items)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		e := newTestController(t, t.TempDir(), nil)
		e.apply(testYAML)
		con := e.enroll(KindConnector, "corp-a")
		s := e.openStream(con.http, controlapi.PathConnectorPolicy, "")
		<-s.lines
		e.stop()
		s.close()
		e.client(nil).CloseIdleConnections()
	}()
	testenv.WaitGoroutines(t, before+2, 5*time.Second)
}

func TestOpenRefusesBadConfig(t *testing.T) {
	if _, err := Open(Config{DataDir: t.TempDir(), PublicURL: "http://x"}); err == nil {
		t.Fatal("http URL accepted")
	}
	if _, err := Open(Config{PublicURL: "https://x"}); err == nil {
		t.Fatal("missing DataDir accepted")
	}
	var _ = json.Marshal
}
