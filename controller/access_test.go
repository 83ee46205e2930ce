package controller

import (
	"encoding/base32"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/testenv"
)

const accessAPIYAML = `remote_networks:
  - name: corp
    connectors: [corp-a]
groups:
  - name: engineering
    users: [alice@example.com, bob@example.com, carol@example.com]
  - name: sre-leads
    users: [bob@example.com]
users:
  - email: alice@example.com
    password: "correct horse"
  - email: bob@example.com
    password: "battery staple"
  - email: carol@example.com
    password: "correct horse"
posture_profiles:
  - name: managed
    os_min: {linux: "6.1"}
    disk_encryption: true
resources:
  - name: plain
    address: plain.corp.internal
    network: corp
    ports: [tcp/22]
    groups: [engineering]
  - name: mfa-db
    address: mfa.corp.internal
    network: corp
    ports: [tcp/5432]
    groups: [engineering]
    require: {mfa: 1h, posture: [managed]}
  - name: prod-db
    address: db.corp.internal
    network: corp
    ports: [tcp/5432]
    groups: [engineering]
    require:
      approval: {approvers: [sre-leads], max: 8h}
auto_lock: 2h
`

func newAccessController(t *testing.T) (*testEnv, *fakeClock) {
	clk := &fakeClock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	e := newTestController(t, t.TempDir(), func(c *Config) { c.Now = clk.Now })
	e.apply(accessAPIYAML)
	return e, clk
}

