package tray

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"postern.dev/postern/client/sso"
	"postern.dev/postern/localapi"
	"postern.dev/postern/version"
)

// View shows a Menu (the systray binding, or a recorder in tests).
type View interface {
	Apply(Menu)
}

// Options configure an App.
type Options struct {
	Socket  string
	Log     *slog.Logger
	OpenURL func(string) error // default sso.OpenBrowser
	Copy    func(string) error // default CopyToClipboard
	// ControllerURL is where Sign in… goes when the daemon has no controller
	// yet (an administrator can set it in the autostart entry).
	ControllerURL string
	// Retry is the wait before reconnecting to an absent daemon; default 2s.
	Retry time.Duration
}

// App follows the daemon and carries out the menu's actions.
type App struct {
	opts   Options
	client *localapi.Client
	log    *slog.Logger

	mu        sync.Mutex
	view      View
	status    *localapi.Status
	resources []localapi.Resource
	actionErr string
	daemonErr error // why the daemon cannot be reached (status is nil)
	menu      Menu
	signingIn bool
}

// NewApp returns an App for the daemon's socket.
func NewApp(opts Options) *App {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.OpenURL == nil {
		opts.OpenURL = sso.OpenBrowser
	}
	if opts.Copy == nil {
		opts.Copy = CopyToClipboard
	}
	if opts.Retry <= 0 {
		opts.Retry = 2 * time.Second
	}
	return &App{opts: opts, client: localapi.NewClient(opts.Socket), log: opts.Log}
}

// Menu returns what is shown now.
func (a *App) Menu() Menu {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.menu
}

// aboutLabel is the About line; call with a.mu held.
func (a *App) aboutLabel() string {
	s := "About Postern " + version.Version
	if a.status != nil && a.status.Version != "" && a.status.Version != version.Version {
		s += " (daemon " + a.status.Version + ")"
	}
	return s
}

// render recomputes the menu; call with a.mu held.
func (a *App) render() {
	m := Build(a.status, a.resources, a.daemonErr)
	m.About = a.aboutLabel()
	if a.actionErr != "" && a.status != nil {
		m.State += " — " + a.actionErr
		m.Tooltip += " — " + a.actionErr
	}
	if a.signingIn {
		m.State += " — signing in, see your browser"
		m.ShowSignIn = false
	}
	a.menu = m
	if a.view != nil {
		a.view.Apply(m)
	}
}

func (a *App) setStatus(st *localapi.Status, res []localapi.Resource) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.status, a.resources, a.daemonErr = st, res, nil
	a.render()
}

func (a *App) setUnreachable(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.status, a.resources, a.daemonErr = nil, nil, err
	a.render()
}

func (a *App) setActionErr(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil {
		a.actionErr = ""
	} else {
		a.actionErr = err.Error()
	}
	a.render()
}

// refresh applies a status and fetches the resources that go with it.
func (a *App) refresh(ctx context.Context, st localapi.Status) {
	var res []localapi.Resource
	if st.State != localapi.StateSignedOut && st.Principal != nil {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		r, err := a.client.Resources(ctx)
		if err != nil {
			a.log.Warn("list resources", "err", err)
		}
		res = r
	}
	a.setStatus(&st, res)
}

// Run shows state in view and follows the daemon's event stream until ctx
// ends, reconnecting when the daemon goes away and comes back.
func (a *App) Run(ctx context.Context, view View) {
	a.mu.Lock()
	a.view = view
	a.render()
	a.mu.Unlock()
	for ctx.Err() == nil {
		delivered := 0
		err := a.client.Events(ctx, func(st localapi.Status) bool {
			if st.State != "" { // not a keepalive
				delivered++
				a.refresh(ctx, st)
			}
			return true
		})
		if ctx.Err() != nil {
			return
		}
		switch {
		case errors.Is(err, localapi.ErrDaemonNotRunning):
			a.setUnreachable(err)
		case delivered > 0:
			a.log.Debug("daemon event stream ended", "err", err)
			continue // reconnect at once: a restart, or the daemon went away
		default:
			a.log.Warn("daemon event stream", "err", err)
			a.setUnreachable(err) // e.g. permission denied on the socket
		}
		t := time.NewTimer(a.opts.Retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (a *App) act(ctx context.Context, what string, fn func(context.Context) error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := fn(ctx); err != nil {
		a.log.Warn(what, "err", err)
		a.setActionErr(fmt.Errorf("%s failed: %w", what, err))
		return
	}
	a.setActionErr(nil)
}

// statusCall adapts a local API call that answers a Status.
func statusCall(f func(context.Context) (localapi.Status, error)) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := f(ctx)
		return err
	}
}

// Connect brings the tunnel up.
func (a *App) Connect(ctx context.Context) { a.act(ctx, "connect", statusCall(a.client.Up)) }

// Disconnect brings the tunnel down.
func (a *App) Disconnect(ctx context.Context) {
	a.act(ctx, "disconnect", statusCall(a.client.Down))
}

// SignOut signs the daemon out.
func (a *App) SignOut(ctx context.Context) { a.act(ctx, "sign out", statusCall(a.client.Logout)) }

// SignIn runs the browser sign-in (single sign-on) at the controller the
// daemon last used and hands the result to the daemon.
func (a *App) SignIn(ctx context.Context) {
	a.mu.Lock()
	controller := a.opts.ControllerURL
	if a.status != nil && a.status.ControllerURL != "" {
		controller = a.status.ControllerURL
	}
	if a.signingIn {
		a.mu.Unlock()
		return
	}
	if controller == "" {
		a.actionErr = "choose the controller once with: postern login --controller URL (or postern-tray --controller URL)"
		a.render()
		a.mu.Unlock()
		return
	}
	a.signingIn = true
	a.render()
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.signingIn = false
		a.render()
		a.mu.Unlock()
	}()
	a.act(ctx, "sign in", func(ctx context.Context) error {
		grant, err := sso.Browser(ctx, sso.DaemonStarter{C: a.client, ControllerURL: controller}, sso.BrowserOptions{Open: a.opts.OpenURL})
		if err != nil {
			return err
		}
		_, err = a.client.Login(ctx, localapi.LoginRequest{ControllerURL: controller, OIDC: grant})
		return err
	})
}

// ClickResource opens an HTTP resource in the browser or copies the address.
func (a *App) ClickResource(i int) {
	a.mu.Lock()
	if i < 0 || i >= len(a.menu.Resources) {
		a.mu.Unlock()
		return
	}
	r := a.menu.Resources[i]
	a.mu.Unlock()
	if r.OpenURL != "" {
		if err := a.opts.OpenURL(r.OpenURL); err != nil {
			a.setActionErr(err)
		}
		return
	}
	if r.Address == "" {
		return // nothing to copy (e.g. a posture problem to fix on the device)
	}
	if err := a.opts.Copy(r.Address); err != nil {
		a.setActionErr(err)
	}
}
