// Command posternd is the Postern client daemon: it captures resource
// traffic (TUN device, or a SOCKS5 proxy with --socks5) and carries each flow
// on its own QUIC stream to the connector that serves it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"syscall"

	"postern.dev/postern/client"
	"postern.dev/postern/version"
)

func main() {
	fs := flag.NewFlagSet("posternd", flag.ExitOnError)
	state := fs.String("state", client.DefaultStateDir(), "state directory (device key, session, socket)")
	tunName := fs.String("tun", "postern0", "TUN device name")
	socks := fs.String("socks5", "", "serve a SOCKS5 proxy on ADDR instead of a TUN device (no root needed)")
	mtu := fs.Int("mtu", 0, "TUN MTU (default 65520: flows end locally, so large segments are safe)")
	ipv6 := fs.Bool("ipv6", false, "answer AAAA for resource names and route the IPv6 synthetic range")
	socket := fs.String("socket", "", "local API socket (default STATE/posternd.sock)")
	group := fs.String("socket-group", "", "group (name or gid) allowed to use the local API socket")
	directOnly := fs.Bool("direct-only", false, "dial connectors only at the addresses they report (no relays or NAT traversal)")
	verbose := fs.Bool("v", false, "debug logging")
	showVersion := fs.Bool("version", false, "print the version and exit")
	_ = fs.Parse(os.Args[1:])
	if *showVersion {
		fmt.Println("posternd", version.Version)
		return
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	gid := -1
	if *group != "" {
		g, err := lookupGroup(*group)
		if err != nil {
			fmt.Fprintln(os.Stderr, "posternd:", err)
			os.Exit(2)
		}
		gid = g
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := client.Run(ctx, client.RunOptions{
		StateDir: *state, Socket: *socket, SocketGroup: gid, SOCKS5: *socks, DirectOnly: *directOnly,
		TUN:    client.TUNConfig{Name: *tunName, MTU: *mtu, IPv6: *ipv6},
		Logger: log,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "posternd:", err)
		os.Exit(1)
	}
}

func lookupGroup(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil {
		return n, nil
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return 0, fmt.Errorf("--socket-group %q: %w", s, err)
	}
	return strconv.Atoi(g.Gid)
}
