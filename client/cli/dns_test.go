package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"postern.dev/postern/connector"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/localapi"
)

var dnsYAML = testenv.CorpPolicy(testenv.AlicePassword, "corp-a") + `resources:
  - name: app
    address: app.corp.internal
    network: corp
    ports: [tcp/%[1]d]
    groups: [engineering]
  - name: services
    address: "*.svc.corp.internal"
    network: corp
    ports: [tcp/%[1]d]
    groups: [engineering]
`

// TestDNSInSOCKS5Mode runs postern dns against a daemon in SOCKS5 mode
// (its local API, a real controller and connector): a resource name, a
// wildcard, a name that is no resource, --json, and the tunnel down. The
// name it explains is then reached by name through the daemon's SOCKS5
// proxy, resolved at the connector as postern dns says.
func TestDNSInSOCKS5Mode(t *testing.T) {
	_, port := testenv.EchoTCP(t, "127.0.0.1:0")
	// The private network's names resolve to a documentation address the
	// connector "dials" by reaching the local echo server instead.
	const private = "198.51.100.10"
	url, caFile, _ := startLab(t, &testenv.Clock{}, "127.0.0.1", fmt.Sprintf(dnsYAML, port), func(c *connector.Config) {
		c.Resolver = resolver{"app.corp.internal": private, "api.svc.corp.internal": private}
		c.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if host, p, _ := net.SplitHostPort(addr); host != private || p != fmt.Sprint(port) {
				return nil, fmt.Errorf("test connector dials only %s:%d, not %s", private, port, addr)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", port))
		}
	})
	_, sock := startDaemon(t, url, caFile, "alice@example.com", "alice-password-1")
	as := func(args ...string) (int, string, string) {
		return runCLI(t, "", append([]string{"--socket", sock}, args...)...)
	}
	var st localapi.Status
	testenv.Eventually(t, 20*time.Second, "daemon connected", func() bool {
		_, out, _ := as("status", "--json")
		return json.Unmarshal([]byte(out), &st) == nil && st.State == localapi.StateConnected
	})
	if st.SOCKS5 == "" || st.TUN != "" {
		t.Fatalf("not a SOCKS5 daemon: %+v", st)
	}

	code, out, stderr := as("dns", "app.corp.internal")
	for _, want := range []string{"Name:        app.corp.internal\n", "Resource:    app (matches app.corp.internal)\n", "Connectors:  corp-a\n",
		"Mode:        SOCKS5 (names resolve at the connector; no synthetic ranges)\n", "Note:        SOCKS5 mode: the name goes to the connector"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("postern dns app.corp.internal lacks %q: exit %d\n%s%s", want, code, out, stderr)
		}
	}
	if strings.Contains(out, "synthetic)") || strings.Contains(out, "Answer:") {
		t.Errorf("a SOCKS5 daemon shows a synthetic answer:\n%s", out)
	}
	if code, out, _ = as("dns", "api.svc.corp.internal"); code != 0 || !strings.Contains(out, "Resource:    services (matches *.svc.corp.internal)") {
		t.Errorf("wildcard: exit %d\n%s", code, out)
	}
	code, out, _ = as("dns", "--json", "www.example.invalid")
	var ex localapi.DNSExplain
	if err := json.Unmarshal([]byte(out), &ex); code != 0 || err != nil || ex.Mode != "socks5" || ex.Resource != "" || len(ex.Connectors) != 0 ||
		len(ex.Ranges) != 0 || len(ex.Synthetic) != 0 || !strings.Contains(ex.Note, "not a resource") {
		t.Errorf("dns --json of a non-resource: exit %d %v %+v\n%s", code, err, ex, out)
	}

	// What postern dns says holds: the name goes through the proxy as it is
	// and reaches the echo server the connector resolved it to.
	secret, err := os.ReadFile(st.SOCKS5Secret)
	if err != nil {
		t.Fatalf("SOCKS5 secret: %v", err)
	}
	user, pass, _ := strings.Cut(strings.TrimSpace(string(secret)), ":")
	dialer, err := proxy.SOCKS5("tcp", st.SOCKS5, &proxy.Auth{User: user, Password: pass}, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dialer.(proxy.ContextDialer).DialContext(ctx, "tcp", fmt.Sprintf("app.corp.internal:%d", port))
	if err != nil {
		t.Fatalf("dial app.corp.internal through the SOCKS5 proxy: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo through the proxy: %q %v", buf, err)
	}

	// Tunnel down: postern dns says so.
	if code, _, stderr = as("down"); code != 0 {
		t.Fatalf("postern down: %s", stderr)
	}
	if code, out, _ = as("dns", "app.corp.internal"); code != 0 || !strings.Contains(out, "Mode:        tunnel down (postern up)") {
		t.Errorf("dns with the tunnel down: exit %d\n%s", code, out)
	}
}
