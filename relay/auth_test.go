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
