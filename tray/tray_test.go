package tray_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"image/png"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/oidcauth"
	"postern.dev/postern/controller/oidcauth/oidctest"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/localapi"
	"postern.dev/postern/tray"
)

func TestBuildStates(t *testing.T) {
	down := tray.Build(nil, nil, nil)
	if down.Icon != tray.IconError || len(down.DaemonDown) != 2 || !strings.Contains(down.DaemonDown[1], "posternd") {
		t.Fatalf("daemon down menu = %+v", down)
	}
	if down.ShowConnect || down.ShowDisconnect || down.ShowSignIn || down.ShowSignOut {
		t.Fatalf("actions offered without a daemon: %+v", down)
	}

	denied := tray.Build(nil, nil, errors.New("permission denied on /var/lib/postern/posternd.sock"))
	if denied.Icon != tray.IconError || denied.DaemonDown[0] != "Cannot reach the Postern daemon" || !strings.Contains(denied.DaemonDown[1], "permission denied") {
		t.Fatalf("unreachable daemon menu = %+v", denied)
	}

	out := tray.Build(&localapi.Status{State: localapi.StateSignedOut}, nil, nil)
	if out.Icon != tray.IconSignedOut || !out.ShowSignIn || out.ShowSignOut || out.ShowConnect || out.User != "Not signed in" {
		t.Fatalf("signed out menu = %+v", out)
	}

	st := signedIn(localapi.StateConnected)
	on := tray.Build(&st, testResources, nil)
	if on.Icon != tray.IconConnected || on.User != "Signed in as alice@example.com" || on.Network != "Network: corp" ||
		!on.ShowDisconnect || on.ShowConnect || !on.ShowSignOut || on.ShowSignIn {
		t.Fatalf("connected menu = %+v", on)
	}
	if len(on.Resources) != 2 || on.Resources[0].Label != "db — db.corp.internal" || on.Resources[0].OpenURL != "" ||
		on.Resources[1].OpenURL != "https://wiki.corp.internal/" {
		t.Fatalf("resources = %+v", on.Resources)
	}

	st = signedIn(localapi.StateStopped)
	if m := tray.Build(&st, nil, nil); m.Icon != tray.IconSignedOut || !m.ShowConnect || m.ShowDisconnect || m.State != "Disconnected" {
		t.Fatalf("stopped menu = %+v", m)
	}
	st = signedIn(localapi.StateDegraded)
	st.Message = "controller unreachable"
	if m := tray.Build(&st, nil, nil); m.Icon != tray.IconDegraded || !strings.Contains(m.State, "controller unreachable") || !m.ShowDisconnect {
		t.Fatalf("degraded menu = %+v", m)
	}
	st = signedIn(localapi.StateConnecting)
	if m := tray.Build(&st, nil, nil); m.Icon != tray.IconConnecting {
		t.Fatalf("connecting icon = %s", m.Icon)
	}
	st = signedIn(localapi.StateError)
	if m := tray.Build(&st, nil, nil); m.Icon != tray.IconError || !m.ShowConnect {
		t.Fatalf("error menu = %+v", m)
	}
}

func TestResourceActions(t *testing.T) {
	st := signedIn(localapi.StateConnected)
	m := tray.Build(&st, []localapi.Resource{
		{Name: "app", Address: "10.0.0.5", Ports: []string{"tcp/8000-8100"}},
		{Name: "web", Address: "intranet.corp", Ports: []string{"tcp/80", "tcp/22"}},
		{Name: "v6", Address: "fd00::5", Ports: []string{"tcp/8443"}},
		{Name: "all", Address: "*.corp.internal", Ports: []string{"tcp/443"}},
		{Name: "net", Address: "10.1.0.0/16", Ports: []string{"tcp/443"}},
		{Name: "any", Address: "any.corp", Ports: []string{"tcp"}},
		{Name: "git", Alias: "git.corp", Address: "10.0.0.9", Ports: []string{"tcp/443"}},
	}, nil)
	want := []string{"http://10.0.0.5:8080/", "http://intranet.corp/", "https://[fd00::5]:8443/", "", "", "", "https://git.corp/"}
	for i, w := range want {
		if m.Resources[i].OpenURL != w {
			t.Errorf("%s: OpenURL = %q, want %q", m.Resources[i].Label, m.Resources[i].OpenURL, w)
		}
	}
}

