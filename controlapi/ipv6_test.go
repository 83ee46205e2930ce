package controlapi_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"postern.dev/postern/controlapi"
)

// A controller URL with a bracketed IPv6 literal works end to end (TLS
// verification against the certificate's IPv6 SAN included).
func TestControllerAtIPv6Literal(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	var remote string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		remote = r.RemoteAddr
		_ = json.NewEncoder(w).Encode(controlapi.TokenResponse{Token: "six"})
	}))
	srv.Listener = ln
	srv.StartTLS()
	defer srv.Close()
	if !strings.HasPrefix(srv.URL, "https://[::1]:") {
		t.Fatalf("server URL %s is not a bracketed IPv6 literal", srv.URL)
	}
	var out controlapi.TokenResponse
	c := newClient(t, srv, nil)
	if err := c.Call(context.Background(), http.MethodPost, controlapi.PathConnectionToken, controlapi.TokenRequest{ConnectorID: "c1"}, &out); err != nil {
		t.Fatalf("call to %s: %v", srv.URL, err)
	}
	if out.Token != "six" || !strings.HasPrefix(remote, "[::1]:") {
		t.Fatalf("token %q from remote %q, want %q over IPv6", out.Token, remote, "six")
	}
}

// The dialer of controller and relay connections races address families
// after RFC 8305's 250 ms, not Go's default 300 ms.
func TestNetDialerHappyEyeballs(t *testing.T) {
	d := controlapi.NewNetDialer(controlapi.HappyEyeballsDelay*20, 0)
	if d.FallbackDelay != controlapi.HappyEyeballsDelay || controlapi.HappyEyeballsDelay.Milliseconds() != 250 {
		t.Fatalf("fallback delay %v, want 250ms", d.FallbackDelay)
	}
}
