package tray_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"postern.dev/postern/controller/oidcauth/oidctest"
	"postern.dev/postern/localapi"
	"postern.dev/postern/tray"
)

func resourceLabels(m tray.Menu) []string {
	var out []string
	for _, r := range m.Resources {
		out = append(out, r.Label)
	}
	return out
}

// TestTrayWithRealDaemon drives the tray's logic against the real posternd
// program (SOCKS5 mode), a real controller with single sign-on at a real
// OpenID provider, and a real connector: signed out, Sign in… through the
// browser, connected, Disconnect and Connect, resources refused for a
// missing second factor or approval (the menu says why and a click copies
// the command that fixes it), the daemon stopped and started again.
func TestTrayWithRealDaemon(t *testing.T) {
	l := startRealLab(t)

	var mu sync.Mutex
	var copied []string
	var browserErr error
	app := tray.NewApp(tray.Options{
		Socket:        l.socket,
		ControllerURL: l.url,
		Retry:         50 * time.Millisecond,
		OpenURL: func(u string) error {
			_, err := oidctest.NewBrowser().SignIn(u, "alice", "alice-pw")
			mu.Lock()
			browserErr = err
			mu.Unlock()
			return err
		},
		Copy: func(s string) error { mu.Lock(); copied = append(copied, s); mu.Unlock(); return nil },
	})
	rec := &recorder{ch: make(chan tray.Menu, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { app.Run(ctx, rec); close(done) }()
	defer func() { cancel(); <-done }()

	// A fresh device: signed out, Sign in… offered.
	m := rec.waitFor(t, "signed out", func(m tray.Menu) bool { return m.ShowSignIn })
	if m.Icon != tray.IconSignedOut || m.User != "Not signed in" || m.ShowConnect || m.ShowDisconnect || len(m.Resources) != 0 {
		t.Fatalf("signed-out menu: %+v", m)
	}

	// Sign in…: the browser flow at the controller's identity provider;
	// the daemon signs in and brings the tunnel up.
	app.SignIn(ctx)
	mu.Lock()
	if browserErr != nil {
		t.Fatalf("browser sign-in: %v", browserErr)
	}
	mu.Unlock()
	m = rec.waitFor(t, "connected as alice", func(m tray.Menu) bool {
		return m.Icon == tray.IconConnected && m.User == "Signed in as alice@example.com" && len(m.Resources) == 3
	})
	if !m.ShowDisconnect || m.ShowConnect || m.ShowSignIn || !m.ShowSignOut || m.State != "Connected" {
		t.Fatalf("connected menu: %+v", m)
	}
	if st := l.status(); st.State != localapi.StateConnected || st.Principal == nil || st.Principal.Name != "alice@example.com" {
		t.Fatalf("posternd status after the tray's sign-in: %+v", st)
	}

	// Refused resources say why, and a click copies the fix.
	labels := resourceLabels(m)
	if !hasLabel(labels, "mfa-db — 127.0.0.1", "needs MFA (postern mfa)") ||
		!hasLabel(labels, "prod-db — 127.0.0.2", "needs approval (postern request prod-db)") ||
		!hasLabel(labels, "wiki — wiki.corp.internal", "") {
		t.Fatalf("resource lines: %q", labels)
	}
	for i, r := range m.Resources {
		switch {
		case strings.HasPrefix(r.Label, "wiki"):
			if r.OpenURL != "https://wiki.corp.internal/" {
				t.Errorf("wiki opens %q", r.OpenURL)
			}
		default:
			app.ClickResource(i)
		}
	}
	mu.Lock()
	if strings.Join(copied, "|") != "postern mfa|postern request prod-db --for 1h --reason " &&
		strings.Join(copied, "|") != "postern request prod-db --for 1h --reason |postern mfa" {
		t.Errorf("clicks on refused resources copied %q", copied)
	}
	mu.Unlock()

	// Disconnect and Connect reach the daemon; the menu follows it.
	app.Disconnect(ctx)
	rec.waitFor(t, "disconnected", func(m tray.Menu) bool {
		return m.State == "Disconnected" && m.ShowConnect && !m.ShowDisconnect && m.Icon == tray.IconSignedOut
	})
	if st := l.status(); st.State != localapi.StateStopped {
		t.Fatalf("posternd after Disconnect: %s", st.State)
	}
	app.Connect(ctx)
	rec.waitFor(t, "connected again", func(m tray.Menu) bool {
		return m.Icon == tray.IconConnected && m.ShowDisconnect && len(m.Resources) == 3
	})

	// The daemon stops: the tray says so and how to start it.
	l.stopDaemon()
	m = rec.waitFor(t, "daemon not running", func(m tray.Menu) bool { return len(m.DaemonDown) > 0 })
	if m.DaemonDown[0] != "Postern daemon not running" || m.Icon != tray.IconError || m.ShowSignOut || len(m.Resources) != 0 {
		t.Fatalf("daemon-down menu: %+v", m)
	}

	// It starts again: the tray reconnects by itself, still signed in.
	l.startDaemon()
	rec.waitFor(t, "connected after the daemon's restart", func(m tray.Menu) bool {
		return m.Icon == tray.IconConnected && m.User == "Signed in as alice@example.com" && len(m.Resources) == 3
	})

	// Sign out, then Sign in… again at the controller the daemon remembers.
	app.SignOut(ctx)
	rec.waitFor(t, "signed out", func(m tray.Menu) bool { return m.ShowSignIn && len(m.Resources) == 0 })
	app.SignIn(ctx)
	m = rec.waitFor(t, "signed in again", func(m tray.Menu) bool {
		return m.User == "Signed in as alice@example.com" && m.Icon == tray.IconConnected
	})
	if strings.Contains(m.State, "failed") {
		t.Fatalf("second sign-in: %q", m.State)
	}
}

// TestTraySignInAtRememberedController: a device first signed in with
// `postern login --controller URL --ca FILE` (a controller whose CA is not a
// system root), then signed out. The tray's Sign in… goes to the controller
// the daemon remembers, and the daemon must use the CA it remembers for it;
// it used to start the browser sign-in without it and fail on the
// certificate.
func TestTraySignInAtRememberedController(t *testing.T) {
	l := startRealLabCA(t, false)
	c := localapi.NewClient(l.socket)
	ca, err := os.ReadFile(l.caFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := c.Login(ctx, localapi.LoginRequest{ControllerURL: l.url, CAPEM: string(ca), Email: "bob@example.com", Password: "bob-password-12"}); err != nil {
		t.Fatalf("postern login --ca: %v", err)
	}
	if _, err := c.Logout(ctx); err != nil {
		t.Fatalf("logout: %v", err)
	}

	app := tray.NewApp(tray.Options{Socket: l.socket, Retry: 50 * time.Millisecond, OpenURL: func(u string) error {
		_, err := oidctest.NewBrowser().SignIn(u, "alice", "alice-pw")
		return err
	}})
	rec := &recorder{ch: make(chan tray.Menu, 1)}
	done := make(chan struct{})
	go func() { app.Run(ctx, rec); close(done) }()
	defer func() { cancel(); <-done }()
	rec.waitFor(t, "signed out", func(m tray.Menu) bool { return m.ShowSignIn })
	app.SignIn(ctx)
	m := rec.waitFor(t, "signed in as alice", func(m tray.Menu) bool {
		return m.User == "Signed in as alice@example.com" || strings.Contains(m.State, "failed")
	})
	if m.User != "Signed in as alice@example.com" {
		t.Fatalf("Sign in… at the remembered controller: %q", m.State)
	}
}
