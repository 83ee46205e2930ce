package tray

import (
	"context"
	"runtime"
	"sync"

	"fyne.io/systray"
)

// Run shows the tray icon and menu (fyne.io/systray: a StatusNotifierItem
// with a com.canonical.dbusmenu menu on Linux desktops, the notification
// area on Windows) and blocks until Quit is chosen or ctx ends.
func Run(ctx context.Context, app *App) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	onReady := func() {
		v := newSystrayView(ctx, app, &wg)
		wg.Add(1)
		go func() {
			defer wg.Done()
			app.Run(ctx, v)
		}()
		go func() {
			<-ctx.Done()
			systray.Quit()
		}()
	}
	systray.Run(onReady, cancel)
	cancel()
	wg.Wait()
}

func iconBytes(state string) []byte {
	if runtime.GOOS == "windows" {
		return IconICO(state)
	}
	return IconPNG(state)
}

// systrayView keeps the menu items and applies Menus to them.
type systrayView struct {
	ctx context.Context
	app *App
	wg  *sync.WaitGroup

	mu                                 sync.Mutex
	icon                               string
	user, network, state, down1, down2 *systray.MenuItem
	connect, disconnect                *systray.MenuItem
	resources, noResources             *systray.MenuItem
	resItems                           []*systray.MenuItem
	signIn, signOut, about, quit       *systray.MenuItem
}

func newSystrayView(ctx context.Context, app *App, wg *sync.WaitGroup) *systrayView {
	v := &systrayView{ctx: ctx, app: app, wg: wg}
	systray.SetTitle("Postern")
	disabled := func(title string) *systray.MenuItem {
		it := systray.AddMenuItem(title, "")
		it.Disable()
		return it
	}
	v.user = disabled("")
	v.network = disabled("")
	v.state = disabled("")
	v.down1 = disabled("")
	v.down2 = disabled("")
	systray.AddSeparator()
	v.connect = systray.AddMenuItem("Connect", "Bring the tunnel up")
	v.disconnect = systray.AddMenuItem("Disconnect", "Bring the tunnel down")
	v.resources = systray.AddMenuItem("Resources", "What you can reach: click to copy the address or open a web app")
	v.noResources = v.resources.AddSubMenuItem("No resources", "")
	v.noResources.Disable()
	systray.AddSeparator()
	v.signIn = systray.AddMenuItem("Sign in…", "Sign in with your company's identity provider")
	v.signOut = systray.AddMenuItem("Sign out", "Sign this device out")
	v.about = systray.AddMenuItem("About Postern", "")
	v.about.Disable()
	systray.AddSeparator()
	v.quit = systray.AddMenuItem("Quit", "Close the tray icon (the daemon keeps running)")

	v.on(v.connect, func() { app.Connect(ctx) })
	v.on(v.disconnect, func() { app.Disconnect(ctx) })
	v.on(v.signIn, func() { app.SignIn(ctx) })
	v.on(v.signOut, func() { app.SignOut(ctx) })
	v.on(v.quit, systray.Quit)
	return v
}

// on runs fn (in its own goroutine: systray drops clicks nobody waits for)
// for each click on it.
func (v *systrayView) on(it *systray.MenuItem, fn func()) {
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		for {
			select {
			case <-v.ctx.Done():
				return
			case <-it.ClickedCh:
				v.wg.Add(1)
				go func() {
					defer v.wg.Done()
					fn()
				}()
			}
		}
	}()
}

func show(it *systray.MenuItem, visible bool) {
	if visible {
		it.Show()
	} else {
		it.Hide()
	}
}

func line(it *systray.MenuItem, text string) {
	it.SetTitle(text)
	show(it, text != "")
}

// Apply implements View.
func (v *systrayView) Apply(m Menu) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if m.Icon != v.icon {
		systray.SetIcon(iconBytes(m.Icon))
		v.icon = m.Icon
	}
	down := len(m.DaemonDown) > 0
	d1, d2 := "", ""
	if down {
		d1 = m.DaemonDown[0]
		if len(m.DaemonDown) > 1 {
			d2 = m.DaemonDown[1]
		}
	}
	line(v.down1, d1)
	line(v.down2, d2)
	line(v.user, m.User)
	line(v.network, m.Network)
	line(v.state, m.State)
	show(v.connect, m.ShowConnect)
	show(v.disconnect, m.ShowDisconnect)
	show(v.signIn, m.ShowSignIn)
	show(v.signOut, m.ShowSignOut)
	show(v.resources, !down && m.ShowSignOut)
	v.about.SetTitle(m.About)

	for i, r := range m.Resources {
		if i == len(v.resItems) {
			it := v.resources.AddSubMenuItem(r.Label, "")
			idx := i
			v.on(it, func() { v.app.ClickResource(idx) })
			v.resItems = append(v.resItems, it)
		}
		it := v.resItems[i]
		it.SetTitle(r.Label)
		if r.OpenURL != "" {
			it.SetTooltip("Open " + r.OpenURL)
		} else {
			it.SetTooltip("Copy " + r.Address)
		}
		it.Show()
	}
	for _, it := range v.resItems[len(m.Resources):] {
		it.Hide()
	}
	show(v.noResources, len(m.Resources) == 0)
	// Last, so that a tooltip seen on the bus means the menu is up to date.
	systray.SetTooltip(m.Tooltip)
}