// TestResourceAccessNotes: a resource the user cannot reach says why, and a
// click copies the command that fixes it instead of opening it.
func TestResourceAccessNotes(t *testing.T) {
	st := signedIn(localapi.StateConnected)
	m := tray.Build(&st, []localapi.Resource{
		{Name: "db", Address: "db.corp", Ports: []string{"tcp/443"}, Access: &controlapi.ResourceAccess{State: "approval", Message: "needs approval (postern request db)"}},
		{Name: "mfa", Address: "mfa.corp", Ports: []string{"tcp/443"}, Access: &controlapi.ResourceAccess{State: "mfa", Message: "needs MFA (postern mfa)"}},
		{Name: "pos", Address: "pos.corp", Ports: []string{"tcp/443"}, Access: &controlapi.ResourceAccess{State: "posture", Message: "posture: disk encryption off"}},
		{Name: "ok", Address: "ok.corp", Ports: []string{"tcp/443"}, Access: &controlapi.ResourceAccess{State: "ok", Message: "approved until 14:00 by bob", ApprovedBy: "bob"}},
	}, nil)
	want := []struct{ label, copy, url string }{
		{"db — db.corp — needs approval (postern request db)", "postern request db --for 1h --reason ", ""},
		{"mfa — mfa.corp — needs MFA (postern mfa)", "postern mfa", ""},
		{"pos — pos.corp — posture: disk encryption off", "", ""},
		{"ok — ok.corp — approved until 14:00 by bob", "ok.corp", "https://ok.corp/"},
	}
	for i, w := range want {
		r := m.Resources[i]
		if r.Label != w.label || r.Address != w.copy || r.OpenURL != w.url {
			t.Errorf("item %d: %+v, want %+v", i, r, w)
		}
	}
}

func TestIconsAreDistinct(t *testing.T) {
	seen := map[string]string{}
	for _, s := range []string{tray.IconSignedOut, tray.IconConnecting, tray.IconConnected, tray.IconDegraded, tray.IconError} {
		p := tray.IconPNG(s)
		img, err := png.Decode(bytes.NewReader(p))
		if err != nil || img.Bounds().Dx() != 32 {
			t.Fatalf("%s: bad PNG: %v", s, err)
		}
		if other, ok := seen[string(p)]; ok {
			t.Fatalf("%s and %s look the same", s, other)
		}
		seen[string(p)] = s
		ico := tray.IconICO(s)
		var hdr [3]uint16
		_ = binary.Read(bytes.NewReader(ico), binary.LittleEndian, &hdr)
		if hdr != [3]uint16{0, 1, 1} || !bytes.Equal(ico[22:], p) {
			t.Fatalf("%s: bad ICO container", s)
		}
	}
}

func TestDesktopEntry(t *testing.T) {
	for _, want := range []string{"[Desktop Entry]", "Type=Application", "Exec=postern-tray", "X-GNOME-Autostart-enabled=true"} {
		if !strings.Contains(tray.DesktopEntry, want) {
			t.Errorf("desktop entry lacks %q", want)
		}
	}
}

// recorder is a View that keeps every Menu.
type recorder struct {
	mu    sync.Mutex
	menus []tray.Menu
	ch    chan tray.Menu
}

func (r *recorder) Apply(m tray.Menu) {
	r.mu.Lock()
	r.menus = append(r.menus, m)
	r.mu.Unlock()
	select {
	case r.ch <- m:
	default:
	}
}

func (r *recorder) waitFor(t *testing.T, what string, ok func(tray.Menu) bool) tray.Menu {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		if n := len(r.menus); n > 0 && ok(r.menus[n-1]) {
			m := r.menus[n-1]
			r.mu.Unlock()
			return m
		}
		r.mu.Unlock()
		select {
		case <-r.ch:
		case <-deadline:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("menu never showed %s; last: %+v", what, r.menus[len(r.menus)-1])
		}
	}
}

