package connector

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/wire"
)

var accessYAML = testenv.ApproverPolicy("corp-a") + `posture_profiles:
  - name: managed
    os_min: {linux: "6.1"}
    disk_encryption: true
    firewall: true
    client_min: "0.1.0"
resources:
  - name: plain
    address: 127.0.0.1
    network: corp
    ports: [tcp/{{ECHO}}]
    groups: [engineering]
  - name: mfa-db
    address: 127.0.0.1
    network: corp
    ports: [tcp/{{ECHO}}]
    groups: [engineering]
    require:
      mfa: 1h
  - name: posture-db
    address: 127.0.0.1
    network: corp
    ports: [tcp/{{ECHO}}]
    groups: [engineering]
    require:
      posture: [managed]
  - name: prod-db
    address: 127.0.0.1
    network: corp
    ports: [tcp/{{ECHO}}]
    groups: [engineering]
    require:
      approval:
        approvers: [sre-leads]
        max: 2h
auto_lock: 2h
`

type accessEnv struct {
	*lab
	clk        *testenv.Clock // the controller and connector judge MFA windows, grant ends and auto-lock by it; oathtool makes codes for it with --now
	echo       uint16
	alice, bob *device
}

func newAccessEnv(t *testing.T) *accessEnv {
	t.Helper()
	if _, err := exec.LookPath("oathtool"); err != nil {
		t.Fatal("oathtool is required (scripts/install-deps.sh installs it)")
	}
	clk := &testenv.Clock{}
	_, port := testenv.EchoTCP(t, "127.0.0.1:0")
	y := strings.ReplaceAll(accessYAML, "{{ECHO}}", fmt.Sprint(port))
	l := newLabAt(t, y, clk.Now, func(c *Config) { c.Now = clk.Now })
	e := &accessEnv{lab: l, clk: clk, echo: port}
	e.alice = l.login("alice@example.com", "alice-password-1")
	e.bob = l.login("bob@example.com", "bob-password-12")
	return e
}

func (e *accessEnv) hdr(res string) wire.OpenHeader {
	return wire.OpenHeader{Proto: wire.ProtoTCP, Port: e.echo, ResourceID: e.resourceID(res), Destination: "127.0.0.1"}
}

// openUntil opens flows to res until one gets want (the pushed policy may
// take a moment), and returns the last stream and message.
func (e *accessEnv) openUntil(cc *clientConn, res string, want wire.Status) (io.ReadWriteCloser, string) {
	e.t.Helper()
	var st io.ReadWriteCloser
	var msg string
	testenv.Poll(e.t, 5*time.Second, res+" to answer "+want.String(), func() error {
		s, got, m := cc.open(e.hdr(res))
		if got != want {
			s.Close()
			return fmt.Errorf("%s: status %v (%s), want %v", res, got, m, want)
		}
		st, msg = s, m
		return nil
	})
	return st, msg
}

