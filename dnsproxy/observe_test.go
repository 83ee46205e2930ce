package dnsproxy

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"postern.dev/postern/internal/testenv"
)

func TestOnQueryReportsRcodeAndTime(t *testing.T) {
	type obs struct {
		rcode int
		took  time.Duration
	}
	var mu sync.Mutex
	var got []obs
	p := newTestProxy(t, Config{Logger: quiet, OnQuery: func(rc int, took time.Duration) {
		mu.Lock()
		got = append(got, obs{rc, took})
		mu.Unlock()
	}}, res("r1", "db.corp.internal", "db.corp.internal", "corp"))
	addr := runProxy(t, p)
	if r := query(t, "udp", addr, "db.corp.internal", dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("resource name: %v", r)
	}
	// A name under no resource with no upstream configured: an error rcode.
	r := query(t, "tcp", addr, "nothing.example", dns.TypeA)
	// OnQuery runs once the answer is written, so it may trail the reply.
	testenv.Poll(t, 5*time.Second, "OnQuery for both queries", func() error {
		mu.Lock()
		defer mu.Unlock()
		if n := len(got); n < 2 {
			return fmt.Errorf("OnQuery called %d times, want 2", n)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("OnQuery called %d times, want 2", len(got))
	}
	// The two calls may arrive in either order (each trails its own reply).
	rcodes := map[int]int{got[0].rcode: 1}
	rcodes[got[1].rcode]++
	if rcodes[dns.RcodeSuccess] != 1 || rcodes[r.Rcode] != 1 {
		t.Errorf("rcodes %v, want one %d and one %d", got, dns.RcodeSuccess, r.Rcode)
	}
	for _, o := range got {
		if o.took <= 0 || o.took > 5*time.Second {
			t.Errorf("handling time %v", o.took)
		}
	}
}
