package relay

import (
	"errors"
	"net"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
)

func TestQuotaFreesEndpointsThatWentSilent(t *testing.T) {
	a := newTURNAuth(2, func(string) {})
	a.setSecret("s")
	now := time.Now()
	a.now = func() time.Time { return now }
	user := controlapi.TURNUsername(now.Add(time.Hour), "alice")
	ep := func(port int) net.Addr { return &net.UDPAddr{IP: net.IPv4(192, 0, 2, 10), Port: port} }
	// pion accepting each request (a success response) commits it.
	accept := func(port int) error {
		_, err := a.check(user, ep(port))
		if err == nil {
			a.confirm(endpointKey(ep(port)))
		}
		return err
	}
	for _, p := range []int{1000, 1001} {
		if err := accept(p); err != nil {
			t.Fatalf("endpoint %d: %v", p, err)
		}
	}
	if _, err := a.check(user, ep(1002)); !errors.Is(err, ErrQuota) {
		t.Fatalf("third live endpoint: err %v, want quota", err)
	}
	// A live endpoint refreshes its permissions every 2 minutes; one that
	// roamed away stops. After the idle window the roaming user may allocate.
	now = now.Add(2 * time.Minute)
	if err := accept(1001); err != nil {
		t.Fatal(err)
	}
	now = now.Add(90 * time.Second)
	if err := accept(1002); err != nil {
		t.Fatalf("endpoint after the roamed one went silent: %v", err)
	}
	if got := a.endpointsOf("alice"); got != 2 {
		t.Fatalf("endpoints counted: %d, want 2", got)
	}
}

// Quota refusals are logged once per source (IPv4 address, IPv6 /64) and
// quotaLogEvery: a client retrying writes a line per interval, and one
// retrying client does not hide another.
func TestQuotaRefusalsLoggedPerSource(t *testing.T) {
	a := newTURNAuth(1, func(string) {})
	now := time.Unix(1000, 0)
	a.now = func() time.Time { return now }
	var lines []string
	a.warn = func(_ string, args ...any) { lines = append(lines, args[1].(string)) }
	err := errors.New("quota")
	one := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1}
	for port := 1; port <= 3; port++ {
		a.quotaLog(&net.UDPAddr{IP: one.IP, Port: port}, err)
	}
	a.quotaLog(&net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 1}, err)
	a.quotaLog(&net.UDPAddr{IP: net.ParseIP("2001:db8::2"), Port: 1}, err) // same /64
	if len(lines) != 2 {
		t.Fatalf("%d lines %v, want one per source", len(lines), lines)
	}
	now = now.Add(quotaLogEvery)
	a.quotaLog(one, err)
	if len(lines) != 3 {
		t.Fatalf("%d lines after the interval, want 3", len(lines))
	}
}
