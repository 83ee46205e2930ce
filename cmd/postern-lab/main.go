// Command postern-lab builds a whole Postern deployment on one Linux machine
// from network namespaces (see docs/lab.md) and runs the lab's own small
// servers (DNS, HTTP) inside it.
//
//	postern-lab demo [--non-interactive] [--reachable-connectors=BOOL] [--underlay6] [--ipv6-only-client]
//	postern-lab up   [--topology-only] [--reachable-connectors=BOOL] [--underlay6] [--ipv6-only-client]
//	postern-lab dns-server --listen ADDR --zone ZONE [--record NAME=IP]... [--forward IP:PORT]
//	postern-lab dns64 --listen ADDR --prefix PREFIX/96 --upstream IP:PORT
//	postern-lab http-server --listen ADDR [--name NAME]
//	postern-lab cleanup
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"postern.dev/postern/lab"
	"postern.dev/postern/version"
)

const usage = `usage: postern-lab COMMAND [flags]

commands:
  demo         build the lab, sign alice in, show ssh/psql/curl through Postern, open a shell, clean up
  up           build the lab and keep it running until Ctrl-C
  dns-server   run the lab's authoritative DNS server (used inside the lab)
  dns64        run the lab's DNS64 resolver (used inside the lab's IPv6-only network)
  http-server  run the lab's web server (used inside the lab)
  cleanup      remove the namespaces of labs whose process died without cleaning up
  version      print the version
`

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "demo", "up":
		fs := flag.NewFlagSet(cmd, flag.ExitOnError)
		var o lab.DemoOptions
		fs.BoolVar(&o.NonInteractive, "non-interactive", false, "demo: do not open a shell at the end")
		fs.BoolVar(&o.TopologyOnly, "topology-only", false, "up: only namespaces, NAT and private services, no Postern programs")
		fs.BoolVar(&o.ReachableConnectors, "reachable-connectors", lab.DefaultReachableConnectors, "let clients reach the connectors' QUIC port through the corporate NAT (for use before NAT traversal)")
		fs.BoolVar(&o.Underlay6, "underlay6", false, "dual-stack underlay: IPv6 on the internet, homes and office; controller by name, relay over IPv6 (docs/lab.md)")
		fs.BoolVar(&o.IPv6OnlyClient, "ipv6-only-client", false, "put alice's laptop on an IPv6-only network behind NAT64/DNS64 (needs tayga; docs/lab.md)")
		fs.StringVar(&o.BinDir, "bin", "", "directory with the Postern programs (default: this program's directory)")
		fs.StringVar(&o.Dir, "dir", "", "work directory for keys, data and logs (default: a new temp dir)")
		_ = fs.Parse(args)
		if cmd == "demo" {
			err = lab.Demo(ctx, o)
		} else {
			err = lab.Up(ctx, o)
		}
	case "dns-server":
		fs := flag.NewFlagSet(cmd, flag.ExitOnError)
		var zones, records stringList
		listen := fs.String("listen", "", "address to serve on, ip:port (UDP and TCP)")
		fs.Var(&zones, "zone", "zone the server is authoritative for (repeatable)")
		fs.Var(&records, "record", "NAME=IP[,IP], A and AAAA records; NAME may be *.zone (repeatable; a name given twice has the addresses of both)")
		forward := fs.String("forward", "", "ip:port of a resolver for names outside the zones (default: refuse them)")
		_ = fs.Parse(args)
		cfg := lab.DNSConfig{Listen: *listen, Zones: zones, Records: map[string]string{}, Forward: *forward, Logger: logger}
		for _, r := range records {
			n, a, ok := strings.Cut(r, "=")
			if !ok {
				err = fmt.Errorf("--record %q: want NAME=IP", r)
				break
			}
			if prev, ok := cfg.Records[n]; ok {
				a = prev + "," + a
			}
			cfg.Records[n] = a
		}
		if err == nil {
			err = lab.ServeDNS(ctx, cfg)
		}
	case "dns64":
		fs := flag.NewFlagSet(cmd, flag.ExitOnError)
		listen := fs.String("listen", "", "address to serve on, ip:port (UDP and TCP)")
		prefix := fs.String("prefix", "", "NAT64 prefix the AAAA answers are synthesized in, an IPv6 /96")
		upstream := fs.String("upstream", "", "ip:port of the resolver that is asked")
		_ = fs.Parse(args)
		var p netip.Prefix
		if p, err = netip.ParsePrefix(*prefix); err != nil {
			err = fmt.Errorf("--prefix %q: %w", *prefix, err)
			break
		}
		err = lab.ServeDNS64(ctx, lab.DNS64Config{Listen: *listen, Prefix: p, Upstream: *upstream, Logger: logger})
	case "http-server":
		fs := flag.NewFlagSet(cmd, flag.ExitOnError)
		listen := fs.String("listen", "", "address to serve on, ip:port")
		name := fs.String("name", "", "name shown on the page")
		_ = fs.Parse(args)
		err = lab.ServeHTTP(ctx, lab.HTTPConfig{Listen: *listen, Name: *name, Logger: logger})
	case "cleanup":
		var ids []string
		ids, err = lab.CleanupStale(ctx)
		if err == nil {
			fmt.Printf("removed %d stale lab(s) %v\n", len(ids), ids)
		}
	case "version", "--version":
		fmt.Println("postern-lab", version.Version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "postern-lab: unknown command %q\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "postern-lab:", err)
		if errors.Is(err, context.Canceled) {
			os.Exit(130)
		}
		os.Exit(1)
	}
}