func TestAppFollowsDaemon(t *testing.T) {
	before := runtime.NumGoroutine()
	dir := t.TempDir()
	var opened, copied []string
	var mu sync.Mutex
	app := tray.NewApp(tray.Options{
		Socket:  dir + "/" + localapi.SocketName,
		Retry:   50 * time.Millisecond,
		OpenURL: func(u string) error { mu.Lock(); opened = append(opened, u); mu.Unlock(); return nil },
		Copy:    func(s string) error { mu.Lock(); copied = append(copied, s); mu.Unlock(); return nil },
	})
	rec := &recorder{ch: make(chan tray.Menu, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { app.Run(ctx, rec); close(done) }()

	// No daemon yet: the menu says so.
	rec.waitFor(t, "daemon not running", func(m tray.Menu) bool { return len(m.DaemonDown) > 0 })

	// The daemon starts: the tray reconnects by itself.
	d := newFakeDaemon(t, dir)
	m := rec.waitFor(t, "connected with resources", func(m tray.Menu) bool {
		return m.Icon == tray.IconConnected && len(m.Resources) == 2
	})
	if m.User != "Signed in as alice@example.com" {
		t.Fatalf("user line = %q", m.User)
	}

	// Clicks on resources: copy the database's address, open the wiki.
	app.ClickResource(0)
	app.ClickResource(1)
	mu.Lock()
	if len(copied) != 1 || copied[0] != "db.corp.internal" || len(opened) != 1 || opened[0] != "https://wiki.corp.internal/" {
		t.Fatalf("copied %v, opened %v", copied, opened)
	}
	mu.Unlock()

	// Disconnect goes to the daemon; the stream brings the new state.
	app.Disconnect(ctx)
	if got := <-d.called; got != "/v1/down" {
		t.Fatalf("daemon got %s", got)
	}
	rec.waitFor(t, "disconnected", func(m tray.Menu) bool { return m.ShowConnect && m.Icon == tray.IconSignedOut })

	// A state change on the daemon's side arrives without any click.
	deg := signedIn(localapi.StateDegraded)
	deg.Message = "connector corp-a down"
	d.set(deg, testResources[:1])
	rec.waitFor(t, "degraded", func(m tray.Menu) bool {
		return m.Icon == tray.IconDegraded && len(m.Resources) == 1 && strings.Contains(m.Tooltip, "corp-a")
	})

	// Sign out, then Sign in… without a browser flow available fails visibly.
	app.SignOut(ctx)
	<-d.called
	rec.waitFor(t, "signed out", func(m tray.Menu) bool { return m.ShowSignIn && len(m.Resources) == 0 })

	// The daemon stops: back to the hint.
	d.stop()
	rec.waitFor(t, "daemon gone", func(m tray.Menu) bool { return len(m.DaemonDown) > 0 })

	cancel()
	<-done
	testenv.WaitGoroutines(t, before+2, 5*time.Second)
}

func TestActionErrorShown(t *testing.T) {
	dir := t.TempDir()
	app := tray.NewApp(tray.Options{Socket: dir + "/" + localapi.SocketName, Retry: 50 * time.Millisecond})
	rec := &recorder{ch: make(chan tray.Menu, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	d := newFakeDaemon(t, dir)
	d.set(localapi.Status{State: localapi.StateSignedOut, Version: "test"}, nil)
	go app.Run(ctx, rec)
	rec.waitFor(t, "signed out", func(m tray.Menu) bool { return m.ShowSignIn })
	app.SignIn(ctx) // no controller known yet
	rec.waitFor(t, "hint to choose a controller", func(m tray.Menu) bool { return strings.Contains(m.State, "postern login --controller") })
}

// TestSignInWithBrowser drives Sign in… against a real OIDC provider: the
// tray runs the loopback flow, the "browser" signs in on the provider's page,
// and the daemon (here scripted around oidcauth, as the controller does)
// signs the device in.
func TestSignInWithBrowser(t *testing.T) {
	idp := oidctest.Start(t, oidctest.Options{
		Clients:  []oidctest.Client{{ID: "postern", Secret: "postern-secret"}},
		Accounts: map[string]oidctest.Account{"carol": {Password: "carol-pw", Email: "carol@example.com", Groups: []string{"ops"}}},
	})
	p, err := oidcauth.New(context.Background(), oidcauth.Config{Issuer: idp.Issuer, ClientID: "postern", ClientSecret: "postern-secret", Scopes: []string{"groups"}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	d := newFakeDaemon(t, dir)
	d.sso = p
	d.set(localapi.Status{State: localapi.StateSignedOut, Version: "test", ControllerURL: "https://controller.example"}, nil)

	var browserErr error
	app := tray.NewApp(tray.Options{
		Socket: d.socket,
		OpenURL: func(u string) error {
			_, browserErr = oidctest.NewBrowser().SignIn(u, "carol", "carol-pw")
			return browserErr
		},
	})
	rec := &recorder{ch: make(chan tray.Menu, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go app.Run(ctx, rec)
	rec.waitFor(t, "signed out", func(m tray.Menu) bool { return m.ShowSignIn })
	app.SignIn(ctx)
	if browserErr != nil {
		t.Fatalf("browser: %v", browserErr)
	}
	m := rec.waitFor(t, "signed in as carol", func(m tray.Menu) bool {
		return m.User == "Signed in as carol@example.com" && m.ShowConnect && m.ShowSignOut
	})
	if strings.Contains(m.State, "failed") {
		t.Fatalf("state after sign-in: %q", m.State)
	}

	// A refused sign-in shows why, and the user stays signed out.
	d.set(localapi.Status{State: localapi.StateSignedOut, Version: "test", ControllerURL: "https://controller.example"}, nil)
	rec.waitFor(t, "signed out again", func(m tray.Menu) bool { return m.ShowSignIn })
	refuse := tray.NewApp(tray.Options{Socket: d.socket, OpenURL: func(u string) error {
		_, err := oidctest.NewBrowser().Refuse(u)
		return err
	}})
	rec2 := &recorder{ch: make(chan tray.Menu, 1)}
	go refuse.Run(ctx, rec2)
	rec2.waitFor(t, "signed out", func(m tray.Menu) bool { return m.ShowSignIn })
	refuse.SignIn(ctx)
	rec2.waitFor(t, "the refusal", func(m tray.Menu) bool {
		return strings.Contains(m.State, "sign in failed") && strings.Contains(m.State, "access_denied") && m.ShowSignIn
	})
}
