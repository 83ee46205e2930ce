package tray_test

import (
	"bytes"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/localapi"
	"postern.dev/postern/tray"
	"postern.dev/postern/version"
)

// TestTrayOverDBus runs the real postern-tray program under dbus-run-session
// against a scripted daemon socket, and checks it the way a desktop's tray
// host does: com.canonical.dbusmenu GetLayout and Event on the
// StatusNotifierItem's menu, and the item's IconPixmap and ToolTip.
//
// The program is built without the race detector: fyne.io/systray v1.12.2
// itself has data races between its D-Bus handlers (GetLayout's delayed
// revision bump, SetIcon's pixmap) that -race would report on every run.
func TestTrayOverDBus(t *testing.T) {
	need := func(bin string) string {
		testenv.RequireTools(t, bin)
		p, _ := exec.LookPath(bin)
		return p
	}
	runner := need("dbus-run-session")
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = need("go")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "postern-tray")
	build := exec.Command(goBin, "build", "-o", bin, "postern.dev/postern/cmd/postern-tray")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build postern-tray: %v\n%s", err, out)
	}

	d := newFakeDaemon(t, dir)
	addrFile := filepath.Join(dir, "bus-address")
	var output bytes.Buffer
	var outMu sync.Mutex
	w := writerFunc(func(p []byte) (int, error) { outMu.Lock(); defer outMu.Unlock(); return output.Write(p) })
	cmd := exec.Command(runner, "--", "sh", "-c", `printf '%s' "$DBUS_SESSION_BUS_ADDRESS" > "$0.tmp" && mv "$0.tmp" "$0" && exec "$1" --socket "$2"`, addrFile, bin, d.socket)
	cmd.Env = append(os.Environ(), "POSTERN_SOCKET=")
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dbus-run-session: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
		outMu.Lock()
		t.Logf("postern-tray under dbus-run-session:\n%s", output.String())
		outMu.Unlock()
	})

	var addr []byte
	deadline := time.Now().Add(20 * time.Second)
	for len(addr) == 0 {
		addr, _ = os.ReadFile(addrFile)
		if time.Now().After(deadline) {
			t.Fatal("dbus-run-session never started the tray")
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := dbus.Connect(string(addr))
	if err != nil {
		t.Fatalf("connect to the session bus %s: %v", addr, err)
	}
	defer conn.Close()

	// Be the desktop's StatusNotifierWatcher: the tray (already running)
	// sees the name appear and registers its item with us.
	sni := &watcher{registered: make(chan string, 4)}
	if err := conn.Export(sni, "/StatusNotifierWatcher", "org.kde.StatusNotifierWatcher"); err != nil {
		t.Fatalf("export watcher: %v", err)
	}
	if reply, err := conn.RequestName("org.kde.StatusNotifierWatcher", dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own org.kde.StatusNotifierWatcher: %v %v", reply, err)
	}
	dk := &desktop{conn: conn}
	select {
	case dk.name = <-sni.registered:
	case <-time.After(20 * time.Second):
		t.Fatal("the tray never registered its StatusNotifierItem")
	}
	var trayPID uint32
	if err := conn.BusObject().Call("org.freedesktop.DBus.GetConnectionUnixProcessID", 0, dk.name).Store(&trayPID); err != nil {
		t.Fatalf("tray pid: %v", err)
	}

	checkTray(t, dk, d)

	// Quit like a session ending: SIGTERM to the tray; it exits cleanly and
	// dbus-run-session with it.
	if err := syscall.Kill(int(trayPID), syscall.SIGTERM); err != nil {
		t.Fatalf("stop the tray: %v", err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("tray exited with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the tray did not exit on SIGTERM")
	}
}

// watcher is a minimal org.kde.StatusNotifierWatcher.
type watcher struct{ registered chan string }

// RegisterStatusNotifierItem records the item's bus name.
func (w *watcher) RegisterStatusNotifierItem(sender dbus.Sender, service string) *dbus.Error {
	if !strings.HasPrefix(service, "/") {
		sender = dbus.Sender(service) // registered by bus name
	}
	w.registered <- string(sender)
	return nil
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// menuItem is a flattened dbusmenu layout entry.
type menuItem struct {
	ID      int32
	Label   string
	Visible bool
	Enabled bool
	Parent  int32
}

func flatten(parent int32, v any, out *[]menuItem) {
	var id int32
	var props map[string]dbus.Variant
	var children []dbus.Variant
	switch l := v.(type) {
	case []any:
		id, _ = l[0].(int32)
		props, _ = l[1].(map[string]dbus.Variant)
		children, _ = l[2].([]dbus.Variant)
	default:
		return
	}
	it := menuItem{ID: id, Parent: parent, Visible: true, Enabled: true}
	if p, ok := props["label"]; ok {
		it.Label, _ = p.Value().(string)
	}
	if p, ok := props["visible"]; ok {
		it.Visible, _ = p.Value().(bool)
	}
	if p, ok := props["enabled"]; ok {
		it.Enabled, _ = p.Value().(bool)
	}
	*out = append(*out, it)
	for _, c := range children {
		flatten(id, c.Value(), out)
	}
}

type desktop struct {
	conn *dbus.Conn
	name string
}

func (d *desktop) layout(t *testing.T) []menuItem {
	t.Helper()
	var rev uint32
	var root struct {
		V0 int32
		V1 map[string]dbus.Variant
		V2 []dbus.Variant
	}
	call := d.conn.Object(d.name, "/StatusNotifierItem/menu").Call("com.canonical.dbusmenu.GetLayout", 0, int32(0), int32(-1), []string{})
	if err := call.Store(&rev, &root); err != nil {
		t.Fatalf("GetLayout: %v", err)
	}
	var items []menuItem
	flatten(-1, []any{root.V0, root.V1, root.V2}, &items)
	return items
}

func find(items []menuItem, label string) (menuItem, bool) {
	for _, it := range items {
		if it.Label == label {
			return it, true
		}
	}
	return menuItem{}, false
}

func visible(items []menuItem, label string) bool {
	it, ok := find(items, label)
	return ok && it.Visible
}

func (d *desktop) waitLayout(t *testing.T, what string, ok func([]menuItem) bool) []menuItem {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		items := d.layout(t)
		if ok(items) {
			return items
		}
		if time.Now().After(deadline) {
			t.Fatalf("menu never showed %s; layout: %+v", what, items)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *desktop) click(t *testing.T, id int32) {
	t.Helper()
	call := d.conn.Object(d.name, "/StatusNotifierItem/menu").Call("com.canonical.dbusmenu.Event", 0, id, "clicked", dbus.MakeVariant(""), uint32(time.Now().Unix()))
	if call.Err != nil {
		t.Fatalf("Event clicked %d: %v", id, call.Err)
	}
}

func (d *desktop) prop(t *testing.T, name string) dbus.Variant {
	t.Helper()
	v, err := d.conn.Object(d.name, "/StatusNotifierItem").GetProperty("org.kde.StatusNotifierItem." + name)
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return v
}

type pixmap struct {
	W, H int32
	Pix  []byte
}

// iconARGB is the StatusNotifierItem IconPixmap (ARGB32, network order) of
// a state's icon.
func iconARGB(t *testing.T, state string) []byte {
	img, err := png.Decode(bytes.NewReader(tray.IconPNG(state)))
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, a := img.At(x, y).RGBA()
			out = append(out, byte(a), byte(r), byte(g), byte(bl))
		}
	}
	return out
}

func (d *desktop) waitIcon(t *testing.T, state string) {
	t.Helper()
	want := iconARGB(t, state)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var px []pixmap
		if err := d.prop(t, "IconPixmap").Store(&px); err != nil {
			t.Fatalf("IconPixmap: %v", err)
		}
		if len(px) == 1 && px[0].W == 32 && bytes.Equal(px[0].Pix, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the icon never became %q", state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *desktop) tooltip() (string, error) {
	v, err := d.conn.Object(d.name, "/StatusNotifierItem").GetProperty("org.kde.StatusNotifierItem.ToolTip")
	if err != nil {
		return "", err
	}
	var tip struct {
		V0 string
		V1 []pixmap
		V2 string
		V3 string
	}
	if err := v.Store(&tip); err != nil {
		return "", err
	}
	return tip.V2, nil
}

// waitTooltip waits for the item's tooltip; the tray sets it last in each
// update, so the menu is current once it shows.
func (d *desktop) waitTooltip(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := d.tooltip()
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("tooltip never became %q (is %q, %v)", want, got, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func checkTray(t *testing.T, dk *desktop, d *fakeDaemon) {
	dk.waitTooltip(t, "Postern: Connected")

	// The user, the network and the resources appear.
	items := dk.waitLayout(t, "the user and the resources", func(items []menuItem) bool {
		return visible(items, "Signed in as alice@example.com") && visible(items, "Network: corp") &&
			visible(items, "db — db.corp.internal") && visible(items, "wiki — wiki.corp.internal") && visible(items, "Disconnect")
	})
	res, _ := find(items, "Resources")
	db, _ := find(items, "db — db.corp.internal")
	if wiki, _ := find(items, "wiki — wiki.corp.internal"); wiki.Parent != res.ID {
		t.Fatalf("resource wiki is not in the Resources submenu: %+v", items)
	}
	if db.Parent != res.ID {
		t.Fatalf("resource db is not in the Resources submenu: %+v", items)
	}
	for _, hidden := range []string{"Connect", "Sign in…"} {
		if visible(items, hidden) {
			t.Errorf("%q is visible while connected", hidden)
		}
	}
	if !visible(items, "Sign out") || !visible(items, "Quit") {
		t.Errorf("Sign out or Quit missing: %+v", items)
	}
	if it, ok := find(items, "About Postern "+version.Version+" (daemon test)"); !ok || !it.Visible {
		t.Errorf("About line missing: %+v", items)
	}
	dk.waitIcon(t, tray.IconConnected)
	if title, _ := dk.prop(t, "Title").Value().(string); title != "Postern" {
		t.Errorf("Title = %q", title)
	}

	// Disconnect, clicked as a desktop does: the daemon goes down and the
	// icon and menu follow its event stream.
	disc, _ := find(items, "Disconnect")
	dk.click(t, disc.ID)
	select {
	case got := <-d.called:
		if got != "/v1/down" {
			t.Fatalf("the daemon got %s, want /v1/down", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("clicking Disconnect did not reach the daemon")
	}
	dk.waitLayout(t, "Connect instead of Disconnect", func(items []menuItem) bool {
		return visible(items, "Connect") && !visible(items, "Disconnect") && visible(items, "Disconnected")
	})
	dk.waitIcon(t, tray.IconSignedOut)
	dk.waitTooltip(t, "Postern: Disconnected")

	// The daemon's own changes arrive too: degraded.
	deg := signedIn(localapi.StateDegraded)
	deg.Message = "controller unreachable"
	d.set(deg, testResources)
	dk.waitIcon(t, tray.IconDegraded)

	// The daemon stops: the menu says how to start it.
	d.stop()
	dk.waitLayout(t, "the daemon hint", func(items []menuItem) bool {
		return visible(items, "Postern daemon not running") && visible(items, "Start it with: sudo systemctl start posternd") &&
			!visible(items, "Disconnect") && !visible(items, "Connect") && !visible(items, "Resources")
	})
	dk.waitIcon(t, tray.IconError)
}
