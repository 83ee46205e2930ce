package client

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/netstack/netstacktest"
	"postern.dev/postern/platform"
)

var rangesYAML = testenv.CorpPolicy(testenv.AlicePassword, "corp-a") + `resources:
  - name: app
    address: app.corp.internal
    network: corp
    ports: [tcp/443]
    groups: [engineering]
`

// rangedTUN builds rootless TUN front-ends (each on a fresh in-memory host)
// for the ranges the daemon asks for; ranges in refuse conflict with "the
// machine", as a real route would.
type rangedTUN struct {
	t      *testing.T
	mu     sync.Mutex
	refuse []netip.Prefix
}

func (r *rangedTUN) build(v4, v6 netip.Prefix) (Frontend, error) {
	host, err := netstacktest.NewHost(netip.MustParseAddr("10.9.0.2"), 1280)
	if err != nil {
		return nil, err
	}
	r.t.Cleanup(host.Close)
	return NewTUNFrontend(TUNConfig{
		Name: "mem0", StateDir: r.t.TempDir(), Logger: testenv.Logger(r.t), V4Range: v4, V6Range: v6,
		CreateTUN:         func(string, int) (tun.Device, error) { return host.TUN, nil },
		NewRouter:         func(string) (platform.Router, error) { return noRoutes{}, nil },
		NewOSConfigurator: func(string, string) (platform.OSConfigurator, error) { return noDNS{}, nil },
		RestoreAfterCrash: func(string) error { return nil },
		CheckRangeConflicts: func(ranges []netip.Prefix, _ string) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			for _, p := range ranges {
				if slices.Contains(r.refuse, p) {
					return fmt.Errorf("%s overlaps 100.82.0.0/16 on eth0", p)
				}
			}
			return nil
		},
		ListenDNS: loopbackDNS,
	})
}

// waitRange waits until the daemon's TUN uses v4 and answers app's name
// with an address inside it.
func waitRange(t *testing.T, d *Daemon, v4 string) {
	t.Helper()
	want := netip.MustParsePrefix(v4)
	testenv.Poll(t, 15*time.Second, "synthetic range "+v4, func() error {
		st := d.Status()
		if !slices.Contains(st.Ranges, v4) {
			return fmt.Errorf("ranges %v", st.Ranges)
		}
		ex, err := d.ExplainDNS(context.Background(), "app.corp.internal")
		if err != nil {
			return err
		}
		for _, a := range ex.Synthetic {
			if ip, err := netip.ParseAddr(a); err == nil && want.Contains(ip) {
				return nil
			}
		}
		return fmt.Errorf("app.corp.internal is %v (%s)", ex.Synthetic, ex.Note)
	})
}

// TestControllerDefaultRanges: the applied file's client_ranges reach a
// TUN daemon that set no range of its own, a range the device set wins, a
// change while the tunnel is up rebuilds the front-end with the new range,
// and a pushed range that conflicts with the machine is refused: the
// tunnel keeps its range and the status warns why.
func TestControllerDefaultRanges(t *testing.T) {
	withRange := func(v4 string) string { return rangesYAML + "client_ranges:\n  ipv4: " + v4 + "\n" }
	l := newLab(t, withRange("100.80.0.0/16"))
	l.startConnector("corp-a", nil)
	apply := func(yaml string) {
		t.Helper()
		if _, err := l.ctl.ApplyYAML(l.ctx, []byte(yaml), false); err != nil {
			t.Fatal(err)
		}
	}
	tuns := &rangedTUN{t: t}
	newDaemon := func(own RangeSettings) *Daemon {
		d, err := New(Config{StateDir: t.TempDir(), Logger: testenv.Logger(t), NewTUNFrontend: tuns.build, Ranges: own})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		l.login(d, "alice@example.com", testenv.AlicePassword)
		return d
	}
	follower := newDaemon(RangeSettings{})
	waitRange(t, follower, "100.80.0.0/16")
	own := newDaemon(RangeSettings{V4: netip.MustParsePrefix("100.70.0.0/16")})
	waitRange(t, own, "100.70.0.0/16")

	// The admin changes the default: the follower moves, the other stays.
	apply(withRange("100.81.0.0/16"))
	waitRange(t, follower, "100.81.0.0/16")
	if st := own.Status(); !slices.Contains(st.Ranges, "100.70.0.0/16") {
		t.Fatalf("a range the device set moved with the controller's: %v", st.Ranges)
	}

	// A default this machine cannot use is refused, and the status says so.
	tuns.mu.Lock()
	tuns.refuse = []netip.Prefix{netip.MustParsePrefix("100.82.0.0/16")}
	tuns.mu.Unlock()
	apply(withRange("100.82.0.0/16"))
	testenv.Poll(t, 15*time.Second, "the refused range reported", func() error {
		if st := follower.Status(); st.State != "connected" || len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], "100.82.0.0/16") || !strings.Contains(st.Warnings[0], "overlaps") {
			return fmt.Errorf("%s %q, warnings %q", st.State, st.Message, st.Warnings)
		}
		return nil
	})
	waitRange(t, follower, "100.81.0.0/16")

	// Leaving client_ranges out brings back the built-in range, and the
	// warning goes.
	apply(rangesYAML)
	waitRange(t, follower, "100.96.0.0/12")
	if st := follower.Status(); len(st.Warnings) != 0 {
		t.Fatalf("warnings after the default was removed: %q", st.Warnings)
	}
}

// TestClientRangesValidated: client_ranges is checked like posternd's own
// flags; a bad file names the field and changes nothing.
func TestClientRangesValidated(t *testing.T) {
	l := newLab(t, rangesYAML)
	for _, c := range []struct{ ranges, want string }{
		{"  ipv4: 8.8.0.0/16\n", "not private address space"},
		{"  ipv4: 100.80.0.0/30\n", "/30"},
		{"  ipv6: 2600::/48\n", "not a unique local"},
		{"  ipv4: 100.80.0.0/16\n  ipv6: \"\"\n  extra: 1\n", "extra"},
	} {
		_, err := l.ctl.ApplyYAML(l.ctx, []byte(rangesYAML+"client_ranges:\n"+c.ranges), false)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "client_ranges") && c.want != "extra" {
			t.Errorf("client_ranges %q: %v, want an error naming client_ranges and %q", c.ranges, err, c.want)
		}
	}
	plan, err := l.ctl.ApplyYAML(l.ctx, []byte(rangesYAML), true)
	if err != nil || !plan.Empty() {
		t.Fatalf("refused files changed the store: %v\n%s", err, plan)
	}
}
