package tray

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"time"

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
		wg.Add(1)
		go func() {
			defer wg.Done()
			v.confirmExported()
		}()
		go func() {
			<-ctx.Done()
			systray.Quit()
		}()
	}
	if runtime.GOOS != "darwin" {
		// Before Run, so that the item's first export carries the title:
		// fyne runs onReady concurrently with that export, and a title set
		// there between the export's read of it and the publication of the
		// item's properties was lost (the item kept an empty Title). On
		// macOS the status item does not exist before Run; on Windows
		// SetTitle does nothing.
		systray.SetTitle(trayTitle)
	}
	systray.Run(onReady, cancel)
	cancel()
	wg.Wait()
}

// trayTitle is the item's title (the name a desktop lists it under).
const trayTitle = "Postern"

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
	last                               Menu   // the last menu applied
	icon                               string // the icon last set
	tooltip                            string // the tooltip last set ("": none yet)
	views                              map[*systray.MenuItem]*itemView
	user, network, state, down1, down2 *systray.MenuItem
	connect, disconnect                *systray.MenuItem
	resources, noResources             *systray.MenuItem
	resItems                           []*systray.MenuItem
	signIn, signOut, about, quit       *systray.MenuItem
}

func newSystrayView(ctx context.Context, app *App, wg *sync.WaitGroup) *systrayView {
	v := &systrayView{ctx: ctx, app: app, wg: wg, views: map[*systray.MenuItem]*itemView{}}
	systray.SetTitle(trayTitle)
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

// item is the view of it that calls it only for what changed.
func (v *systrayView) item(it *systray.MenuItem) *itemView {
	iv := v.views[it]
	if iv == nil {
		iv = &itemView{it: it}
		v.views[it] = iv
	}
	return iv
}

func (v *systrayView) show(it *systray.MenuItem, visible bool) { v.item(it).setVisible(visible) }

func (v *systrayView) line(it *systray.MenuItem, text string) {
	iv := v.item(it)
	iv.setTitle(text)
	iv.setVisible(text != "")
}

// Apply implements View.
func (v *systrayView) Apply(m Menu) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.applyLocked(m)
}

// confirmExported waits until the desktop sees the menu last applied.
// fyne.io/systray puts the item on the session bus after onReady has
// started, from a snapshot of the icon and tooltip taken before; an icon
// or tooltip set in between is dropped (fyne-io/fyne#5081: "do not use the
// systray APIs until the app is launched"), and the tray would show
// "daemon not running" until the daemon's state next changes. So the item
// is read back until it shows the last tooltip (Apply sets it last), and
// the last menu is applied again while the exported one is stale. Once it
// matches, later changes apply directly. Outside Linux there is nothing
// to read back.
func (v *systrayView) confirmExported() {
	probe, err := newItemProbe()
	if err != nil {
		v.app.log.Debug("tray item read-back unavailable", "err", err)
		return
	}
	defer probe.Close()
	want := func() string {
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.last.Tooltip
	}
	reapply := func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		// Set everything again: the title, the icon, the tooltip and
		// every item.
		systray.SetTitle(trayTitle)
		v.icon, v.tooltip = "", ""
		for _, iv := range v.views {
			iv.forget()
		}
		v.applyLocked(v.last)
	}
	if err := converge(v.ctx, probe.Tooltip, want, reapply, time.Minute); err != nil {
		v.app.log.Warn("the desktop does not show the tray's state", "err", err)
	}
}

// converge reads the exported tooltip until it is want(), calling reapply
// each time the item is exported with another one, backing off from 10 ms
// to 500 ms between reads, for at most limit.
func converge(ctx context.Context, read func() (string, error), want func() string, reapply func(), limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for delay := 10 * time.Millisecond; ; delay = min(2*delay, 500*time.Millisecond) {
		w := want()
		got, err := read()
		switch {
		case err == nil && got == w:
			return nil
		case err == nil: // on the bus with a stale snapshot
			reapply()
		}
		if time.Now().After(deadline) {
			if err != nil {
				return err
			}
			return fmt.Errorf("the item shows %q, want %q", got, w)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

func (v *systrayView) applyLocked(m Menu) {
	v.last = m
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
	v.line(v.down1, d1)
	v.line(v.down2, d2)
	v.line(v.user, m.User)
	v.line(v.network, m.Network)
	v.line(v.state, m.State)
	v.show(v.connect, m.ShowConnect)
	v.show(v.disconnect, m.ShowDisconnect)
	v.show(v.signIn, m.ShowSignIn)
	v.show(v.signOut, m.ShowSignOut)
	v.show(v.resources, !down && m.ShowSignOut)
	v.item(v.about).setTitle(m.About)

	for i, r := range m.Resources {
		if i == len(v.resItems) {
			it := v.resources.AddSubMenuItem(r.Label, "")
			idx := i
			v.on(it, func() { v.app.ClickResource(idx) })
			v.resItems = append(v.resItems, it)
		}
		iv := v.item(v.resItems[i])
		iv.setTitle(r.Label)
		if r.OpenURL != "" {
			iv.setTooltip("Open " + r.OpenURL)
		} else {
			iv.setTooltip("Copy " + r.Address)
		}
		iv.setVisible(true)
	}
	for _, it := range v.resItems[len(m.Resources):] {
		v.show(it, false)
	}
	v.show(v.noResources, len(m.Resources) == 0)
	// Last, so that a tooltip seen on the bus means the menu is up to date.
	if m.Tooltip != v.tooltip {
		systray.SetTooltip(m.Tooltip)
		v.tooltip = m.Tooltip
	}
}
