package controller

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/store"
	"postern.dev/postern/pki"
)

func TestProgressiveDelayPerAccountAndIP(t *testing.T) {
	clock := newFakeClock()
	lt := newLoginThrottle(clock.Now)
	a := loginAttempt{Account: "user:bob@example.com", IP: "198.51.100.7", Device: "jkt-attacker"}
	for i := 0; i < pairFreeFailures; i++ {
		if v := lt.check(context.Background(), a); v.wait != 0 {
			t.Fatalf("failure %d delayed by %s", i, v.wait)
		}
		lt.fail(context.Background(), a)
	}
	var last time.Duration
	for i := 0; i < 6; i++ {
		v := lt.check(context.Background(), a)
		want := time.Second << i
		if v.wait != want || v.wait <= last {
			t.Fatalf("after %d failures: wait %s, want %s (growing)", pairFreeFailures+i, v.wait, want)
		}
		last = v.wait
		clock.Add(v.wait)
		if v := lt.check(context.Background(), a); v.wait != 0 {
			t.Fatalf("still waiting %s after the delay", v.wait)
		}
		lt.fail(context.Background(), a)
	}
	// The same account from another IP, and another account from this IP,
	// are not delayed.
	if v := lt.check(context.Background(), loginAttempt{Account: a.Account, IP: "203.0.113.9", Device: "jkt-user"}); v.wait != 0 {
		t.Fatalf("other IP delayed %s", v.wait)
	}
	if v := lt.check(context.Background(), loginAttempt{Account: "user:alice@example.com", IP: a.IP, Device: "jkt-attacker"}); v.wait != 0 {
		t.Fatalf("other account delayed %s", v.wait)
	}
	// Delays stop growing at maxDelay.
	for i := 0; i < 20; i++ {
		clock.Add(maxDelay)
		lt.fail(context.Background(), a)
	}
	if v := lt.check(context.Background(), a); v.wait != maxDelay {
		t.Fatalf("wait %s, want the cap %s", v.wait, maxDelay)
	}
	// Success clears the pair's delay (the address stays delayed for
	// failing across accounts more than ipFreeFailures times).
	lt.success(context.Background(), a)
	pair, ip, _ := a.keys()
	if _, ok := lt.m[pair]; ok {
		t.Fatal("success kept the (account, IP) delay")
	}
	if v := lt.check(context.Background(), a); v.wait != lt.m[ip].Until.Sub(clock.Now()) {
		t.Fatalf("after success: wait %s, want the IP's", v.wait)
	}
}

// TestAttackerCannotLockOutKnownDevice: an attacker who knows alice's
// e-mail fails from several addresses until the account cap is reached.
// Alice's known device still signs in with the right password, from her
// address and even from the attacker's; a new device waits; every attempt
// is in the audit log with its IP and device.
func TestAttackerCannotLockOutKnownDevice(t *testing.T) {
	clock := newFakeClock()
	e := newTestController(t, t.TempDir(), func(c *Config) { c.Now = clock.Now })
	e.apply(testYAML)
	ctx := context.Background()
	const userIP, attackerIP = "203.0.113.10", "198.51.100.66"
	alicePub, _, _ := ed25519.GenerateKey(rand.Reader)
	aliceKey := base64.StdEncoding.EncodeToString(alicePub)
	req := func(pw, key string) controlapi.LoginRequest {
		return controlapi.LoginRequest{Email: "alice@example.com", Password: pw, DevicePublicKey: key, DeviceName: "laptop"}
	}
	first, _, err := e.c.login(ctx, userIP, req("correct horse", aliceKey))
	if err != nil {
		t.Fatal(err)
	}
	attackerKey := newDeviceKey(t)
	fails := 0
	for n := 0; fails < accountCapFailures; n++ {
		ip := attackerIP
		if n%2 == 1 {
			ip = fmt.Sprintf("198.51.100.%d", 100+n) // a botnet spreads out
		}
		_, status, err := e.c.login(ctx, ip, req(fmt.Sprintf("guess%d", n), attackerKey))
		switch status {
		case http.StatusUnauthorized:
			fails++
		case http.StatusTooManyRequests:
			var te *throttledError
			if !errors.As(err, &te) {
				t.Fatalf("429 without a wait: %v", err)
			}
			clock.Add(te.wait)
		default:
			t.Fatalf("guess %d: %d %v", n, status, err)
		}
	}
	// The attacker's address is delayed for alice's account...
	if _, status, _ := e.c.login(ctx, attackerIP, req("guess-more", attackerKey)); status != http.StatusTooManyRequests {
		t.Fatalf("attacker after %d failures: %d, want 429", fails, status)
	}
	// ...and a new device is refused even with the right password.
	_, status, err := e.c.login(ctx, userIP, req("correct horse", newDeviceKey(t)))
	if status != http.StatusTooManyRequests || !strings.Contains(err.Error(), "devices already used") {
		t.Fatalf("new device under attack: %d %v", status, err)
	}
	// The known device signs in, from alice's address and from the attacker's.
	for _, ip := range []string{userIP, attackerIP} {
		resp, status, err := e.c.login(ctx, ip, req("correct horse", aliceKey))
		if err != nil {
			t.Fatalf("known device from %s: %d %v", ip, status, err)
		}
		if resp.DeviceID != first.DeviceID {
			t.Fatalf("device %s, want %s", resp.DeviceID, first.DeviceID)
		}
	}
	// Audit: device creation, successful and failed sign-ins with IP and device.
	entries, err := e.c.store.AuditLog(ctx, 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	attackerJKT := "jkt:" + thumbprintOf(t, attackerKey)
	var created, signedIn, failed int
	for _, a := range entries {
		switch {
		case a.Action == "create" && a.Kind == KindDevice && a.ObjectID == first.DeviceID && a.IP == userIP && a.Device == first.DeviceID:
			created++
		case a.Action == "sign-in" && a.Device == first.DeviceID && (a.IP == userIP || a.IP == attackerIP):
			signedIn++
		case a.Action == "sign-in-failed" && a.Name == "alice@example.com" && a.Device == attackerJKT && strings.HasPrefix(a.IP, "198.51.100."):
			failed++
			if strings.Contains(string(a.After), "guess") {
				t.Fatalf("audit entry holds the password tried: %s", a.After)
			}
		}
	}
	if created != 1 || signedIn != 3 || failed != fails {
		t.Fatalf("audit: %d device creations, %d sign-ins, %d failures (want 1, 3, %d)", created, signedIn, failed, fails)
	}
}

func thumbprintOf(t *testing.T, key string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		t.Fatal(err)
	}
	return pki.KeyThumbprint(ed25519.PublicKey(raw))
}

// TestAdminChangesRecordIP: admin API changes record the caller's address.
func TestAdminChangesRecordIP(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	e.admin("POST", "/api/v1/groups", map[string]any{"name": "auditors", "users": []string{}}, 201)
	entries, err := e.c.store.AuditLog(context.Background(), 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var found *store.AuditEntry
	for i := range entries {
		if entries[i].Kind == KindGroup && entries[i].Name == "auditors" {
			found = &entries[i]
		}
	}
	if found == nil || found.IP != "127.0.0.1" {
		t.Fatalf("audit entry of an admin change: %+v", found)
	}
}
