package tray_test

import (
	"bufio"
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/tray"
)

// envShots names a directory for the screenshots (make tray-screenshots
// sets it to docs/tray); without it they are taken and checked, not kept.
const envShots = "POSTERN_TRAY_SHOTS"

// panelXML is an xfce4-panel with one panel at the top of the screen
// holding only the notification area (the systray plugin, which is the
// desktop's org.kde.StatusNotifierWatcher and shows StatusNotifierItems).
const panelXML = `<?xml version="1.0" encoding="UTF-8"?>
<channel name="xfce4-panel" version="1.0">
  <property name="configver" type="int" value="2"/>
  <property name="panels" type="array">
    <value type="int" value="1"/>
    <property name="panel-1" type="empty">
      <property name="position" type="string" value="p=6;x=0;y=0"/>
      <property name="length" type="uint" value="100"/>
      <property name="position-locked" type="bool" value="true"/>
      <property name="size" type="uint" value="32"/>
      <property name="plugin-ids" type="array">
        <value type="int" value="1"/>
      </property>
    </property>
  </property>
  <property name="plugins" type="empty">
    <property name="plugin-1" type="string" value="systray"/>
  </property>
</channel>
`

const (
	screenW, screenH = 640, 480
	panelH           = 32
)

// xdesktop is a virtual X display (Xvfb) with a session bus and a real
// StatusNotifier host (xfce4-panel from Debian).
type xdesktop struct {
	t       *testing.T
	dir     string
	env     []string // DISPLAY, DBUS_SESSION_BUS_ADDRESS, HOME, XDG_*
	bus     *dbus.Conn
	shotDir string
}

// startProc starts a helper in its own process group (so that what it
// starts, such as the D-Bus-activated xfconfd, ends with it) and stops the
// group when the test ends.
func startProc(t *testing.T, cmd *exec.Cmd, what string) *testenv.SyncBuffer {
	t.Helper()
	out := &testenv.SyncBuffer{}
	if cmd.Stdout == nil {
		cmd.Stdout = out
	}
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", what, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", what, out.String())
		}
	})
	return out
}