func TestTOTPSecretSealedReplayAndAudit(t *testing.T) {
	e, clk := newAccessController(t)
	alice := e.login("alice@example.com", "correct horse")
	tok := alice.session.SessionToken
	st, data := e.call(nil, http.MethodPost, controlapi.PathMFAEnroll, tok, struct{}{})
	var enr controlapi.MFAEnrollResponse
	if st != 200 || json.Unmarshal(data, &enr) != nil {
		t.Fatalf("enroll: %d %s", st, data)
	}
	// The secret is not in the database in any readable form.
	raw, _ := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(enr.Secret)
	for _, f := range []string{"postern.db", "postern.db-wal"} {
		b, _ := os.ReadFile(filepath.Join(e.dir, f))
		if strings.Contains(string(b), enr.Secret) || (len(raw) > 0 && strings.Contains(string(b), string(raw))) {
			t.Fatalf("%s holds the TOTP secret in clear", f)
		}
	}
	code := func(at time.Time) string {
		c, err := totp.GenerateCodeCustom(enr.Secret, at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// A code from the previous step is accepted (drift); then an older or
	// the same step never again.
	if st, data := e.call(nil, http.MethodPost, controlapi.PathMFAVerify, tok, controlapi.MFAVerifyRequest{Code: code(clk.Now().Add(-30 * time.Second))}); st != 200 {
		t.Fatalf("verify previous step: %d %s", st, data)
	}
	if st, _ := e.call(nil, http.MethodPost, controlapi.PathMFAVerify, tok, controlapi.MFAVerifyRequest{Code: code(clk.Now().Add(-30 * time.Second))}); st != 403 {
		t.Fatalf("replay: %d", st)
	}
	if st, _ := e.call(nil, http.MethodPost, controlapi.PathMFAVerify, tok, controlapi.MFAVerifyRequest{Code: code(clk.Now().Add(-60 * time.Second))}); st != 403 {
		t.Fatalf("older step: %d", st)
	}
	if st, _ := e.call(nil, http.MethodPost, controlapi.PathMFAVerify, tok, controlapi.MFAVerifyRequest{Code: code(clk.Now())}); st != 200 {
		t.Fatalf("current step: %d", st)
	}
	// Enrolling again while confirmed is refused.
	if st, _ := e.call(nil, http.MethodPost, controlapi.PathMFAEnroll, tok, struct{}{}); st != http.StatusConflict {
		t.Fatalf("second enroll: %d", st)
	}
	// The token carries the step-up time and method.
	s, m, err := e.c.session(tok)
	if err != nil {
		t.Fatal(err)
	}
	mfaAt, amr, _, _ := m.accessClaims(s, "corp", clk.Now())
	if mfaAt != clk.Now().Unix() || len(amr) != 1 || amr[0] != "otp" {
		t.Fatalf("claims: %d %v", mfaAt, amr)
	}
	var audit ListResponse
	mustJSON(t, e.admin(http.MethodGet, "/api/v1/audit?limit=500", nil, 200), &audit)
	seen := map[string]int{}
	for _, it := range audit.Items {
		b, _ := json.Marshal(it)
		var a struct{ Action, Actor string }
		json.Unmarshal(b, &a)
		if strings.HasPrefix(a.Action, "mfa-") && a.Actor == "alice@example.com" {
			seen[a.Action]++
		}
	}
	if seen["mfa-enroll"] != 1 || seen["mfa-confirm"] != 1 || seen["mfa-verify"] != 1 || seen["mfa-failed"] != 2 {
		t.Fatalf("audit: %v", seen)
	}
}

func TestPostureEvaluation(t *testing.T) {
	p := PostureProfileSpec{OSMin: map[string]string{"linux": "6.1", "windows": "10.0.19045"}, DiskEncryption: true, Firewall: true, ClientMin: "0.3.0"}
	good := controlapi.PostureReport{OS: "linux", OSVersion: "6.1.0-13-amd64", DiskEncryption: true, Firewall: true, ClientVersion: "0.3.1"}
	cases := []struct {
		mod  func(*controlapi.PostureReport)
		want string
	}{
		{func(r *controlapi.PostureReport) {}, ""},
		{func(r *controlapi.PostureReport) { r.OSVersion = "5.10.0" }, "OS version 5.10.0 below 6.1"},
		{func(r *controlapi.PostureReport) { r.OSVersion = "6.10.2" }, ""},
		{func(r *controlapi.PostureReport) { r.OS, r.OSVersion = "windows", "10.0.19044" }, "OS version 10.0.19044 below 10.0.19045"},
		{func(r *controlapi.PostureReport) { r.OS = "darwin" }, `OS "darwin" not allowed`},
		{func(r *controlapi.PostureReport) { r.DiskEncryption = false }, "disk encryption off"},
		{func(r *controlapi.PostureReport) { r.Firewall = false }, "firewall off"},
		{func(r *controlapi.PostureReport) { r.ClientVersion = "0.2.9" }, "client 0.2.9 older than 0.3.0"},
		{func(r *controlapi.PostureReport) { r.ClientVersion = "0.3.0-dev" }, ""},
	}
	for i, tc := range cases {
		r := good
		tc.mod(&r)
		if got := evaluatePosture(&p, r); got != tc.want {
			t.Errorf("case %d: %q, want %q", i, got, tc.want)
		}
	}
}

func TestAccessRequestRulesAndClientView(t *testing.T) {
	e, clk := newAccessController(t)
	alice := e.login("alice@example.com", "correct horse")
	bob := e.login("bob@example.com", "battery staple")
	carol := e.login("carol@example.com", "correct horse")
	at, bt, ct := alice.session.SessionToken, bob.session.SessionToken, carol.session.SessionToken
	post := func(tok, path string, body any) (int, string) {
		st, data := e.call(nil, http.MethodPost, path, tok, body)
		return st, string(data)
	}
	// The client policy says what is missing.
	ps := e.openStream(e.client(nil), controlapi.PathClientPolicy, at)
	defer ps.close()
	var pol controlapi.ClientPolicy
	ps.next(t, 5*time.Second, &pol)
	notes := map[string]string{}
	for _, r := range pol.Resources {
		if r.Access != nil {
			notes[r.Name] = r.Access.Message
		}
	}
	if notes["prod-db"] != "needs approval (postern request prod-db)" || notes["mfa-db"] != "posture: no posture report from this device" {
		t.Fatalf("client view: %v", notes)
	}
	if st, body := post(at, controlapi.PathMyRequests, controlapi.AccessRequestCreate{Resource: "plain", Duration: "1h", Reason: "x"}); st != 400 || !strings.Contains(body, "needs no request") {
		t.Fatalf("request for an open resource: %d %s", st, body)
	}
	if st, body := post(at, controlapi.PathMyRequests, controlapi.AccessRequestCreate{Resource: "prod-db", Duration: "1h"}); st != 400 || !strings.Contains(body, "reason") {
		t.Fatalf("no reason: %d %s", st, body)
	}
	st, body := post(at, controlapi.PathMyRequests, controlapi.AccessRequestCreate{Resource: "prod-db", Duration: "4h", Reason: "migration"})
	var req controlapi.AccessRequest
	if st != 201 || json.Unmarshal([]byte(body), &req) != nil {
		t.Fatalf("request: %d %s", st, body)
	}
	if st, body := post(at, controlapi.PathMyRequests, controlapi.AccessRequestCreate{Resource: "prod-db", Duration: "1h", Reason: "again"}); st != 400 || !strings.Contains(body, "already pending") {
		t.Fatalf("second pending: %d %s", st, body)
	}
	act := controlapi.PathMyRequests + "/" + req.ID
	if st, _ := post(ct, act+"/approve", controlapi.AccessDecision{}); st != 403 {
		t.Fatalf("carol (no approver): %d", st)
	}
	if st, body := post(bt, act+"/approve", controlapi.AccessDecision{Duration: "9h"}); st != 400 || !strings.Contains(body, "longer than the 8h") {
		t.Fatalf("approve over max: %d %s", st, body)
	}
	if st, body := post(bt, act+"/approve", controlapi.AccessDecision{}); st != 200 || !strings.Contains(body, `"state": "active"`) {
		t.Fatalf("approve: %d %s", st, body)
	}
	if st, _ := post(bt, act+"/deny", controlapi.AccessDecision{Reason: "too late"}); st != http.StatusConflict {
		t.Fatalf("deciding twice: %d", st)
	}
	ps.next(t, 5*time.Second, &pol)
	for _, r := range pol.Resources {
		if r.Name == "prod-db" && (r.Access == nil || r.Access.ApprovedBy != "bob@example.com" || !strings.HasPrefix(r.Access.Message, "approved until ")) {
			t.Fatalf("client view after approval: %+v", r.Access)
		}
	}
	// The connector policy carries the grant; the end is recorded once and audited.
	conID := e.c.model().ConnectorByName["corp-a"].ID
	cp, _ := e.c.model().connectorPolicy(conID, "iss", nil, clk.Now())
	for _, r := range cp.Resources {
		if r.Name == "prod-db" && !r.Grants[alice.session.Principal.ID].Equal(clk.Now().Add(4*time.Hour)) {
			t.Fatalf("grants: %v", r.Grants)
		}
	}
	clk.Add(4*time.Hour + time.Second)
	testenv.Eventually(t, 5*time.Second, "the grant's end to be recorded", func() bool {
		return e.c.model().access.requests[req.ID].State == reqExpired
	})
	var audit ListResponse
	mustJSON(t, e.admin(http.MethodGet, "/api/v1/audit?limit=500", nil, 200), &audit)
	actions := map[string]bool{}
	for _, it := range audit.Items {
		b, _ := json.Marshal(it)
		var a struct{ Action, Actor, Name string }
		json.Unmarshal(b, &a)
		actions[a.Action+"/"+a.Actor+"/"+a.Name] = true
	}
	for _, want := range []string{"access-request/alice@example.com/prod-db", "access-approve/bob@example.com/prod-db", "access-expire/controller/prod-db"} {
		if !actions[want] {
			t.Errorf("audit lacks %s", want)
		}
	}
	// Deny needs a reason (admin API too).
	_, body = post(ct, controlapi.PathMyRequests, controlapi.AccessRequestCreate{Resource: "prod-db", Duration: "1h", Reason: "carol"})
	json.Unmarshal([]byte(body), &req)
	if st, _ := e.call(nil, http.MethodPost, controlapi.PathAccessRequests+"/"+req.ID+"/deny", e.c.AdminToken(), controlapi.AccessDecision{}); st != 400 {
		t.Fatalf("admin deny without reason: %d", st)
	}
	if st, _ := e.call(nil, http.MethodPost, controlapi.PathAccessRequests+"/"+req.ID+"/deny", e.c.AdminToken(), controlapi.AccessDecision{Reason: "no"}); st != 200 {
		t.Fatalf("admin deny: %d", st)
	}
}

func TestAutoLockWindow(t *testing.T) {
	e, clk := newAccessController(t)
	alice := e.login("alice@example.com", "correct horse")
	m := e.c.model()
	var plain *Resource
	for _, r := range m.Resources {
		if r.Name == "plain" {
			plain = r
		}
	}
	pid := alice.session.Principal.ID
	since := m.access.settings.Since
	if !since.Equal(clk.Now()) || !m.lastUse(pid, plain.ID).Equal(since) {
		t.Fatalf("window start: since %v last %v", since, m.lastUse(pid, plain.ID))
	}
	if next := m.nextAccessChange(clk.Now()); !next.Equal(since.Add(2 * time.Hour)) {
		t.Fatalf("next change %v", next)
	}
	// A use (a flow event) moves the window; one write per hour at most.
	clk.Add(90 * time.Minute)
	ev := []controlapi.FlowEvent{{Principal: pid, ResourceID: plain.ID, Result: "ok"}}
	if err := e.c.recordUse(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	rev := e.c.model().Rev
	clk.Add(10 * time.Minute)
	e.c.recordUse(t.Context(), ev)
	if e.c.model().Rev != rev {
		t.Fatal("a second use within the hour was written")
	}
	refused := []controlapi.FlowEvent{{Principal: pid, ResourceID: plain.ID, Result: "denied"}}
	clk.Add(2 * time.Hour)
	e.c.recordUse(t.Context(), refused)
	m = e.c.model()
	if a := m.resourceAccess(pid, alice.session.DeviceID, plain, clk.Now()); a == nil || a.State != "locked" || a.Message != "locked: unused 2h (postern request plain)" {
		t.Fatalf("after 2 h unused: %+v", a)
	}
}
