// Command posternd is the Postern client daemon: it captures resource
// traffic (TUN device, or a SOCKS5 proxy with --socks5) and carries each flow
// on its own QUIC stream to the connector that serves it. On Windows it runs
// as the service "posternd" when the service control manager starts it.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"os/user"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"postern.dev/postern/client"
	"postern.dev/postern/installer/preset"
	"postern.dev/postern/internal/bulkyield"
	"postern.dev/postern/internal/cmdlog"
	"postern.dev/postern/internal/procs"
	"postern.dev/postern/version"
)

// serviceName is the Windows service the MSI installs.
const serviceName = "posternd"

func main() {
	fs := flag.NewFlagSet("posternd", flag.ExitOnError)
	state := fs.String("state", client.DefaultStateDir(), "state directory (device key, session, socket)")
	tunName := fs.String("tun", defaultTUNName, "TUN device name (macOS: utun or utunN; \"utun\" takes the next free one)")
	socks := fs.String("socks5", "", "serve a SOCKS5 proxy on ADDR instead of a TUN device (no root needed); clients sign in with the user:password in STATE/socks5.secret")
	mtu := fs.Int("mtu", 0, "TUN MTU (default 65520: flows end locally, so large segments are safe)")
	ipv6 := fs.Bool("ipv6", true, "IPv6 resources: answer AAAA for resource names, route the IPv6 synthetic range and IPv6 address/CIDR resources (--ipv6=false: IPv4 only)")
	range4 := fs.String("range4", "", "synthetic IPv4 range for resource names, a private /8../22 (default $POSTERN_RANGE4 preset, else 100.96.0.0/12)")
	range6 := fs.String("range6", "", "synthetic IPv6 range, a ULA or 2001:db8::/32 /32../112 (default $POSTERN_RANGE6 preset, else fd7a:7073:746e::/48)")
	socket := fs.String("socket", "", "local API socket (default STATE/posternd.sock)")
	group := fs.String("socket-group", "", "group (name or gid) allowed to use the local API socket")
	directOnly := fs.Bool("direct-only", false, "dial connectors only at the addresses they report (no relays or NAT traversal)")
	connsPer := fs.Int("conns-per-connector", 0, "most QUIC connections kept to one connector (0: min(GOMAXPROCS, 4), at least 2; 1: a single connection)")
	yieldTo := fs.Duration("bulk-yield-target", bulkyield.DefaultTarget, "while interactive flows are active, bulk uploads wait until their connection's queueing delay is down to this; lower favours interactive flows, higher bulk ones (0: bulk uploads never wait)")
	caFile := fs.String("ca", "", "PEM file of the deployment CA, for signing in with the preset service key when the controller is not in the system roots")
	restore := fs.Bool("restore", false, "undo the DNS configuration and routes a crashed daemon left behind (for --state and --tun), then exit; exit 0 when there is nothing to do")
	procsN := fs.Int("procs", 0, "threads running Go code at once (GOMAXPROCS; 0: half the CPUs, at least 1, unless $GOMAXPROCS is set)")
	metrics := fs.String("metrics", "", "serve Prometheus /metrics and /healthz on this loopback address (e.g. 127.0.0.1:9465): flows, bytes, path per connector, DNS queries and latency")
	verbose := fs.Bool("v", false, "debug logging")
	showVersion := fs.Bool("version", false, "print the version and exit")
	_ = fs.Parse(os.Args[1:])
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "posternd: unexpected argument %q (see posternd --help)\n", fs.Arg(0))
		os.Exit(2)
	}
	if *showVersion {
		fmt.Println("posternd", version.Version)
		return
	}
	if *restore {
		os.Exit(runRestore(*state, *socket, *tunName, *socks))
	}
	var logw io.Writer = os.Stderr
	if client.IsService() {
		// Nothing reads a service's standard error.
		f, err := client.OpenLogFile(*state)
		if err == nil {
			defer f.Close()
			logw = f
		}
	}
	log := cmdlog.New(logw, *verbose)
	pc, err := procs.Apply(*procsN, os.Getenv("GOMAXPROCS"))
	if err != nil {
		fail(log, err, 2)
	}
	log.Debug("GOMAXPROCS", "procs", pc.Procs, "of", pc.Of, "from", pc.Source)
	// Checked after --restore (a bad setting must not block the crash
	// cleanup) and reported through fail, which also reaches a service's log.
	if *socks == "" {
		if err := checkTUNName(runtime.GOOS, *tunName); err != nil {
			fail(log, err, 2)
		}
	}
	ranges, err := resolveRanges(*range4, *range6, *socks != "")
	if err != nil {
		fail(log, err, 2)
	}
	if *socks == "" {
		from := func(src string) string {
			if src == client.RangeDefault {
				return "the controller's client_ranges, else built in"
			}
			return src
		}
		log.Info("synthetic ranges", "v4", ranges.V4, "v4_from", from(ranges.V4Source), "v6", ranges.V6, "v6_from", from(ranges.V6Source), "ipv6", *ipv6)
	}
	gid := -1
	if *group != "" {
		g, err := lookupGroup(*group)
		if err != nil {
			fail(log, err, 2)
		}
		gid = g
	}
	var caPEM string
	if *caFile != "" {
		b, err := os.ReadFile(*caFile)
		if err != nil || !strings.Contains(string(b), "BEGIN CERTIFICATE") {
			fail(log, fmt.Errorf("--ca %s: not a readable PEM certificate file (%v)", *caFile, err), 2)
		}
		caPEM = string(b)
	}
	opts := client.RunOptions{
		StateDir: *state, Socket: *socket, SocketGroup: gid, SOCKS5: *socks, DirectOnly: *directOnly, ConnsPerConnector: *connsPer, BulkQueueTarget: bulkyield.FlagTarget(*yieldTo),
		TUN:    client.TUNConfig{Name: *tunName, MTU: *mtu, IPv4Only: !*ipv6, V4Range: ranges.DeviceV4(), V6Range: ranges.DeviceV6()},
		Logger: log, CAPEM: caPEM, MetricsAddr: *metrics,
	}
	run := func(ctx context.Context) error { return client.Run(ctx, opts) }
	if ok, err := client.RunService(serviceName, run); ok {
		if err != nil {
			fail(log, err, 1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fail(log, err, 1)
	}
}

func fail(log *slog.Logger, err error, code int) {
	fmt.Fprintln(os.Stderr, "posternd:", err)
	if client.IsService() {
		log.Error("posternd failed", "err", err)
	}
	os.Exit(code)
}

// runRestore is posternd --restore.
func runRestore(state, socket, tunName, socks string) int {
	if socks != "" {
		tunName = "" // a SOCKS5 daemon has no TUN device
	}
	res, err := client.Restore(state, socket, tunName)
	switch {
	case err != nil:
		fmt.Fprintln(os.Stderr, "posternd --restore:", err)
		return 1
	case res.Nothing():
		fmt.Println("posternd --restore: nothing to restore")
	default:
		if res.DNS {
			fmt.Println("posternd --restore: restored the DNS configuration left by a stopped daemon")
		}
		if res.Routes > 0 {
			fmt.Printf("posternd --restore: removed %d stale route(s) from %s\n", res.Routes, tunName)
		}
	}
	return 0
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

// resolveRanges reads --range4/--range6 and the preset. The ranges belong to
// TUN mode: given as flags with --socks5 they are refused, not ignored.
func resolveRanges(flag4, flag6 string, socks bool) (client.SyntheticRanges, error) {
	if socks && (flag4 != "" || flag6 != "") {
		return client.SyntheticRanges{}, fmt.Errorf("--range4/--range6 apply to TUN mode; --socks5 has no synthetic addresses")
	}
	p, err := preset.Load()
	if err != nil {
		return client.SyntheticRanges{}, err
	}
	if socks {
		p.Range4, p.Range6 = "", ""
	}
	return client.ResolveRanges(flag4, flag6, p)
}
