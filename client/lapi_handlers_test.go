package client

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"postern.dev/postern/localapi"
)

// TestLocalAPIBodiesAndErrors: the endpoints that take a JSON body refuse a
// malformed one or one with unknown fields (400, naming the body) before the
// daemon sees it; a daemon error becomes its status with a message (signed
// out: 409 with the hint to sign in); a success is 200 with JSON.
func TestLocalAPIBodiesAndErrors(t *testing.T) {
	h, _ := apiHandler(t)
	do := func(method, path, body string) (int, localapi.Error, string) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, "http://posternd"+path, strings.NewReader(body)))
		var e localapi.Error
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
		return rec.Code, e, rec.Body.String()
	}
	for _, path := range []string{"/v1/login", localapi.PathSSOStart, localapi.PathSSODevice} {
		for _, body := range []string{`{"unknown":1}`, `[1,2]`, `{`} {
			if code, e, raw := do("POST", path, body); code != http.StatusBadRequest || !strings.Contains(e.Error, "bad request body") {
				t.Errorf("POST %s %s: %d %s, want 400 naming the body", path, body, code, raw)
			}
		}
	}
	for _, c := range []struct{ method, path string }{{"POST", "/v1/up"}, {"GET", localapi.PathPosture}} {
		if code, e, raw := do(c.method, c.path, ""); code != http.StatusConflict || !strings.Contains(e.Error, "not signed in") || !strings.Contains(e.Hint, "postern login") {
			t.Errorf("%s %s signed out: %d %s, want 409 with the hint to sign in", c.method, c.path, code, raw)
		}
	}
	code, _, raw := do("POST", "/v1/logout", "")
	var st localapi.Status
	if code != http.StatusOK || json.Unmarshal([]byte(raw), &st) != nil || st.State != localapi.StateSignedOut {
		t.Errorf("logout signed out: %d %s, want 200 with the signed-out status", code, raw)
	}
}
