package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
)

func TestCheckMetricsAddr(t *testing.T) {
	for _, a := range []string{"127.0.0.1:9465", "[::1]:0", "localhost:9465", "127.0.0.2:1"} {
		if err := checkMetricsAddr(a); err != nil {
			t.Errorf("%s: %v", a, err)
		}
	}
	for _, a := range []string{"0.0.0.0:9465", ":9465", "192.0.2.1:9465", "[::]:1", "9465", "example.com:1"} {
		if err := checkMetricsAddr(a); !errors.Is(err, ErrMetricsAddr) || !strings.Contains(err.Error(), a) {
			t.Errorf("%s: %v, want ErrMetricsAddr naming it", a, err)
		}
	}
	// Run refuses before touching anything.
	err := Run(context.Background(), RunOptions{StateDir: t.TempDir(), SOCKS5: "127.0.0.1:0", MetricsAddr: "0.0.0.0:9465"})
	if !errors.Is(err, ErrMetricsAddr) {
		t.Fatalf("Run with a public --metrics: %v", err)
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

func TestDaemonMetrics(t *testing.T) {
	_, echoPort := testenv.EchoTCP(t, "127.0.0.1:0")
	l := newLab(t, renderYAML(echoPort, echoPort))
	l.startConnector("corp-a", staticResolver{})
	d, proxy := l.newDaemon()
	l.login(d, "alice@example.com", "alice-password-1")
	waitConnectors(t, d, 1)
	c, code, err := socksConnect(proxy, "127.0.0.1", echoPort)
	if err != nil || code != 0 {
		t.Fatalf("socks connect: %d %v", code, err)
	}
	c.Write([]byte("metrics"))
	buf := make([]byte, 7)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	c.Close()

	m := newDaemonMetrics()
	m.d = d
	m.observeDNS(0, 2*time.Millisecond)
	m.observeDNS(3, time.Millisecond)
	m.observeDNS(-1, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := serveMetrics(ctx, "127.0.0.1:0", m, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr.String()
	var body string
	// Counters settle when the flow's end reaches the daemon.
	testenv.Poll(t, 10*time.Second, "the flow in the metrics", func() error {
		body = scrape(t, base+"/metrics")
		if strings.Contains(body, "postern_client_active_flows 0") && strings.Contains(body, `postern_client_bytes_total{direction="down"} 7`) {
			return nil
		}
		return fmt.Errorf("flow not reflected in metrics:\n%s", body)
	})
	for _, want := range []string{
		"postern_client_flows_total 1",
		`postern_client_bytes_total{direction="up"} 7`,
		"postern_client_controller_reachable 1",
		"postern_client_signed_in 1",
		`postern_client_connector_connected{connector="corp-a",network="corp"} 1`,
		`postern_client_connector_path{connector="corp-a",path="direct",transport="udp"} 1`,
		`postern_client_connector_flows_total{connector="corp-a"} 1`,
		`postern_client_connector_bytes_total{connector="corp-a",direction="down"} 7`,
		`postern_client_dns_queries_total{rcode="NOERROR"} 1`,
		`postern_client_dns_queries_total{rcode="NXDOMAIN"} 1`,
		`postern_client_dns_queries_total{rcode="dropped"} 1`,
		"postern_client_dns_query_duration_seconds_count 3",
		"postern_client_connector_rtt_seconds{connector=\"corp-a\"}",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if h := scrape(t, base+"/healthz"); !strings.Contains(h, `"state":"connected"`) {
		t.Errorf("healthz: %s", h)
	}
	cancel()
	testenv.Eventually(t, 5*time.Second, "the metrics listener to stop after its context ended", func() bool {
		resp, err := http.Get(base + "/metrics")
		if err == nil {
			resp.Body.Close()
		}
		return err != nil
	})
}
