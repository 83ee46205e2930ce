package lab

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"gopkg.in/yaml.v3"

	"postern.dev/postern/internal/testenv"
)

func startDNS(t *testing.T, cfg DNSConfig) string {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	addr := make(chan string, 1)
	cfg.OnListen = func(a string) { addr <- a }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeDNS(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dns server: %v", err)
		}
	})
	select {
	case a := <-addr:
		return a
	case err := <-done:
		done <- err
		t.Fatalf("dns server did not start: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("dns server did not start within 10s")
	}
	return ""
}

func query(t *testing.T, server, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	r, _, err := (&dns.Client{Timeout: 2 * time.Second}).Exchange(m, server)
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	return r
}

func TestDNSServer(t *testing.T) {
	upstream := startDNS(t, DNSConfig{Zones: []string{"example.com"}, Records: map[string]string{"www.example.com": "203.0.113.80"}})
	corp := startDNS(t, DNSConfig{Zones: []string{"corp.internal"}, Forward: upstream, Records: map[string]string{
		"db.corp.internal": "198.51.100.20", "*.apps.corp.internal": "198.51.100.30", "v6.corp.internal": "2001:db8::1",
		"dual.corp.internal": "198.51.100.40,2001:db8:c0::40",
	}})
	cases := []struct {
		name  string
		qtype uint16
		rcode int
		want  string
	}{
		{"db.corp.internal", dns.TypeA, dns.RcodeSuccess, "198.51.100.20"},
		{"DB.Corp.Internal", dns.TypeA, dns.RcodeSuccess, "198.51.100.20"},
		{"db.corp.internal", dns.TypeAAAA, dns.RcodeSuccess, ""},
		{"v6.corp.internal", dns.TypeAAAA, dns.RcodeSuccess, "2001:db8::1"},
		{"v6.corp.internal", dns.TypeA, dns.RcodeSuccess, ""}, // AAAA only: NODATA
		{"dual.corp.internal", dns.TypeA, dns.RcodeSuccess, "198.51.100.40"},
		{"dual.corp.internal", dns.TypeAAAA, dns.RcodeSuccess, "2001:db8:c0::40"},
		{"a.b.apps.corp.internal", dns.TypeA, dns.RcodeSuccess, "198.51.100.30"},
		{"apps.corp.internal", dns.TypeA, dns.RcodeNameError, ""},
		{"nothing.corp.internal", dns.TypeA, dns.RcodeNameError, ""},
		{"www.example.com", dns.TypeA, dns.RcodeSuccess, "203.0.113.80"}, // forwarded
	}
	for _, c := range cases {
		r := query(t, corp, c.name, c.qtype)
		if r.Rcode != c.rcode {
			t.Errorf("%s %s: rcode %s, want %s", c.name, dns.TypeToString[c.qtype], dns.RcodeToString[r.Rcode], dns.RcodeToString[c.rcode])
			continue
		}
		got := ""
		if len(r.Answer) > 0 {
			switch rr := r.Answer[0].(type) {
			case *dns.A:
				got = rr.A.String()
			case *dns.AAAA:
				got = rr.AAAA.String()
			}
		}
		if got != c.want {
			t.Errorf("%s %s = %q, want %q", c.name, dns.TypeToString[c.qtype], got, c.want)
		}
	}
	if r := query(t, upstream, "db.corp.internal", dns.TypeA); r.Rcode != dns.RcodeRefused {
		t.Errorf("public server answered a corporate name: %s", dns.RcodeToString[r.Rcode])
	}
}

func TestDNSServerBadConfig(t *testing.T) {
	ctx := context.Background()
	for _, cfg := range []DNSConfig{
		{Zones: []string{"corp.internal"}},
		{Listen: "127.0.0.1:0"},
		{Listen: "127.0.0.1:0", Zones: []string{"corp.internal"}, Records: map[string]string{"db.other.org": "192.0.2.1"}},
		{Listen: "127.0.0.1:0", Zones: []string{"corp.internal"}, Records: map[string]string{"db.corp.internal": "not-an-ip"}},
		{Listen: "127.0.0.1:0", Zones: []string{"corp.internal"}, Records: map[string]string{"db.corp.internal": "192.0.2.1,"}},
		{Listen: "127.0.0.1:0", Zones: []string{"corp.internal"}, Forward: "nowhere"},
	} {
		if err := ServeDNS(ctx, cfg); err == nil {
			t.Errorf("ServeDNS(%+v) accepted a bad config", cfg)
		}
	}
}

func TestHTTPHandler(t *testing.T) {
	srv := httptest.NewServer(HTTPHandler("web.corp.internal"))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, body := testenv.Get(t, srv.URL+path)
		return resp.StatusCode, body
	}
	if code, body := get("/"); code != 200 || !strings.Contains(body, "Hello from web.corp.internal") {
		t.Fatalf("GET / = %d %q", code, body)
	}
	code, body := get("/blob?size=100000&seed=7")
	if code != 200 || len(body) != 100000 {
		t.Fatalf("GET /blob = %d, %d bytes", code, len(body))
	}
	b, _ := io.ReadAll(NewBlob(7, 100000))
	if string(b) != body {
		t.Fatal("blob is not deterministic")
	}
	for _, bad := range []string{"/blob?size=-1&seed=1", "/blob?size=10", "/blob?size=99999999999&seed=1"} {
		if code, _ := get(bad); code != http.StatusBadRequest {
			t.Errorf("GET %s = %d, want 400", bad, code)
		}
	}
	resp, err := http.Post(srv.URL+"/sha256", "application/octet-stream", NewBlob(9, 12345))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if want := BlobSHA256(9, 12345) + " 12345\n"; string(out) != want {
		t.Fatalf("POST /sha256 = %q, want %q", out, want)
	}
}

func TestDemoNetworkYAML(t *testing.T) {
	n := DemoNetwork("pa", "pb")
	b, err := n.YAML()
	if err != nil {
		t.Fatal(err)
	}
	var back NetworkSpec
	if err := yaml.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Resources) != 4+len(IPv6Resources()) || back.Resources[1].Address != "*.corp.internal" || back.Users[0].Password != "pa" {
		t.Fatalf("round trip lost data:\n%s", b)
	}
	c := n.Clone()
	if !c.RemoveMember("engineering", Alice) || c.RemoveMember("engineering", Alice) || c.RemoveMember("nope", Alice) {
		t.Fatal("RemoveMember")
	}
	if len(n.Groups[0].Users) != 1 {
		t.Fatal("Clone shares group members with the original")
	}
	for _, want := range []string{"remote_networks:", "connectors:", "- corp-a", "ports:", "- tcp/5432", "groups:"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("network.yaml lacks %q:\n%s", want, b)
		}
	}
}

// TestDNSServerStopsWhenCancelledAtOnce: a server whose context ends as it
// starts returns. miekg/dns ignores a Shutdown that comes before the
// server marked itself started, and ServeDNS then waited for good (ci41:
// a lab test's cleanup hung until the package's 12-minute timeout).
func TestDNSServerStopsWhenCancelledAtOnce(t *testing.T) {
	for i := 0; i < 50; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		done := make(chan error, 1)
		go func() { done <- ServeDNS(ctx, DNSConfig{Listen: "127.0.0.1:0", Zones: []string{"example.com"}}) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("run %d: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("run %d: ServeDNS did not return within 10s of its context ending", i)
		}
	}
}
