// Command postern-tray is Postern's tray icon and menu: it shows whether the
// device is connected, who is signed in and which resources are reachable,
// and offers Connect/Disconnect, Sign in…/Sign out over the daemon's local
// API. See the tray package.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"postern.dev/postern/localapi"
	"postern.dev/postern/tray"
	"postern.dev/postern/version"
)

func main() {
	socket := flag.String("socket", tray.DefaultSocket(), "the daemon's local API socket (or $"+localapi.EnvSocket+")")
	controller := flag.String("controller", "", "controller URL for Sign in… when the daemon has none yet")
	showVersion := flag.Bool("version", false, "print the version and exit")
	printDesktop := flag.Bool("print-desktop-entry", false, "print the XDG autostart entry (postern-tray.desktop) and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("postern-tray", version.Version)
		return
	}
	if *printDesktop {
		fmt.Print(tray.DesktopEntry)
		return
	}
	if err := tray.CheckDesktop(); err != nil {
		fmt.Fprintln(os.Stderr, "postern-tray:", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	tray.Run(ctx, tray.NewApp(tray.Options{Socket: *socket, ControllerURL: *controller, Log: log}))
}
