package controller

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
)

// The incrementally maintained model equals a full rebuild from the store.
func TestIncrementalModelMatchesRebuild(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	e.apply(testYAML)
	con := e.enroll(KindConnector, "corp-a")
	e.heartbeat(con, randomDigest(), "192.0.2.1:1")
	e.heartbeat(con, randomDigest(), "192.0.2.1:2")
	rl := e.enroll(KindRelay, "r1")
	e.call(rl.http, "POST", controlapi.PathRelayRegister, "", controlapi.RelayRegister{UDPAddr: "203.0.113.1:3478"})
	d1 := e.login("alice@example.com", "correct horse")
	d2 := e.login("bob@example.com", "battery staple")
	e.call(nil, "POST", controlapi.PathLogout, d1.session.SessionToken, nil)
	if err := e.c.RevokeDevice(context.Background(), "admin", d2.session.DeviceID); err != nil {
		t.Fatal(err)
	}
	inc := e.c.model()
	rev, objs, err := e.c.store.LoadAll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	full, err := buildModel(rev, objs, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if inc.Rev != full.Rev {
		t.Fatalf("rev %d vs %d", inc.Rev, full.Rev)
	}
	for name, pair := range map[string][2]any{
		"sessions":    {inc.Sessions, full.Sessions},
		"sessionByID": {inc.SessionByID, full.SessionByID},
		"devices":     {inc.Devices, full.Devices},
		"connectors":  {inc.Connectors, full.Connectors},
		"byName":      {inc.ConnectorByName, full.ConnectorByName},
		"relays":      {inc.Relays, full.Relays},
		"revoked":     {inc.revokedDevices(time.Now()), full.revokedDevices(time.Now())},
	} {
		a, _ := json.Marshal(pair[0])
		b, _ := json.Marshal(pair[1])
		if string(a) != string(b) {
			t.Errorf("%s differ:\nincremental %s\nrebuilt     %s", name, a, b)
		}
	}
}

// A commit that only changes a session's External state (an OIDC refresh)
// wakes no push subscriber; a revocation does.
func TestExternalOnlyCommitIsQuiet(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	e.apply(testYAML)
	d := e.login("alice@example.com", "correct horse")
	var sid string
	for _, s := range e.c.model().SessionByID {
		if s.DeviceID == d.session.DeviceID {
			sid = s.ID
		}
	}
	wake, cancel := e.c.hub.subscribe(subClient)
	defer cancel()
	drain := func() bool {
		select {
		case <-wake:
			return true
		case <-time.After(200 * time.Millisecond):
			return false
		}
	}
	drain()
	if err := e.c.UpdateExternalSession(context.Background(), sid, nil, json.RawMessage(`{"refresh_token":"r2"}`)); err != nil {
		t.Fatal(err)
	}
	if drain() {
		t.Fatal("an External-only commit woke the subscribers")
	}
	if string(e.c.model().SessionByID[sid].External) != `{"refresh_token":"r2"}` {
		t.Fatal("the model missed the External change")
	}
	if err := e.c.RevokeSession(context.Background(), "test", sid); err != nil {
		t.Fatal(err)
	}
	if !drain() {
		t.Fatal("a revocation did not wake the subscribers")
	}
}

// A new device's first sign-in wakes no stream (no snapshot can show it);
// a known device signing in again wakes connector and relay streams (it may
// leave their revoked list) but no client stream; a logout wakes both.
func TestSignInWakesOnlyComponents(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	e.apply(testYAML)
	d := e.login("alice@example.com", "correct horse")
	cl, cancelC := e.c.hub.subscribe(subClient)
	defer cancelC()
	co, cancelO := e.c.hub.subscribe(subComponent)
	defer cancelO()
	woke := func(ch chan struct{}) bool {
		select {
		case <-ch:
			return true
		case <-time.After(200 * time.Millisecond):
			return false
		}
	}
	woke(cl)
	woke(co)
	bob := e.login("bob@example.com", "battery staple")
	if woke(cl) || woke(co) {
		t.Fatal("a new device's sign-in woke streams")
	}
	// Bob's device signs in again (same key): connectors and relays hear.
	st, data := e.call(nil, "POST", controlapi.PathLogin, "", controlapi.LoginRequest{Email: "bob@example.com", Password: "battery staple",
		DevicePublicKey: base64.StdEncoding.EncodeToString(bob.pub), DeviceName: "laptop", OS: "linux"})
	if st != 200 {
		t.Fatalf("second sign-in: %d %s", st, data)
	}
	if woke(cl) {
		t.Fatal("a known device's sign-in woke the client streams")
	}
	if !woke(co) {
		t.Fatal("a known device's sign-in did not wake the connector and relay streams")
	}
	e.call(nil, "POST", controlapi.PathLogout, d.session.SessionToken, nil)
	if !woke(cl) || !woke(co) {
		t.Fatal("a logout did not wake every stream")
	}
}
