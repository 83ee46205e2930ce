// Command postern-connector runs a Postern connector: it enrolls once with an
// enrollment token, then serves clients over QUIC and enforces the policy the
// controller pushes. See docs/connector.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"postern.dev/postern/connector"
	"postern.dev/postern/internal/bulkyield"
	"postern.dev/postern/internal/cmdlog"
	"postern.dev/postern/internal/procs"
	"postern.dev/postern/version"
)

func main() {
	var (
		token     = flag.String("token", os.Getenv("POSTERN_CONNECTOR_TOKEN"), "enrollment token (only needed the first time; env POSTERN_CONNECTOR_TOKEN)")
		stateDir  = flag.String("state", defaultStateDir(), "state directory (credential, last policy)")
		listenUDP = flag.String("listen-udp", "", "QUIC UDP listen address (default: any port on all addresses)")
		metrics   = flag.String("metrics", "", "serve Prometheus /metrics, /healthz and /readyz on this address")
		failMax   = flag.Duration("fail-static-max", connector.DefaultFailStaticMax, "while the controller is unreachable, keep serving devices whose connection token was valid when it went away, for at most this long (0: never; tokens end at their expiry)")
		maxFlows  = flag.Int("max-flows-per-device", connector.DefaultMaxFlowsPerDevice, "flows one device may have open at this connector at once, over all its connections; more are refused with 'too many flows' until some close")
		maxPend   = flag.Int("max-pending-conns", connector.DefaultMaxPendingConns, "client connections that may be awaiting a token at once (QUIC handshake, then the token); more are refused until some finish")
		maxPendIP = flag.Int("max-pending-per-address", connector.DefaultMaxPendingPerAddr, "the same bound for one source IP address")
		yieldTo   = flag.Duration("bulk-yield-target", bulkyield.DefaultTarget, "while interactive flows are active, bulk downloads wait until their connection's queueing delay is down to this; lower favours interactive flows, higher bulk ones (0: bulk downloads never wait)")
		procsN    = flag.Int("procs", 0, "threads running Go code at once (GOMAXPROCS; 0: half the CPUs, at least 1, unless $GOMAXPROCS is set)")
		verbose   = flag.Bool("v", false, "debug logging")
		showVer   = flag.Bool("version", false, "print the version and exit")
	)
	flag.Parse()
	if *showVer {
		fmt.Println("postern-connector", version.Version)
		return
	}
	if flag.NArg() > 0 {
		fail(fmt.Errorf("unexpected argument %q", flag.Arg(0)))
	}
	if *maxFlows < 1 {
		fail(fmt.Errorf("--max-flows-per-device %d: must be at least 1", *maxFlows))
	}
	if *maxPend < 1 || *maxPendIP < 1 {
		fail(fmt.Errorf("--max-pending-conns %d, --max-pending-per-address %d: must be at least 1", *maxPend, *maxPendIP))
	}
	if *failMax < 0 {
		fail(fmt.Errorf("--fail-static-max %v: must not be negative", *failMax))
	}
	fsm := *failMax
	if fsm == 0 {
		fsm = -1 // off
	}
	pc, err := procs.Apply(*procsN, os.Getenv("GOMAXPROCS"))
	if err != nil {
		fail(err)
	}
	log := cmdlog.New(os.Stderr, *verbose)
	slog.SetDefault(log)
	log.Debug("GOMAXPROCS", "procs", pc.Procs, "of", pc.Of, "from", pc.Source)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *token != "" {
		already := connector.Enrolled(*stateDir)
		st, err := connector.Enroll(ctx, *stateDir, *token, connector.EnrollOptions{})
		if err != nil {
			fail(fmt.Errorf("enroll: %w", err))
		}
		if already {
			log.Info("already enrolled; ignoring --token", "id", st.ID, "name", st.Name)
		} else {
			log.Info("enrolled", "id", st.ID, "name", st.Name, "network", st.Network, "state", *stateDir)
		}
	}
	c, err := connector.Open(connector.Config{StateDir: *stateDir, ListenUDP: *listenUDP, MetricsAddr: *metrics, FailStaticMax: fsm, MaxFlowsPerDevice: *maxFlows,
		MaxPendingConns: *maxPend, MaxPendingPerAddr: *maxPendIP, BulkQueueTarget: bulkyield.FlagTarget(*yieldTo), Logger: log})
	if err != nil {
		fail(err)
	}
	go rotateOnHUP(ctx, c.Rotate, log)
	if err := c.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		fail(err)
	}
}

// rotateOnHUP rotates the QUIC certificate now on every SIGHUP (as the
// 12-hourly rotation does): how operators and tests trigger a rotation.
func rotateOnHUP(ctx context.Context, rotate func(context.Context) error, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			log.Info("SIGHUP: rotating the QUIC certificate")
			if err := rotate(ctx); err != nil {
				log.Warn("certificate rotation on SIGHUP", "err", err)
			}
		}
	}
}

func defaultStateDir() string {
	if d := os.Getenv("POSTERN_CONNECTOR_STATE"); d != "" {
		return d
	}
	return connector.DefaultStateDir()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "postern-connector:", err)
	os.Exit(1)
}
