package client

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"postern.dev/postern/installer/preset"
	"postern.dev/postern/localapi"
)

// closedController is where every controller URL in a fuzzed body is
// pointed: nothing listens on 127.0.0.1:9 (discard), so a sign-in fails at
// once and no fuzzed URL ever leaves the machine.
const closedController = "https://127.0.0.1:9"

// sanitizeBody returns the body the daemon will decode with every field
// naming a controller replaced by closedController. The daemon's decoder
// reads only the first JSON value and matches keys case-insensitively, so
// the same is done here; a body whose first value is not an object is
// passed on unchanged (it cannot name a controller).
func sanitizeBody(b []byte) []byte {
	var m map[string]any
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&m); err != nil || m == nil {
		return b
	}
	for k := range m {
		if strings.Contains(strings.ToLower(k), "url") {
			delete(m, k)
		}
	}
	m["controller_url"] = closedController
	out, _ := json.Marshal(m)
	return out
}

// FuzzLocalAPI sends arbitrary requests (method, path, query, body) to the
// daemon's local API handler, as any local user allowed on the socket can:
// nothing panics; every answer is JSON; a bad request is a 4xx with an error
// message, never a 500; and the daemon stays signed out.
func FuzzLocalAPI(f *testing.F) {
	for _, s := range []struct{ method, path, body string }{
		{"POST", "/v1/login", `{"controller_url":"https://c","email":"a@b","password":"p"}`},
		{"POST", "/v1/login", `{"controller_url":"https://c","service_key":"{\"account_id\":\"a\",\"secret\":\"s\"}"}`},
		{"POST", "/v1/login", `{"email":"a@b"}`},
		{"POST", "/v1/login", `{"oidc":{"code":"x"},"id_token":"t"}`},
		{"POST", "/v1/login", `[1,2]`},
		{"POST", "/v1/login", `{"unknown":1}`},
		{"POST", "/v1/up", ``},
		{"POST", "/v1/down", `{}`},
		{"POST", "/v1/logout", ``},
		{"GET", "/v1/status", ``},
		{"GET", "/v1/resources", ``},
		{"GET", "/v1/dns?name=db.corp.internal", ``},
		{"GET", "/v1/dns?name=" + strings.Repeat("a", 300), ``},
		{"POST", localapi.PathSSOStart, `{"controller_url":"https://c","redirect_uri":"http://127.0.0.1:1/cb"}`},
		{"POST", localapi.PathSSODevice, `{"controller_url":"https://c"}`},
		{"DELETE", "/v1/status", ``},
		{"GET", "/v2/../v1/status", ``},
	} {
		f.Add(s.method, s.path, []byte(s.body))
	}
	h, d := apiHandler(f)
	f.Fuzz(func(t *testing.T, method, target string, body []byte) {
		low := strings.ToLower(target)
		if strings.Contains(low, "events") || strings.Contains(low, "pprof") || !strings.HasPrefix(target, "/") {
			return // a stream and the profiler run until cancelled
		}
		req, err := http.NewRequest(method, "http://posternd"+target, bytes.NewReader(sanitizeBody(body)))
		if err != nil {
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 && !strings.HasPrefix(req.URL.Path, "/v1/login") && !strings.HasPrefix(req.URL.Path, "/v1/sso") {
			t.Fatalf("%s %s: %d %s", method, target, rec.Code, rec.Body.String())
		}
		if ct := rec.Header().Get("Content-Type"); strings.HasPrefix(ct, "application/json") {
			if !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("%s %s: invalid JSON %q", method, target, rec.Body.String())
			}
			if rec.Code >= 400 {
				var e localapi.Error
				if json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error == "" {
					t.Fatalf("%s %s: %d without an error message: %s", method, target, rec.Code, rec.Body.String())
				}
			}
		}
		if st := d.Status(); st.State != localapi.StateSignedOut {
			t.Fatalf("%s %s signed the daemon in: %+v", method, target, st)
		}
	})
}

// apiHandler is the local API handler of a signed-out daemon whose preset
// names no controller.
func apiHandler(tb testing.TB) (http.Handler, *Daemon) {
	d, err := New(Config{
		StateDir: tb.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		NewFrontend: func() (Frontend, error) { return NewSOCKS5Frontend("127.0.0.1:0"), nil },
		Preset:      func() (preset.Preset, error) { return preset.Preset{}, nil },
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { d.Close() })
	srv, err := ListenLocalAPI(d, filepath.Join(tb.TempDir(), "p.sock"), -1)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { srv.Close() })
	return srv.srv.Handler, d
}

// TestLocalAPIRefusesBrowsers: a request carrying an Origin (a web page) or
// another Host (DNS rebinding) gets 403 with an error message.
func TestLocalAPIRefusesBrowsers(t *testing.T) {
	h, _ := apiHandler(t)
	for name, mod := range map[string]func(*http.Request){
		"origin":     func(r *http.Request) { r.Header.Set("Origin", "https://evil.example") },
		"other host": func(r *http.Request) { r.Host = "evil.example" },
	} {
		req := httptest.NewRequest("GET", "http://posternd/v1/status", nil)
		mod(req)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		var e localapi.Error
		if rec.Code != http.StatusForbidden || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error == "" {
			t.Errorf("%s: %d %s, want 403 with an error", name, rec.Code, rec.Body.String())
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "http://posternd/v1/status", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("plain request: %d", rec.Code)
	}
}
