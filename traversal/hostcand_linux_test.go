package traversal

import (
	"context"
	"net/netip"
	"testing"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/internal/testenv/netnstest"
	"postern.dev/postern/traversal/sigwire"
)

// On a dual-stack host, a socket bound to [::] (what the client and the
// connector open) offers its global IPv6 addresses as host candidates next
// to the IPv4 ones, without link-local addresses; one bound to 0.0.0.0
// offers IPv4 only.
func TestHostCandidatesDualStack(t *testing.T) {
	testenv.RequireNetns(t)
	a := netnstest.New(t, "pstHC", "# no resolver\n")
	b := netnstest.New(t, "pstHC", "# no resolver\n")
	netnstest.Link(t, a, "eth0", "198.18.99.1/24", b, "eth0", "198.18.99.2/24")
	if _, err := netnstest.IP(context.Background(), "-n", a, "addr", "add", "2001:db8:99::1/64", "dev", "eth0", "nodad"); err != nil {
		t.Fatal(err)
	}
	var dual, v4 []sigwire.Candidate
	if err := netnstest.Do(a, func() error {
		dual = hostCandidates(udp("[::]:5000"), DefaultExcludedPrefixes)
		v4 = hostCandidates(udp("0.0.0.0:5000"), DefaultExcludedPrefixes)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	has := func(cs []sigwire.Candidate, want string) bool {
		for _, c := range cs {
			if c.Addr == want {
				return true
			}
		}
		return false
	}
	if !has(dual, "198.18.99.1:5000") || !has(dual, "[2001:db8:99::1]:5000") {
		t.Fatalf("[::] socket offers %v, want 198.18.99.1:5000 and [2001:db8:99::1]:5000", dual)
	}
	for _, c := range dual {
		if ap, err := netip.ParseAddrPort(c.Addr); err != nil || ap.Addr().IsLinkLocalUnicast() {
			t.Errorf("offered %s", c.Addr)
		}
	}
	if !has(v4, "198.18.99.1:5000") || has(v4, "[2001:db8:99::1]:5000") {
		t.Fatalf("0.0.0.0 socket offers %v, want IPv4 only", v4)
	}
}
