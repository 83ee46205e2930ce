package platform

import (
	"fmt"
	"net/netip"
	"strings"
)

// netEntry is a route or address found on the machine.
type netEntry struct {
	Prefix netip.Prefix
	What   string // "route 100.64.0.0/10 dev tailscale0 table 52", "address 100.96.0.1/24 on eth1"
	IfName string
}

// CheckRangeConflicts refuses ranges that overlap a route or an address
// already on the machine (another VPN using CGNAT space, a LAN numbered in
// 100.64.0.0/10, ...), naming each conflict, so the daemon refuses to start
// instead of breaking the machine's network. Default routes (/0) do not
// count. Call it before creating the TUN device, or use
// CheckRangeConflictsExcept to ignore the device's own entries.
func CheckRangeConflicts(ranges []netip.Prefix) error {
	return CheckRangeConflictsExcept(ranges, "")
}

// CheckRangeConflictsExcept is CheckRangeConflicts ignoring the routes and
// addresses of interface ifName (the daemon's own TUN device).
func CheckRangeConflictsExcept(ranges []netip.Prefix, ifName string) error {
	entries, err := machineEntries()
	if err != nil {
		return fmt.Errorf("check range conflicts: %w", err)
	}
	return findConflicts(ranges, entries, ifName)
}

func findConflicts(ranges []netip.Prefix, entries []netEntry, ifName string) error {
	var msgs []string
	for _, r := range ranges {
		r = r.Masked()
		for _, e := range entries {
			if ifName != "" && e.IfName == ifName {
				continue
			}
			if e.Prefix.Bits() == 0 || e.Prefix.Addr().Is4() != r.Addr().Is4() {
				continue
			}
			if r.Overlaps(e.Prefix.Masked()) {
				msgs = append(msgs, fmt.Sprintf("%s overlaps %s", r, e.What))
			}
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s; choose another synthetic range or remove the conflicting route", ErrRangeConflict, strings.Join(msgs, "; "))
}
