package client

import (
	"fmt"
	"net/netip"

	"postern.dev/postern/dnsproxy"
	"postern.dev/postern/installer/preset"
	"postern.dev/postern/localapi"
	"postern.dev/postern/platform"
)

// Synthetic address ranges: the DNS proxy answers resource names with
// addresses from these prefixes, routed to the TUN device. The admin picks
// them with posternd --range4/--range6 or the IT preset (POSTERN_RANGE4 and
// POSTERN_RANGE6); the defaults are dnsproxy's.

// SyntheticRanges are the synthetic ranges posternd uses and where each was
// set ("--range4", "POSTERN_RANGE4 (preset)", "default").
type SyntheticRanges struct {
	V4, V6             netip.Prefix
	V4Source, V6Source string
}

// RangeDefault is the source of a range nobody set: the controller's
// default, else the built-in one.
const RangeDefault = "default"

// DeviceV4 is the IPv4 range the device set (flag or preset), zero when it
// set none: the range then follows the controller's default.
func (r SyntheticRanges) DeviceV4() netip.Prefix {
	if r.V4Source == RangeDefault {
		return netip.Prefix{}
	}
	return r.V4
}

// DeviceV6 is DeviceV4 for IPv6.
func (r SyntheticRanges) DeviceV6() netip.Prefix {
	if r.V6Source == RangeDefault {
		return netip.Prefix{}
	}
	return r.V6
}

// ResolveRanges picks each range from its flag, else the preset, else the
// default, and validates it; an error names the flag or preset variable.
func ResolveRanges(flag4, flag6 string, p preset.Preset) (SyntheticRanges, error) {
	var r SyntheticRanges
	var err error
	r.V4Source, r.V4, err = pickRange("--range4", flag4, preset.EnvRange4+" (preset)", p.Range4, dnsproxy.DefaultV4Range, dnsproxy.ParseRange4)
	if err != nil {
		return r, err
	}
	r.V6Source, r.V6, err = pickRange("--range6", flag6, preset.EnvRange6+" (preset)", p.Range6, dnsproxy.DefaultV6Range, dnsproxy.ParseRange6)
	return r, err
}

func pickRange(flagName, flagVal, presetName, presetVal string, def netip.Prefix, parse func(string, string) (netip.Prefix, error)) (string, netip.Prefix, error) {
	switch {
	case flagVal != "":
		p, err := parse(flagName, flagVal)
		return flagName, p, err
	case presetVal != "":
		p, err := parse(presetName, presetVal)
		return presetName, p, err
	}
	return RangeDefault, def, nil
}

// checkRangesAtStart refuses, when posternd starts in TUN mode, synthetic
// ranges that overlap a route or address already on the machine (naming
// both), instead of failing later at `postern up`. Entries on the daemon's
// own device (left by a crashed run) do not count.
func checkRangesAtStart(tc TUNConfig) error {
	v4, v6 := tc.V4Range, tc.V6Range
	if !v4.IsValid() {
		v4 = dnsproxy.DefaultV4Range
	}
	if !v6.IsValid() {
		v6 = dnsproxy.DefaultV6Range
	}
	ranges := []netip.Prefix{v4}
	if !tc.IPv4Only {
		ranges = append(ranges, v6)
	}
	check := tc.CheckRangeConflicts
	if check == nil {
		check = platform.CheckRangeConflictsExcept
	}
	if err := check(ranges, tc.Name); err != nil {
		return fmt.Errorf("synthetic address range (--range4/--range6): %w", err)
	}
	return nil
}

// describeAddressing adds the traffic mode and the synthetic ranges in use
// to a DNS explanation (postern dns).
func (d *Daemon) describeAddressing(ex *localapi.DNSExplain) {
	d.mu.Lock()
	fe := d.front
	d.mu.Unlock()
	if fe == nil {
		ex.Mode = "down"
		return
	}
	var st localapi.Status
	fe.Describe(&st)
	switch {
	case st.TUN != "":
		ex.Mode = "tun"
		ex.Ranges = st.Ranges
	case st.SOCKS5 != "":
		ex.Mode = "socks5"
		if ex.Resource != "" {
			ex.Note = "SOCKS5 mode: the name goes to the connector as is (use socks5h:// or --socks5-hostname) and is resolved inside the private network; no synthetic address"
		}
	}
}
