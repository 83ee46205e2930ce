package client

import (
	"net"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/localapi"
)

// TestLoginWithSeveralControllerURLs: `postern login --controller A,B`
// signs in through B when A gives no answer, and the session keeps both.
func TestLoginWithSeveralControllerURLs(t *testing.T) {
	l := newLab(t, renderYAML(1, 2))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "https://" + ln.Addr().String()
	ln.Close() // nothing listens there: connection refused
	d, _ := l.newDaemon()
	st, err := d.Login(l.ctx, localapi.LoginRequest{ControllerURL: dead + "," + l.url, CAPEM: l.ca, Email: "alice@example.com", Password: "alice-password-1"})
	if err != nil {
		t.Fatalf("login with a dead first replica: %v", err)
	}
	if st.Principal == nil || st.Principal.Name != "alice@example.com" {
		t.Fatalf("status: %+v", st)
	}
	testenv.Eventually(t, 10*time.Second, "the policy stream through the second URL", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.applied != nil && len(d.applied.Resources) > 0
	})
	urls, cur := d.sm.Controllers()
	if len(urls) != 2 || cur != l.url {
		t.Fatalf("controller client knows %v, talks to %s; want both, talking to %s", urls, cur, l.url)
	}
}
