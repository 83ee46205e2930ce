// Command postern-relay runs a Postern relay: STUN and TURN on UDP, TURN over
// TLS and the signaling service on the TLS listener. See docs/relay.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"postern.dev/postern/internal/cmdlog"
	"postern.dev/postern/relay"
	"postern.dev/postern/version"
)

func main() {
	var (
		token     = flag.String("token", os.Getenv("POSTERN_RELAY_TOKEN"), "relay enrollment token (first start only)")
		listenUDP = flag.String("listen-udp", ":3478", "STUN/TURN UDP listen address")
		listenTLS = flag.String("listen-tls", ":443", "TURN-over-TLS and signaling listen address")
		publicIP  = flag.String("public-ip", "", "public IP address clients and connectors reach this relay at (required)")
		relayIP   = flag.String("relay-ip", "", "local IP relayed sockets bind to (default: the --listen-udp IP, or --public-ip when local)")
		stateDir  = flag.String("state", defaultStateDir(), "state directory (credential, TLS certificate)")
		metrics   = flag.String("metrics", "", "serve Prometheus /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:9464)")
		verbose   = flag.Bool("v", false, "debug logging")
		showVer   = flag.Bool("version", false, "print the version and exit")
	)
	flag.Parse()
	if *showVer {
		fmt.Println("postern-relay", version.Version)
		return
	}
	log := cmdlog.New(os.Stderr, *verbose)
	if *publicIP == "" {
		fmt.Fprintln(os.Stderr, "postern-relay: --public-ip is required (the address clients and connectors reach this relay at)")
		os.Exit(2)
	}
	ip := net.ParseIP(*publicIP)
	if ip == nil {
		fmt.Fprintf(os.Stderr, "postern-relay: --public-ip %q is not an IP address\n", *publicIP)
		os.Exit(2)
	}
	var rip net.IP
	if *relayIP != "" {
		if rip = net.ParseIP(*relayIP); rip == nil {
			fmt.Fprintf(os.Stderr, "postern-relay: --relay-ip %q is not an IP address\n", *relayIP)
			os.Exit(2)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := relay.Run(ctx, relay.Options{
		Token: *token, StateDir: *stateDir, ListenUDP: *listenUDP, ListenTLS: *listenTLS,
		PublicIP: ip, RelayIP: rip, MetricsAddr: *metrics, Logger: log,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "postern-relay:", err)
		os.Exit(1)
	}
}

func defaultStateDir() string {
	if d, err := os.UserConfigDir(); err == nil && os.Getuid() != 0 {
		return d + "/postern-relay"
	}
	return "/var/lib/postern-relay"
}
