package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"time"

	"postern.dev/postern/installer/preset"
	"postern.dev/postern/localapi"
)

// RunOptions configures Run (the posternd program).
type RunOptions struct {
	StateDir string
	// Socket overrides StateDir/posternd.sock.
	Socket string
	// SocketGroup, when >= 0, is the group allowed to use the socket.
	SocketGroup int
	// SOCKS5 is the proxy's listen address; empty selects TUN mode.
	SOCKS5 string
	// TUN configures TUN mode (Name, MTU and the platform constructors).
	TUN    TUNConfig
	Dialer Dialer
	// DirectOnly dials connectors only at the addresses they report (no
	// relays, no NAT traversal).
	DirectOnly bool
	// ConnsPerConnector: see Config.ConnsPerConnector.
	ConnsPerConnector int
	// BulkQueueTarget: see Config.BulkQueueTarget.
	BulkQueueTarget time.Duration
	Logger          *slog.Logger
	// CAPEM is the deployment CA for signing in with the preset service
	// key (posternd --ca), when the controller is not in the system roots.
	CAPEM string
	// Preset overrides installer/preset.Load (tests).
	Preset func() (preset.Preset, error)
	// MetricsAddr, when set, serves Prometheus /metrics and /healthz on
	// this loopback address (posternd --metrics; client/metrics.go).
	MetricsAddr string
}

// Run starts the daemon and its local API and serves until ctx is done.
func Run(ctx context.Context, o RunOptions) error {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if o.StateDir == "" {
		o.StateDir = DefaultStateDir()
	}
	if o.Socket == "" {
		o.Socket = filepath.Join(o.StateDir, localapi.SocketName)
	}
	if o.MetricsAddr != "" {
		if err := checkMetricsAddr(o.MetricsAddr); err != nil {
			return err
		}
	}
	met := newDaemonMetrics()
	dcfg := Config{StateDir: o.StateDir, Dialer: o.Dialer, DirectOnly: o.DirectOnly, ConnsPerConnector: o.ConnsPerConnector, BulkQueueTarget: o.BulkQueueTarget, Logger: log, Preset: o.Preset}
	if o.SOCKS5 != "" {
		addr := o.SOCKS5
		dcfg.NewFrontend = func() (Frontend, error) { return NewSOCKS5Frontend(addr), nil }
	} else {
		tc := o.TUN
		tc.StateDir, tc.Logger = o.StateDir, log
		if tc.OnDNSQuery == nil {
			tc.OnDNSQuery = met.observeDNS
		}
		if _, err := NewTUNFrontend(tc); err != nil {
			return err
		}
		if err := checkRangesAtStart(tc); err != nil {
			return err
		}
		// Zero ranges in o.TUN (not set by the device) follow the
		// controller's default (ranges_policy.go).
		dcfg.Ranges = RangeSettings{V4: tc.V4Range, V6: tc.V6Range}
		dcfg.NewTUNFrontend = func(v4, v6 netip.Prefix) (Frontend, error) {
			c := tc
			c.V4Range, c.V6Range = v4, v6
			return NewTUNFrontend(c)
		}
	}
	d, err := New(dcfg)
	if err != nil {
		return err
	}
	defer d.Close()
	met.d = d
	if o.MetricsAddr != "" {
		mctx, mcancel := context.WithCancel(ctx)
		defer mcancel()
		a, err := serveMetrics(mctx, o.MetricsAddr, met, log)
		if err != nil {
			return err
		}
		log.Info("metrics", "listen", a.String())
	}
	srv, err := ListenLocalAPI(d, o.Socket, o.SocketGroup)
	if err != nil {
		return err
	}
	defer srv.Close()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	if err := d.Start(); err != nil {
		log.Error("resume session", "err", err)
	}
	log.Info("posternd ready", "socket", o.Socket, "state", o.StateDir)
	// Headless machines: sign in with the preset service key.
	pctx, pcancel := context.WithCancel(ctx)
	pdone := make(chan struct{})
	go func() { defer close(pdone); _ = d.presetSignIn(pctx, o.CAPEM) }()
	defer func() { pcancel(); <-pdone }()
	select {
	case <-ctx.Done():
		log.Info("posternd stopping")
		return nil
	case err := <-errc:
		if err != nil && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("local API: %w", err)
		}
		return nil
	}
}
