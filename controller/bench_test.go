package controller

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/store"
)

// benchController opens a controller with testYAML applied, connector corp-a
// reporting a digest and a signed-in device; it returns the session token.
func benchController(b *testing.B) (*Controller, string, string) {
	b.Helper()
	c, err := Open(Config{DataDir: b.TempDir(), PublicURL: "https://127.0.0.1:8443", RateLimit: 1e9, RateBurst: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	ctx := context.Background()
	if _, err := c.ApplyYAML(ctx, []byte(fastYAML(testYAML)), false); err != nil {
		b.Fatal(err)
	}
	con := c.model().ConnectorByName["corp-a"]
	_, _, err = c.store.Update(ctx, func(tx store.Tx) error {
		return updateRecord(tx, KindConnector, con.ID, func(v *Connector) bool { v.CertSHA256 = []string{randomDigest()}; return true })
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.reload(ctx); err != nil {
		b.Fatal(err)
	}
	key, err := c.CreateServiceKey(ctx, "ci", 0)
	if err != nil {
		b.Fatal(err)
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	lr, _, err := c.login(ctx, "127.0.0.1", controlapi.LoginRequest{ServiceKey: key, DevicePublicKey: base64.StdEncoding.EncodeToString(pub)})
	if err != nil {
		b.Fatal(err)
	}
	return c, lr.SessionToken, con.ID
}

// BenchmarkTokenIssue measures Connection Tokens issued per second (session
// check, policy check, EdDSA signature) on one goroutine. Target: >= 5,000/s.
func BenchmarkTokenIssue(b *testing.B) {
	c, sess, con := benchController(b)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), processCPU()
	for i := 0; i < b.N; i++ {
		if _, err := c.IssueConnectionToken(sess, con); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tokens/s")
	// Per core-second of CPU actually used (wall-clock figures suffer when
	// the machine is shared).
	if cpu := processCPU() - cpu0; cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "tokens/cpu-s")
	}
}

// bigYAML has nres resources spread over groups groups and 10 networks.
func bigYAML(nres, groups int) string {
	var sb strings.Builder
	sb.WriteString("remote_networks:\n")
	for n := 0; n < 10; n++ {
		fmt.Fprintf(&sb, "  - name: net%d\n    connectors: [net%d-a, net%d-b]\n", n, n, n)
	}
	h, _ := hashPassword("benchmark password")
	sb.WriteString("users:\n")
	for u := 0; u < 100; u++ {
		fmt.Fprintf(&sb, "  - email: user%d@example.com\n    password_hash: %q\n", u, h)
	}
	sb.WriteString("groups:\n")
	for g := 0; g < groups; g++ {
		fmt.Fprintf(&sb, "  - name: group%d\n    users: [user%d@example.com, user%d@example.com]\n", g, g%100, (g+1)%100)
	}
	sb.WriteString("resources:\n")
	for r := 0; r < nres; r++ {
		fmt.Fprintf(&sb, "  - name: res%d\n    address: host%d.corp%d.internal\n    network: net%d\n    ports: [tcp/22, tcp/8000-8100, udp/53, icmp]\n    groups: [group%d, group%d]\n",
			r, r, r%10, r%10, r%groups, (r+7)%groups)
	}
	sb.WriteString("service_accounts:\n  - name: ci\n    groups: [group0]\n")
	return sb.String()
}

// peakHeap samples the heap while fn runs.
func peakHeap(fn func()) uint64 {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	fn()
	close(done)
	wg.Wait()
	return peak.Load()
}

// BenchmarkApply10k applies a file with 10,000 resources and 1,000 groups to
// an empty controller (time per op, peak heap), then re-applies it (an empty
// plan).
func BenchmarkApply10k(b *testing.B) {
	doc := []byte(bigYAML(10000, 1000))
	b.ReportMetric(float64(len(doc))/1e6, "yaml-MB")
	var peak uint64
	var reapply time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c, err := Open(Config{DataDir: b.TempDir(), PublicURL: "https://127.0.0.1:8443"})
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		b.StartTimer()
		p := peakHeap(func() {
			plan, err := c.ApplyYAML(context.Background(), doc, false)
			if err != nil {
				b.Fatal(err)
			}
			if len(plan.Changes) < 11000 {
				b.Fatalf("plan has %d changes", len(plan.Changes))
			}
		})
		b.StopTimer()
		if p > peak {
			peak = p
		}
		start := time.Now()
		plan, err := c.ApplyYAML(context.Background(), doc, false)
		if err != nil || !plan.Empty() {
			b.Fatalf("re-apply: %v %d changes", err, len(plan.Changes))
		}
		reapply = time.Since(start)
		c.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(reapply.Milliseconds()), "reapply-ms")
}

// BenchmarkFanout1000 measures the time from a policy commit until all of
// 1,000 push subscribers (500 connector streams, 500 client streams, each its
// own TLS connection) have received the new snapshot. Target: all within 1 s.
func BenchmarkFanout1000(b *testing.B) {
	const subs = 1000
	c, sess, conID := benchController(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { c.Serve(ctx, ln); close(served) }()
	defer func() { cancel(); <-served }()
	base := "https://" + ln.Addr().String()

	// A connector credential for the connector streams.
	tok, err := c.EnrollmentToken(KindConnector, "corp-a", 0)
	if err != nil {
		b.Fatal(err)
	}
	et, _ := controlapi.ParseEnrollmentToken(tok)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	pool := x509PoolFromPEM(c.CACertPEM())
	plain := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	body, _ := json.Marshal(controlapi.EnrollRequest{Secret: et.Secret, PublicKeyPEM: pubPEM(pub)})
	resp, err := plain.Post(base+controlapi.PathEnrollConnector, "application/json", strings.NewReader(string(body)))
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("enroll: %v %v", err, resp)
	}
	var er controlapi.EnrollResponse
	json.NewDecoder(resp.Body).Decode(&er)
	resp.Body.Close()
	leafCert, _ := tlsCertFromPEM(er.CertificatePEM, priv)
	_ = conID

	type rev struct {
		Rev int64 `json:"rev"`
	}
	var target atomic.Int64
	target.Store(1 << 62)
	arrived := make(chan time.Time, subs)
	var wg sync.WaitGroup
	ready := make(chan struct{}, subs)
	sctx, scancel := context.WithCancel(context.Background())
	for i := 0; i < subs; i++ {
		cfg := &tls.Config{RootCAs: pool}
		path, bearerTok := controlapi.PathClientPolicy, sess
		if i%2 == 0 {
			cfg.Certificates = []tls.Certificate{leafCert}
			path, bearerTok = controlapi.PathConnectorPolicy, ""
		}
		cl := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
		req, _ := http.NewRequestWithContext(sctx, "GET", base+path, nil)
		if bearerTok != "" {
			req.Header.Set("Authorization", "Bearer "+bearerTok)
		}
		resp, err := cl.Do(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("subscriber %d: %v %v", i, err, resp)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 16<<20)
			first := true
			for sc.Scan() {
				var r rev
				if json.Unmarshal(sc.Bytes(), &r) != nil || r.Rev == 0 {
					continue
				}
				if first {
					first = false
					ready <- struct{}{}
					continue
				}
				if r.Rev >= target.Load() {
					arrived <- time.Now()
				}
			}
		}()
	}
	for i := 0; i < subs; i++ {
		<-ready
	}
	if n := c.hub.count(); n != subs {
		b.Fatalf("%d subscribers registered", n)
	}
	ports := []string{"tcp/8000-8100", "tcp/8000-8101"}
	var worst time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		y := strings.Replace(fastYAML(testYAML), "tcp/8000-8100", ports[(i+1)%2], 1)
		spec, lines, _ := ParseSpec([]byte(y))
		if err := normalizeSpec(spec, lines); err != nil {
			b.Fatal(err)
		}
		target.Store(c.model().Rev + 1) // the commit below bumps the revision once
		var commit time.Time
		_, err := c.mutateSpec(context.Background(), "bench", func(s *Spec) error {
			*s = *spec
			commit = time.Now()
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
		var last time.Time
		timeout := time.After(10 * time.Second)
		for got := 0; got < subs; got++ {
			select {
			case t := <-arrived:
				if t.After(last) {
					last = t
				}
			case <-timeout:
				b.Fatalf("only %d of %d subscribers got the change", got, subs)
			}
		}
		if d := last.Sub(commit); d > worst {
			worst = d
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(worst.Milliseconds()), "worst-ms")
	scancel()
	wg.Wait()
}
