package client

import (
	"errors"
	"fmt"
	"net/netip"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/dnsproxy"
)

// The controller's default synthetic ranges (client_ranges in the applied
// policy file) reach the daemon in its policy. In TUN mode a range the
// device did not set itself (flag or IT preset) follows them: the first
// front-end is built with them (the saved policy is read at start), and a
// change while the tunnel is up rebuilds the front-end. A default this
// machine cannot use (it overlaps one of its networks) is refused: the
// tunnel comes up with the ranges it last worked with, and the status
// carries a warning until the controller's default changes.

// RangeSettings are synthetic ranges as the device set them; a zero prefix
// follows the controller's default, else the built-in one.
type RangeSettings struct {
	V4, V6 netip.Prefix
}

// pushedRanges is what the daemon knows of the controller's default.
type pushedRanges struct {
	want     [2]netip.Prefix // the policy's Range4, Range6 (zero: none)
	rejected [2]netip.Prefix // a default this machine could not use
	refused  bool            // rejected is set
	good     [2]netip.Prefix // the default the tunnel last came up with
	front    [2]netip.Prefix // the ranges the running front-end has
	warning  string
}

// usable is the controller's default the next front-end follows: the
// wanted one, unless it was refused here.
func (p *pushedRanges) usable() [2]netip.Prefix {
	if p.refused && p.want == p.rejected {
		return p.good
	}
	return p.want
}

// newFrontendLocked builds the traffic front-end: a TUN front-end for the
// current ranges when the daemon has that constructor, else NewFrontend.
func (d *Daemon) newFrontendLocked() (Frontend, error) {
	if d.cfg.NewTUNFrontend != nil {
		v4, v6 := d.rangesLocked()
		fe, err := d.cfg.NewTUNFrontend(v4, v6)
		if err == nil {
			d.pushed.front = [2]netip.Prefix{v4, v6}
		}
		return fe, err
	}
	if d.cfg.NewFrontend == nil {
		return nil, errors.New("no traffic front-end configured")
	}
	return d.cfg.NewFrontend()
}

// rangesLocked returns the synthetic ranges a TUN front-end starts with now:
// the device's own, else the controller's (zero: the built-in default).
func (d *Daemon) rangesLocked() (v4, v6 netip.Prefix) {
	p := d.pushed.usable()
	v4, v6 = d.cfg.Ranges.V4, d.cfg.Ranges.V6
	if !v4.IsValid() {
		v4 = p[0]
	}
	if !v6.IsValid() {
		v6 = p[1]
	}
	return v4, v6
}

// upLocked brings the tunnel up. When it fails with the controller's default
// ranges (most likely they overlap a network of this machine), the default
// is refused, with a warning, and the tunnel comes up with the ranges it
// last worked with.
func (d *Daemon) upLocked() error {
	use := d.pushed.usable()
	err := d.startTunnelLocked()
	if err == nil {
		d.pushed.good = use
		return nil
	}
	if d.cfg.NewTUNFrontend == nil || use == d.pushed.good {
		return err
	}
	d.pushed.rejected, d.pushed.refused = use, true
	if err2 := d.startTunnelLocked(); err2 != nil {
		// Not the ranges' fault: the tunnel fails either way.
		d.pushed.refused = false
		return err
	}
	d.pushed.warning = fmt.Sprintf("the controller's default synthetic ranges (%s) cannot be used here, keeping %s: %v", showPair(use), showPair(d.pushed.good), err)
	d.log.Error(d.pushed.warning)
	d.changed()
	return nil
}

// learnRangesLocked takes the controller's default ranges from policy p and,
// when they change the ranges of the running TUN front-end, rebuilds it.
// A malformed pushed range is ignored (and logged): the controller
// validates them, so it can only come from a newer or broken controller.
func (d *Daemon) learnRangesLocked(p *controlapi.ClientPolicy) {
	parse := func(what, s string, f func(string, string) (netip.Prefix, error)) netip.Prefix {
		if s == "" {
			return netip.Prefix{}
		}
		r, err := f(what, s)
		if err != nil {
			d.log.Warn("ignoring the controller's default synthetic range", "err", err)
			return netip.Prefix{}
		}
		return r
	}
	want := [2]netip.Prefix{parse("range4", p.Range4, dnsproxy.ParseRange4), parse("range6", p.Range6, dnsproxy.ParseRange6)}
	if want == d.pushed.want {
		return
	}
	d.pushed.want = want
	if d.pushed.refused && want != d.pushed.rejected {
		d.pushed.refused, d.pushed.warning = false, ""
		d.changed()
	}
	if d.cfg.NewTUNFrontend == nil || !d.up {
		return
	}
	v4, v6 := d.rangesLocked()
	if [2]netip.Prefix{v4, v6} == d.pushed.front {
		return // the device set its ranges itself, or nothing changes
	}
	d.log.Info("the controller changed the default synthetic ranges; restarting the tunnel", "ranges", showPair([2]netip.Prefix{v4, v6}))
	d.downLocked()
	if err := d.upLocked(); err != nil {
		d.log.Error("restart the tunnel", "err", err)
	}
	d.changed()
}

// showPair names a pair of ranges, a zero one as the built-in default.
func showPair(p [2]netip.Prefix) string {
	s := [2]string{dnsproxy.DefaultV4Range.String() + " (built in)", dnsproxy.DefaultV6Range.String() + " (built in)"}
	for i, r := range p {
		if r.IsValid() {
			s[i] = r.String()
		}
	}
	return s[0] + ", " + s[1]
}