func startXDesktop(t *testing.T) *xdesktop {
	t.Helper()
	testenv.RequireTools(t, "Xvfb", "xfce4-panel", "dbus-daemon", "xdotool", "import", "xclip")
	x := &xdesktop{t: t, dir: t.TempDir(), shotDir: os.Getenv(envShots)}
	for _, d := range []string{"cfg/xfce4/xfconf/xfce-perchannel-xml", "run", "cache", "data"} {
		if err := os.MkdirAll(filepath.Join(x.dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(x.dir, "cfg/xfce4/xfconf/xfce-perchannel-xml/xfce4-panel.xml"), []byte(panelXML), 0o600); err != nil {
		t.Fatal(err)
	}
	x.env = []string{"HOME=" + x.dir, "XDG_CONFIG_HOME=" + filepath.Join(x.dir, "cfg"), "XDG_RUNTIME_DIR=" + filepath.Join(x.dir, "run"),
		"XDG_CACHE_HOME=" + filepath.Join(x.dir, "cache"), "XDG_DATA_HOME=" + filepath.Join(x.dir, "data"), "NO_AT_BRIDGE=1"}

	// The X server picks a free display and writes its number to fd 3.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	xvfb := exec.Command("Xvfb", "-displayfd", "3", "-screen", "0", fmt.Sprintf("%dx%dx24", screenW, screenH), "-nolisten", "tcp")
	xvfb.ExtraFiles = []*os.File{w}
	startProc(t, xvfb, "Xvfb")
	w.Close()
	d := firstLine(t, r, "Xvfb")
	if d == "" {
		t.Fatal("Xvfb did not say which display it serves")
	}
	x.env = append(x.env, "DISPLAY=:"+d)

	// A session bus of our own.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	bus := exec.Command("dbus-daemon", "--session", "--nofork", "--print-address=1", "--address=unix:path="+filepath.Join(x.dir, "bus"))
	bus.Env = append(os.Environ(), x.env...)
	bus.Stdout = pw
	startProc(t, bus, "dbus-daemon")
	pw.Close()
	a := firstLine(t, pr, "dbus-daemon")
	x.env = append(x.env, "DBUS_SESSION_BUS_ADDRESS="+a)
	conn, err := dbus.Connect(a)
	if err != nil {
		t.Fatalf("connect to the session bus: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	x.bus = conn

	panel := exec.Command("xfce4-panel")
	panel.Env = append(os.Environ(), x.env...)
	startProc(t, panel, "xfce4-panel")
	testenv.Eventually(t, 20*time.Second, "xfce4-panel's StatusNotifierWatcher on the bus", func() bool {
		var has bool
		err := x.bus.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, "org.kde.StatusNotifierWatcher").Store(&has)
		return err == nil && has
	})
	return x
}

// firstLine reads the first line a program just started writes to r (the
// read end of its pipe) and closes r; the test fails when none comes
// within 20 s.
func firstLine(t *testing.T, r *os.File, what string) string {
	t.Helper()
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(r).ReadString('\n')
		line <- strings.TrimSpace(l)
		r.Close()
	}()
	select {
	case l := <-line:
		return l
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not start", what)
		return ""
	}
}

// item waits for the one StatusNotifierItem the host shows and returns a
// desktop handle on it (the D-Bus side of what the host does).
func (x *xdesktop) item() *desktop {
	t := x.t
	t.Helper()
	var name string
	testenv.Eventually(t, 20*time.Second, "the tray's item registered with xfce4-panel", func() bool {
		v, err := x.bus.Object("org.kde.StatusNotifierWatcher", "/StatusNotifierWatcher").GetProperty("org.kde.StatusNotifierWatcher.RegisteredStatusNotifierItems")
		if err != nil {
			return false
		}
		items, _ := v.Value().([]string)
		if len(items) != 1 {
			return false
		}
		name, _, _ = strings.Cut(items[0], "/")
		return name != ""
	})
	return &desktop{conn: x.bus, name: name}
}

// screenshot grabs the whole screen (ImageMagick's import, as a user's
// screenshot tool does).
func (x *xdesktop) screenshot() image.Image {
	x.t.Helper()
	cmd := exec.Command("import", "-window", "root", "png:-")
	cmd.Env = append(os.Environ(), x.env...)
	out, err := cmd.Output()
	if err != nil {
		x.t.Fatalf("screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(out))
	if err != nil {
		x.t.Fatalf("decode screenshot: %v", err)
	}
	return img
}

func near(c color.Color, want color.NRGBA) bool {
	r, g, b, _ := c.RGBA()
	d := func(a uint32, b uint8) int { v := int(a>>8) - int(b); return v * v }
	return d(r, want.R)+d(g, want.G)+d(b, want.B) < 30*30
}

// findIcon returns the bounds of the pixels of a state's ring colour in the
// panel, the icon as the host drew it (empty when it is not there).
func findIcon(img image.Image, state string) image.Rectangle {
	ring := tray.DrawIcon(state).NRGBAAt(2, 15) // a pixel of the ring's left edge
	var box image.Rectangle
	n := 0
	for y := 0; y < panelH; y++ {
		for x := 0; x < img.Bounds().Dx(); x++ {
			if near(img.At(x, y), ring) {
				box = box.Union(image.Rect(x, y, x+1, y+1))
				n++
			}
		}
	}
	if n < 40 { // a drawn icon has hundreds; stray antialiasing a few
		return image.Rectangle{}
	}
	return box
}

// menuBox is the bounding box of what is drawn below the panel (the open
// menu; the rest of the root window is black).
func menuBox(img image.Image) image.Rectangle {
	var box image.Rectangle
	b := img.Bounds()
	for y := panelH + 1; y < b.Max.Y; y++ {
		for x := 0; x < b.Max.X; x++ {
			if r, g, bl, _ := img.At(x, y).RGBA(); r|g|bl > 0x0f00 {
				box = box.Union(image.Rect(x, y, x+1, y+1))
			}
		}
	}
	return box
}

// waitIconShown waits until the host draws the state's icon and returns
// where.
func (x *xdesktop) waitIconShown(state string) (image.Image, image.Rectangle) {
	x.t.Helper()
	var img image.Image
	var box image.Rectangle
	testenv.Eventually(x.t, 10*time.Second, "xfce4-panel showing the "+state+" icon", func() bool {
		img = x.screenshot()
		box = findIcon(img, state)
		return !box.Empty()
	})
	return img, box
}

// save keeps a part of a screenshot as docs/tray/NAME.png when asked to.
func (x *xdesktop) save(img image.Image, r image.Rectangle, name string) {
	if x.shotDir == "" {
		return
	}
	r = r.Intersect(img.Bounds())
	out := image.NewNRGBA(image.Rect(0, 0, r.Dx(), r.Dy()))
	draw.Draw(out, out.Bounds(), img, r.Min, draw.Src)
	var b bytes.Buffer
	if err := png.Encode(&b, out); err != nil {
		x.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(x.shotDir, name+".png"), b.Bytes(), 0o644); err != nil {
		x.t.Fatalf("save screenshot: %v", err)
	}
}

func (x *xdesktop) xdotool(args ...string) {
	x.t.Helper()
	cmd := exec.Command("xdotool", args...)
	cmd.Env = append(os.Environ(), x.env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		x.t.Fatalf("xdotool %v: %v\n%s", args, err, out)
	}
}

// pointerAway moves the pointer from the icon it clicked to the screen's
// far corner, clear of the panel and of the menus that open under the
// icon. Left resting on the icon, it makes the panel show the item's
// tooltip below the panel once the menu closes, which looks like a menu
// that stayed open (and on a loaded machine is up before the first
// screenshot after the choice).
func (x *xdesktop) pointerAway() {
	x.t.Helper()
	x.xdotool("mousemove", fmt.Sprint(screenW-1), fmt.Sprint(screenH-1))
}

// shoot checks that the host shows the state's icon, keeps the panel's
// corner as NAME.png, then opens the menu with a right click on the icon
// as a user does, keeps menu-NAME.png, and closes it with Escape. keys, if
// any, are typed into the open menu first (to open a submenu).
func (x *xdesktop) shoot(state, name string, keys ...string) {
	x.t.Helper()
	img, icon := x.waitIconShown(state)
	if len(keys) == 0 {
		x.save(img, image.Rect(0, 0, 160, panelH), name)
	}
	c := icon.Min.Add(icon.Max).Div(2)
	x.xdotool("mousemove", fmt.Sprint(c.X), fmt.Sprint(c.Y), "click", "3")
	var box image.Rectangle
	testenv.Eventually(x.t, 10*time.Second, "the menu open under the icon", func() bool {
		img = x.screenshot()
		box = menuBox(img)
		return box.Dx() > 100 && box.Dy() > 40
	})
	x.pointerAway()
	x.typeKeys(keys...)
	if len(keys) > 0 {
		// The submenu opens beside the menu: wait for the picture to grow.
		first := box
		testenv.Eventually(x.t, 10*time.Second, "the submenu open", func() bool {
			img = x.screenshot()
			box = menuBox(img)
			return box.Max.X > first.Max.X+50
		})
	}
	x.save(img, image.Rect(0, 0, box.Max.X+8, box.Max.Y+8), "menu-"+name)
	x.xdotool("key", "Escape")
	if len(keys) > 0 {
		x.xdotool("key", "Escape")
	}
	x.waitMenuClosed("the menu closed")
}

// waitMenuClosed waits until nothing is drawn below the panel. On a
// timeout it keeps the last screenshot in the system's temporary directory
// and names it, to show what stayed open.
func (x *xdesktop) waitMenuClosed(what string) {
	x.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		img := x.screenshot()
		box := menuBox(img)
		if box.Empty() {
			return
		}
		if time.Now().After(deadline) {
			kept := "not kept"
			if f, err := os.CreateTemp("", "postern-tray-*.png"); err == nil {
				if err := png.Encode(f, img); err == nil {
					kept = "kept in " + f.Name()
				}
				f.Close()
			}
			x.t.Fatalf("timed out after 10s waiting for %s: %v is drawn below the panel (screen %s)", what, box, kept)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// typeKeys types keys into the open menu one at a time and waits, after
// each, for the menu to show that it took it (a highlight moved, a submenu
// opened, the menu closed): every key a menu receives changes what it shows.
// A GTK menu maps before it holds the keyboard, and on a loaded machine a
// key sent in between is lost; such a key (nothing changed within 2 s) is
// sent again, at most twice, and never after one that was seen.
func (x *xdesktop) typeKeys(keys ...string) {
	x.t.Helper()
	for _, k := range keys {
		// Compare against a settled picture (the menu drawn in full).
		before := menuPixels(x.screenshot())
		for settle := time.Now().Add(2 * time.Second); time.Now().Before(settle); {
			time.Sleep(50 * time.Millisecond)
			now := menuPixels(x.screenshot())
			if bytes.Equal(now, before) {
				break
			}
			before = now
		}
		took := false
		for attempt := 0; attempt < 3 && !took; attempt++ {
			x.xdotool("key", k)
			deadline := time.Now().Add(2 * time.Second)
			for !took && time.Now().Before(deadline) {
				took = !bytes.Equal(menuPixels(x.screenshot()), before)
				if !took {
					time.Sleep(50 * time.Millisecond)
				}
			}
		}
		if !took {
			x.t.Fatalf("the menu showed no effect of key %s after three presses", k)
		}
	}
}

// menuPixels is the screen below the panel (where menus open), as bytes.
func menuPixels(img image.Image) []byte {
	b := img.Bounds()
	var out []byte
	for y := panelH + 1; y < b.Max.Y; y++ {
		for x := 0; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			out = append(out, byte(r>>8), byte(g>>8), byte(bl>>8))
		}
	}
	return out
}

// choose opens the menu with a right click on the state's icon and picks
// an item from the keyboard as a user can: keys move to it (Down skips the
// disabled status lines), Return clicks it.
func (x *xdesktop) choose(state string, keys ...string) {
	x.t.Helper()
	_, icon := x.waitIconShown(state)
	c := icon.Min.Add(icon.Max).Div(2)
	x.xdotool("mousemove", fmt.Sprint(c.X), fmt.Sprint(c.Y), "click", "3")
	testenv.Eventually(x.t, 10*time.Second, "the menu open under the icon", func() bool {
		b := menuBox(x.screenshot())
		return b.Dx() > 100 && b.Dy() > 40
	})
	x.pointerAway()
	x.typeKeys(append(keys, "Return")...)
	x.waitMenuClosed("the menu closed after the choice")
}

// TestTrayOnXfcePanel runs the real postern-tray program on a virtual X
// display with a real StatusNotifier host (xfce4-panel), against the real
// posternd, controller, identity provider and connector. It checks that the
// panel draws the icon of each state and opens the menu on a right click,
// and with POSTERN_TRAY_SHOTS=docs/tray (make tray-screenshots) keeps the
// screenshots that docs/tray.md shows. Sign in…, Disconnect and Connect
// are chosen in the panel's menu (right click, arrow keys, Return); the
// menu's content is read over com.canonical.dbusmenu.
func TestTrayOnXfcePanel(t *testing.T) {
	x := startXDesktop(t)
	l := startRealLab(t)
	bin := buildProgram(t, t.TempDir(), "postern-tray")

	// xdg-open, as the tray calls it for Sign in…, is this test binary
	// signing alice in on the identity provider's page.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	shim := t.TempDir()
	if err := os.WriteFile(filepath.Join(shim, "xdg-open"), []byte("#!/bin/sh\nexec \"$POSTERN_TRAY_TEST_SELF\" \"$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	trayCmd := exec.Command(bin, "--socket", l.socket, "--controller", l.url)
	trayCmd.Env = append(os.Environ(), x.env...)
	trayCmd.Env = append(trayCmd.Env, "PATH="+shim+":"+os.Getenv("PATH"), "POSTERN_TRAY_TEST_SELF="+self,
		envBrowser+"=1", envBrowserLogin+"=alice", envBrowserPassword+"=alice-pw", "POSTERN_SOCKET=", "WAYLAND_DISPLAY=")
	startProc(t, trayCmd, "postern-tray")
	dk := x.item()

	// Signed out.
	dk.waitTooltip(t, "Postern: Signed out")
	x.shoot(tray.IconSignedOut, "signed-out")

	// Sign in…, clicked; the browser signs in; the daemon connects.
	dk.waitLayout(t, "Sign in…", func(items []menuItem) bool { return visible(items, "Sign in…") })
	x.choose(tray.IconSignedOut, "Down") // the first item that is not a status line
	dk.waitTooltip(t, "Postern: Connected")
	dk.waitLayout(t, "the resources with their access notes", func(items []menuItem) bool {
		n := 0
		for _, it := range items {
			if it.Visible && (strings.Contains(it.Label, "needs MFA (postern mfa)") || strings.Contains(it.Label, "needs approval (postern request prod-db)")) {
				n++
			}
		}
		return n == 2 && visible(items, "Signed in as alice@example.com") && visible(items, "Disconnect")
	})
	x.shoot(tray.IconConnected, "connected")
	// The Resources submenu: keyboard into it (Disconnect, Resources, open).
	x.shoot(tray.IconConnected, "connected-resources", "Down", "Down", "Right")
	// A refused resource, chosen in the submenu, puts the command that
	// fixes it on the desktop's clipboard (xclip).
	x.choose(tray.IconConnected, "Down", "Down", "Right")
	testenv.Eventually(t, 10*time.Second, "postern mfa on the clipboard", func() bool {
		cmd := exec.Command("xclip", "-o", "-selection", "clipboard")
		cmd.Env = append(os.Environ(), x.env...)
		out, err := cmd.Output()
		return err == nil && string(out) == "postern mfa"
	})

	// Disconnect.
	x.choose(tray.IconConnected, "Down")
	dk.waitTooltip(t, "Postern: Disconnected")
	x.shoot(tray.IconSignedOut, "disconnected")
	dk.waitLayout(t, "Connect", func(items []menuItem) bool { return visible(items, "Connect") && !visible(items, "Disconnect") })
	x.choose(tray.IconSignedOut, "Down")
	dk.waitTooltip(t, "Postern: Connected")
	x.waitIconShown(tray.IconConnected)

	// The connector goes away: the controller reports it offline and the
	// daemon is degraded.
	l.stopConnector()
	testenv.Eventually(t, 30*time.Second, "degraded", func() bool {
		tip, err := dk.tooltip()
		return err == nil && strings.HasPrefix(tip, "Postern: Degraded")
	})
	x.shoot(tray.IconDegraded, "degraded")

	// The daemon stops.
	l.stopDaemon()
	dk.waitTooltip(t, "Postern: daemon not running")
	x.shoot(tray.IconError, "daemon-stopped")
}
