package controller

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/export"
	"postern.dev/postern/internal/testenv"
)

// metricValue finds one sample in a Prometheus text exposition.
func metricValue(t *testing.T, body, name string, labels ...string) (float64, bool) {
	t.Helper()
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		return v, true
	}
	return 0, false
}

func TestControllerMetrics(t *testing.T) {
	e, con, dev, _ := signedSetup(t)
	// A wrong password, a connection token and a push stream.
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	if st, _ := e.call(nil, "POST", controlapi.PathLogin, "", controlapi.LoginRequest{Email: "alice@example.com", Password: "wrong",
		DevicePublicKey: base64.StdEncoding.EncodeToString(pub), DeviceName: "x", OS: "linux"}); st != 401 {
		t.Fatalf("wrong password: %d", st)
	}
	if st, data := e.call(nil, "POST", controlapi.PathConnectionToken, dev.session.SessionToken, controlapi.TokenRequest{ConnectorID: con.id}); st != 200 {
		t.Fatalf("token: %d %s", st, data)
	}
	ps := e.openStream(e.client(nil), controlapi.PathClientPolicy, dev.session.SessionToken)
	var first json.RawMessage
	ps.next(t, 5*time.Second, &first)

	// The API listener wants the admin token.
	if st, _ := e.call(nil, "GET", PathMetrics, "", nil); st != http.StatusUnauthorized {
		t.Fatalf("/metrics without the admin token: %d, want 401", st)
	}
	body := string(e.admin("GET", PathMetrics, nil, 200))
	for _, c := range []struct {
		name   string
		labels []string
		min    float64
	}{
		{"postern_controller_sign_ins_total", []string{`method="password"`, `result="ok"`}, 1},
		{"postern_controller_sign_ins_total", []string{`method="password"`, `result="failed"`}, 1},
		{"postern_controller_tokens_issued_total", []string{`kind="connection_token"`}, 1},
		{"postern_controller_tokens_issued_total", []string{`kind="connector_certificate"`}, 1},
		{"postern_controller_push_subscribers", nil, 1},
		{"postern_controller_http_requests_total", []string{`route="POST /api/v1/client/login"`, `code="200"`}, 1},
		{"postern_controller_http_requests_total", []string{`route="POST /api/v1/client/login"`, `code="401"`}, 1},
		{"postern_controller_http_requests_total", []string{`route="GET /metrics"`, `code="401"`}, 1},
		{"postern_controller_store_duration_seconds_count", []string{`op="update"`}, 1},
		{"postern_controller_store_duration_seconds_count", []string{`op="load_all"`}, 1},
		{"postern_controller_http_request_duration_seconds_count", []string{`route="POST /api/v1/client/connection-token"`}, 1},
	} {
		v, ok := metricValue(t, body, c.name, c.labels...)
		if !ok || v < c.min {
			t.Errorf("%s%v = %v (found %t), want >= %v", c.name, c.labels, v, ok, c.min)
		}
	}
	// Raw paths never become labels; push streams get no latency sample.
	if strings.Contains(body, con.id) {
		t.Error("a connector id leaked into a metric label")
	}
	if _, ok := metricValue(t, body, "postern_controller_http_request_duration_seconds_count", `route="GET /api/v1/client/policy/stream"`); ok {
		t.Error("push streams must not be in the latency histogram")
	}
	ps.close()
}

func get(t *testing.T, cl *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHealthReadyAndMetricsListener(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	cl := e.client(nil)
	if st, body := get(t, cl, e.url+controlapi.PathHealth); st != 200 || !strings.Contains(body, `"status": "ok"`) {
		t.Fatalf("healthz: %d %s", st, body)
	}
	if st, body := get(t, cl, e.url+PathReady); st != 200 || !strings.Contains(body, `"ready"`) {
		t.Fatalf("readyz: %d %s", st, body)
	}
	// The separate metrics listener needs no token.
	ms := httptest.NewServer(e.c.MetricsHandler())
	defer ms.Close()
	st, body := get(t, ms.Client(), ms.URL+PathMetrics)
	if st != 200 || !strings.Contains(body, "postern_controller_push_subscribers 0") {
		t.Fatalf("metrics listener: %d %.300s", st, body)
	}
	if st, _ := get(t, ms.Client(), ms.URL+PathReady); st != 200 {
		t.Fatalf("metrics listener readyz: %d", st)
	}
	// A store that stopped answering makes the controller unready, not unhealthy.
	if err := e.c.store.Close(); err != nil {
		t.Fatal(err)
	}
	if st, body := get(t, ms.Client(), ms.URL+PathReady); st != 503 || !strings.Contains(body, "store") {
		t.Fatalf("readyz with a closed store: %d %s, want 503 naming the store", st, body)
	}
	if st, _ := get(t, ms.Client(), ms.URL+controlapi.PathHealth); st != 200 {
		t.Fatalf("healthz with a closed store: %d, want 200", st)
	}
}

// TestExportFromController: a configured sink receives the controller's
// audit entries and connector flow events.
func TestExportFromController(t *testing.T) {
	out := filepath.Join(t.TempDir(), "events.jsonl")
	cfg, err := export.ParseConfig([]byte("poll: 20ms\nsinks:\n  - {name: file, type: file, path: " + out + "}\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := newTestController(t, t.TempDir(), func(c *Config) { c.Export = cfg })
	e.apply(testYAML)
	con := e.enroll(KindConnector, "corp-a")
	if st, data := e.call(con.http, "POST", controlapi.PathConnectorEvents, "", controlapi.FlowEvents{Events: []controlapi.FlowEvent{
		{Principal: "u1", Device: "d1", ResourceID: "r1", Destination: "198.51.100.5", Port: 22, Protocol: "tcp", Result: "posture"},
	}}); st != 204 {
		t.Fatalf("events: %d %s", st, data)
	}
	var recs []export.Record
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs = recs[:0]
		if f, err := os.Open(out); err == nil {
			sc := bufio.NewScanner(f)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var r export.Record
				if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
					t.Fatal(err)
				}
				recs = append(recs, r)
			}
			f.Close()
		}
		if n := len(recs); n > 0 && recs[n-1].Type == export.StreamNetwork {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no network event exported; have %d records", len(recs))
		}
		time.Sleep(10 * time.Millisecond)
	}
	last := recs[len(recs)-1]
	if last.Status != "denied" || last.Reason != "posture" || last.Connector != con.id || last.User != "u1" {
		t.Errorf("network record %+v", last)
	}
	applied := regexp.MustCompile(`^audit-\d+$`)
	if !applied.MatchString(recs[0].ID) || recs[0].Actor == "" {
		t.Errorf("first record %+v, want an audit entry of the apply", recs[0])
	}
	// The sink counts a batch once its write returned and the cursor moved,
	// a moment after the records reached the file.
	var body string
	testenv.Poll(t, 10*time.Second, "export_events_total catches up with the file", func() error {
		body = string(e.admin("GET", PathMetrics, nil, 200))
		if v, ok := metricValue(t, body, "postern_controller_export_events_total", `sink="file"`); !ok || v < float64(len(recs)) {
			return fmt.Errorf("export_events_total = %v (%t), want >= %d", v, ok, len(recs))
		}
		return nil
	})
	if v, ok := metricValue(t, body, "postern_controller_export_last_ok_timestamp_seconds", `sink="file"`); !ok || time.Since(time.UnixMilli(int64(v*1000))) > time.Minute {
		t.Errorf("export_last_ok_timestamp_seconds = %v (%t), want about now", v, ok)
	}
}
