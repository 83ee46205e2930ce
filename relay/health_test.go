package relay

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/testenv"
)

func getHealth(t *testing.T, url string) (int, Health, string) {
	t.Helper()
	resp, body := testenv.Get(t, url)
	var h Health
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal([]byte(body), &h); err != nil {
			t.Fatalf("%s: %v", url, err)
		}
	}
	return resp.StatusCode, h, body
}

func TestHealthAndReadiness(t *testing.T) {
	f := newFixture(t, nil)
	srv := httptest.NewServer(f.r.MetricsHandler())
	defer srv.Close()

	if code, h, _ := getHealth(t, srv.URL+controlapi.PathHealth); code != 200 || h.Status != "ok" || h.UDPAddr != f.r.UDPAddr().String() {
		t.Fatalf("healthz: %d %+v", code, h)
	}
	// Started but no policy from the controller: not ready.
	if code, h, _ := getHealth(t, srv.URL+pathReady); code != 503 || !strings.Contains(h.Reason, "no policy") {
		t.Fatalf("readyz before a policy: %d %+v", code, h)
	}
	f.r.SetPolicy(controlapi.RelayPolicy{Revision: 7})
	if code, h, _ := getHealth(t, srv.URL+pathReady); code != 200 || h.Status != "ready" || h.PolicyRevision != 7 {
		t.Fatalf("readyz with a policy: %d %+v", code, h)
	}
	if code, _, body := getHealth(t, srv.URL+"/metrics"); code != 200 || !strings.Contains(body, "postern_relay_allocations") {
		t.Fatalf("metrics: %d %.200s", code, body)
	}
	f.r.Close()
	if code, h, _ := getHealth(t, srv.URL+pathReady); code != 503 || !strings.Contains(h.Reason, "closed") {
		t.Fatalf("readyz after Close: %d %+v", code, h)
	}
}
