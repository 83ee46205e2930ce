package client

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestLocalAPIServesTrace: posternd serves a runtime execution trace next to
// the CPU profile (go tool trace reads it), behind the same access checks.
func TestLocalAPIServesTrace(t *testing.T) {
	h, _ := apiHandler(t)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "http://posternd/v1/debug/pprof/trace?seconds=0.05", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("trace: %d %s", rec.Code, rec.Body.String())
	}
	if !bytes.HasPrefix(rec.Body.Bytes(), []byte("go 1.")) {
		t.Fatalf("trace body does not start with a trace header: %q", rec.Body.Bytes()[:min(rec.Body.Len(), 32)])
	}
	req := httptest.NewRequest("GET", "http://posternd/v1/debug/pprof/trace?seconds=0.05", nil)
	req.Header.Set("Origin", "https://evil.example")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Errorf("trace from a web page: %d, want 403", rec.Code)
	}
}