// totp makes the code for secret at the test clock's time with oathtool.
func (e *accessEnv) totp(secret string, at time.Time) string {
	e.t.Helper()
	out, err := exec.Command("oathtool", "--totp", "-b", "--now", at.UTC().Format("2006-01-02 15:04:05 UTC"), secret).Output()
	if err != nil {
		e.t.Fatalf("oathtool: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// expectClosed waits for a running flow to be reset by the connector.
func expectClosed(t *testing.T, st io.Reader, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	done := make(chan struct{})
	go func() { io.Copy(io.Discard, st); close(done) }()
	select {
	case <-done:
		return time.Since(start)
	case <-time.After(within):
		t.Fatalf("flow still open after %v", within)
	}
	return 0
}

func TestAccessMFAStepUpThroughController(t *testing.T) {
	e := newAccessEnv(t)
	cc := e.alice.connect()
	// Without a second factor: refused with its own status and the action.
	_, st, msg := cc.open(e.hdr("mfa-db"))
	if st != wire.StatusMFARequired || !strings.Contains(msg, "postern mfa") {
		t.Fatalf("mfa-db before step-up: %v %q", st, msg)
	}
	if _, st, _ := cc.open(e.hdr("plain")); st != wire.StatusOK {
		t.Fatalf("plain: %v", st)
	}
	var enr controlapi.MFAEnrollResponse
	if err := e.post(controlapi.PathMFAEnroll, e.alice.session, struct{}{}, &enr); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enr.URI, "otpauth://totp/") || enr.Secret == "" {
		t.Fatalf("enroll: %+v", enr)
	}
	code := e.totp(enr.Secret, e.clk.Now())
	if err := e.post(controlapi.PathMFAVerify, e.alice.session, controlapi.MFAVerifyRequest{Code: code}, nil); err != nil {
		t.Fatalf("verify: %v", err)
	}
	// The same code again is a replay.
	if err := e.post(controlapi.PathMFAVerify, e.alice.session, controlapi.MFAVerifyRequest{Code: code}, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("replayed code: %v, want 403", err)
	}
	// The step-up reaches the running connection through the policy push.
	open, _ := e.openUntil(cc, "mfa-db", wire.StatusOK)
	echoRoundTrip(t, open, "stepped up")
	// A fresh token carries the claim itself.
	tok := e.alice.token()
	cc2 := e.alice.connect()
	if _, st, msg := cc2.open(e.hdr("mfa-db")); st != wire.StatusOK {
		t.Fatalf("new connection after step-up: %v %s (token %s)", st, msg, tok.ExpiresAt)
	}
	// Past the window: new flows need MFA again; the running one stays.
	e.clk.Advance(61 * time.Minute)
	if _, st, msg := cc.open(e.hdr("mfa-db")); st != wire.StatusMFARequired {
		t.Fatalf("after the window: %v %s", st, msg)
	}
	e.c.enforce(e.c.policy.Load())
	echoRoundTrip(t, open, "still running")
	// A new code (a later step) works again.
	if err := e.post(controlapi.PathMFAVerify, e.alice.session, controlapi.MFAVerifyRequest{Code: e.totp(enr.Secret, e.clk.Now())}, nil); err != nil {
		t.Fatalf("second step-up: %v", err)
	}
	e.openUntil(cc, "mfa-db", wire.StatusOK)
}

func TestAccessMFAWrongCodesAreRateLimited(t *testing.T) {
	e := newAccessEnv(t)
	var enr controlapi.MFAEnrollResponse
	if err := e.post(controlapi.PathMFAEnroll, e.alice.session, struct{}{}, &enr); err != nil {
		t.Fatal(err)
	}
	good := e.totp(enr.Secret, e.clk.Now())
	wrong := fmt.Sprintf("%06d", (atoi(good)+1)%1000000)
	for i := 0; i < 5; i++ {
		if err := e.post(controlapi.PathMFAVerify, e.alice.session, controlapi.MFAVerifyRequest{Code: wrong}, nil); err == nil || !strings.Contains(err.Error(), "403") {
			t.Fatalf("wrong code %d: %v", i, err)
		}
	}
	// Now even the right code is not checked.
	if err := e.post(controlapi.PathMFAVerify, e.alice.session, controlapi.MFAVerifyRequest{Code: good}, nil); err == nil || !strings.Contains(err.Error(), "429") {
		t.Fatalf("after 5 failures: %v, want 429", err)
	}
	e.clk.Advance(16 * time.Minute)
	if err := e.post(controlapi.PathMFAVerify, e.alice.session, controlapi.MFAVerifyRequest{Code: e.totp(enr.Secret, e.clk.Now())}, nil); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

func TestAccessPostureThroughController(t *testing.T) {
	e := newAccessEnv(t)
	cc := e.alice.connect()
	if _, st, msg := cc.open(e.hdr("posture-db")); st != wire.StatusPosture {
		t.Fatalf("no report yet: %v %s", st, msg)
	}
	rep := controlapi.PostureReport{OS: "linux", OSVersion: "6.1.0-13-amd64", DiskEncryption: false, Firewall: true, ClientVersion: "0.3.0"}
	var v controlapi.PostureVerdict
	if err := e.report(e.alice, rep, &v); err != nil {
		t.Fatal(err)
	}
	if v.Failed["managed"] != "disk encryption off" {
		t.Fatalf("verdict: %+v", v)
	}
	if _, st, msg := cc.open(e.hdr("posture-db")); st != wire.StatusPosture || !strings.Contains(msg, "managed") {
		t.Fatalf("disk encryption off: %v %s", st, msg)
	}
	// Fixed: access within seconds, on the running connection.
	rep.DiskEncryption = true
	fixed := time.Now()
	if err := e.report(e.alice, rep, &v); err != nil || len(v.Satisfied) != 1 {
		t.Fatalf("report: %v %+v", err, v)
	}
	open, _ := e.openUntil(cc, "posture-db", wire.StatusOK)
	t.Logf("posture fixed -> flow allowed in %v", time.Since(fixed))
	echoRoundTrip(t, open, "managed")
	// Falling out of the profile closes the running flow.
	rep.Firewall = false
	if err := e.report(e.alice, rep, &v); err != nil || v.Failed["managed"] != "firewall off" {
		t.Fatalf("report: %v %+v", err, v)
	}
	took := expectClosed(t, open, 3*time.Second)
	t.Logf("posture lost -> running flow closed in %v", took)
}

// report sends a posture report signed with d's device key.
func (e *accessEnv) report(d *device, rep controlapi.PostureReport, v *controlapi.PostureVerdict) error {
	rep.Reported = e.clk.Now()
	body, _ := json.Marshal(rep)
	sig := ed25519.Sign(d.key, controlapi.PostureSigningInput(body, d.id))
	return e.post(controlapi.PathPosture, d.session, controlapi.SignedPosture{Report: body, Signature: base64.StdEncoding.EncodeToString(sig)}, v)
}

func TestAccessPostureReportMustBeSignedAndFresh(t *testing.T) {
	e := newAccessEnv(t)
	rep := controlapi.PostureReport{OS: "linux", OSVersion: "6.1.0", DiskEncryption: true, Firewall: true, ClientVersion: "0.3.0", Reported: e.clk.Now()}
	body, _ := json.Marshal(rep)
	// Signed by another device's key (bob's) for alice's device.
	sig := ed25519.Sign(e.bob.key, controlapi.PostureSigningInput(body, e.alice.id))
	if err := e.post(controlapi.PathPosture, e.alice.session, controlapi.SignedPosture{Report: body, Signature: base64.StdEncoding.EncodeToString(sig)}, nil); err == nil || !strings.Contains(err.Error(), "signature does not verify") {
		t.Fatalf("report signed with another key: %v", err)
	}
	// An old report replayed.
	rep.Reported = e.clk.Now().Add(-10 * time.Minute)
	body, _ = json.Marshal(rep)
	sig = ed25519.Sign(e.alice.key, controlapi.PostureSigningInput(body, e.alice.id))
	if err := e.post(controlapi.PathPosture, e.alice.session, controlapi.SignedPosture{Report: body, Signature: base64.StdEncoding.EncodeToString(sig)}, nil); err == nil || !strings.Contains(err.Error(), "from the controller's clock") {
		t.Fatalf("stale report: %v", err)
	}
	var v controlapi.PostureVerdict
	if err := e.report(e.alice, rep, &v); err != nil || len(v.Satisfied) != 1 {
		t.Fatalf("fresh signed report: %v %+v", err, v)
	}
}

func TestAccessJITRequestApproveExpire(t *testing.T) {
	e := newAccessEnv(t)
	cc := e.alice.connect()
	if _, st, msg := cc.open(e.hdr("prod-db")); st != wire.StatusApprovalRequired || !strings.Contains(msg, "postern request prod-db") {
		t.Fatalf("before approval: %v %s", st, msg)
	}
	// Longer than max is refused.
	if err := e.post(controlapi.PathMyRequests, e.alice.session, controlapi.AccessRequestCreate{Resource: "prod-db", Duration: "3h", Reason: "fix"}, nil); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("3h request: %v", err)
	}
	var req controlapi.AccessRequest
	if err := e.post(controlapi.PathMyRequests, e.alice.session, controlapi.AccessRequestCreate{Resource: "prod-db", Duration: "2h", Reason: "incident 42"}, &req); err != nil {
		t.Fatal(err)
	}
	if req.State != "pending" {
		t.Fatalf("new request: %+v", req)
	}
	act := controlapi.PathMyRequestAct + req.ID
	// Alice is no approver; bob is, but never for himself (tested below).
	if err := e.post(act+"/approve", e.alice.session, controlapi.AccessDecision{}, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("self-approval: %v, want 403", err)
	}
	var got controlapi.AccessRequest
	if err := e.post(act+"/approve", e.bob.session, controlapi.AccessDecision{Duration: "1h"}, &got); err != nil {
		t.Fatal(err)
	}
	if got.State != "active" || got.DecidedBy != "bob@example.com" || got.End.Sub(got.Start) != time.Hour {
		t.Fatalf("approved: %+v", got)
	}
	open, _ := e.openUntil(cc, "prod-db", wire.StatusOK)
	echoRoundTrip(t, open, "granted")
	// The grant's end closes the running flow and refuses new ones.
	e.clk.Advance(61 * time.Minute)
	e.c.enforce(e.c.policy.Load())
	expectClosed(t, open, time.Second)
	if _, st, _ := cc.open(e.hdr("prod-db")); st != wire.StatusApprovalRequired {
		t.Fatalf("after the grant: %v", st)
	}
	var mine []controlapi.AccessRequest
	if err := e.get(controlapi.PathMyRequests, e.alice.session, &mine); err != nil || len(mine) != 1 || mine[0].State != "expired" {
		t.Fatalf("requests after expiry: %v %+v", err, mine)
	}
	// Bob's own request: he may not approve it.
	var bobReq controlapi.AccessRequest
	if err := e.post(controlapi.PathMyRequests, e.bob.session, controlapi.AccessRequestCreate{Resource: "prod-db", Duration: "1h", Reason: "mine"}, &bobReq); err != nil {
		t.Fatal(err)
	}
	if err := e.post(controlapi.PathMyRequestAct+bobReq.ID+"/approve", e.bob.session, controlapi.AccessDecision{}, nil); err == nil || !strings.Contains(err.Error(), "never decide their own") {
		t.Fatalf("bob approving his own request: %v", err)
	}
	// Audit: request, approval with actor and duration.
	var audit struct {
		Items []struct {
			Actor, Action, Name string
			After               map[string]any
		} `json:"items"`
	}
	if err := e.adminGet("/api/v1/audit?limit=500", &audit); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, a := range audit.Items {
		if a.Name == "prod-db" {
			seen[a.Action+" by "+a.Actor] = true
		}
	}
	for _, want := range []string{"access-request by alice@example.com", "access-approve by bob@example.com", "access-request by bob@example.com"} {
		if !seen[want] {
			t.Errorf("audit lacks %q: %v", want, seen)
		}
	}
}

// TestAccessGrantEndClosesFlowInRealTime checks the connector's own timer:
// with the real clock, a flow on a grant closes within 1 s of its end.
func TestAccessGrantEndClosesFlowInRealTime(t *testing.T) {
	e := newAccessEnv(t)
	cc := e.alice.connect()
	var req controlapi.AccessRequest
	if err := e.post(controlapi.PathMyRequests, e.alice.session, controlapi.AccessRequestCreate{Resource: "prod-db", Duration: "2h", Reason: "short"}, &req); err != nil {
		t.Fatal(err)
	}
	var got controlapi.AccessRequest
	if err := e.post(controlapi.PathMyRequestAct+req.ID+"/approve", e.bob.session, controlapi.AccessDecision{Duration: "3s"}, &got); err != nil {
		t.Fatal(err)
	}
	open, _ := e.openUntil(cc, "prod-db", wire.StatusOK)
	done := make(chan time.Time, 1)
	go func() { io.Copy(io.Discard, open); done <- time.Now() }()
	select {
	case at := <-done:
		late := at.Sub(got.End)
		t.Logf("flow closed %v after the grant's end", late)
		if late > time.Second || late < -time.Second {
			t.Fatalf("flow closed %v from the grant's end, want within 1 s", late)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("flow not closed at the grant's end")
	}
}

func TestAccessAutoLock(t *testing.T) {
	e := newAccessEnv(t)
	cc := e.alice.connect()
	st, s, _ := cc.open(e.hdr("plain"))
	if s != wire.StatusOK {
		t.Fatal(s)
	}
	echoRoundTrip(t, st, "use")
	st.Close()
	// Bob never uses it. Alice's use reaches the controller by flow event.
	plain := e.resourceID("plain")
	e.eventually(10*time.Second, "last use recorded", func() bool {
		lu := e.c.policy.Load().resources[plain].lastUse
		return lu[e.alice.pid].After(lu[e.bob.pid])
	})
	e.clk.Advance(90 * time.Minute)
	if _, s, _ := cc.open(e.hdr("plain")); s != wire.StatusOK {
		t.Fatalf("within the window: %v", s)
	}
	ccb := e.bob.connect()
	e.clk.Advance(91 * time.Minute) // bob: 3 h unused; alice: about 1.5 h since her use
	if _, s, msg := ccb.open(e.hdr("plain")); s != wire.StatusApprovalRequired || !strings.Contains(msg, "locked: unused for 2h") {
		t.Fatalf("bob after 3 h: %v %s", s, msg)
	}
	// Unlock: a request, approved by the admin API.
	var req controlapi.AccessRequest
	if err := e.post(controlapi.PathMyRequests, e.bob.session, controlapi.AccessRequestCreate{Resource: "plain", Duration: "1h", Reason: "back from leave"}, &req); err != nil {
		t.Fatal(err)
	}
	var out controlapi.AccessRequest
	if err := e.adminPost(controlapi.PathAccessRequests+"/"+req.ID+"/approve", controlapi.AccessDecision{}, &out); err != nil {
		t.Fatal(err)
	}
	e.openUntil(ccb, "plain", wire.StatusOK)
}
