package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/store"
)

// fakeCore answers the few calls a test makes; any other call panics
// (the embedded Core is nil).
type fakeCore struct {
	Core
	authErr error
	objects map[string]any
}

func (f *fakeCore) AuthorizeAdmin(r *http.Request) (context.Context, error) {
	return r.Context(), f.authErr
}

func (f *fakeCore) ListObjects(ctx context.Context, kind, cursor string, limit int) ([]any, string, error) {
	return nil, "", nil
}

func (f *fakeCore) GetObject(ctx context.Context, kind, key string) (any, error) {
	if v, ok := f.objects[key]; ok {
		return v, nil
	}
	return nil, &ObjectError{Kind: kind, Key: key, Err: store.ErrNotFound}
}

func (f *fakeCore) BadInput(err error) bool { return false }

func (f *fakeCore) PrometheusHandler() http.Handler { return http.NotFoundHandler() }

func serve(t *testing.T, core Core, method, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	mux := http.NewServeMux()
	New(core, slog.New(slog.DiscardHandler)).Routes(mux)
	h := Middleware(mux, slog.New(slog.DiscardHandler), func(string) bool { return true })
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(method, path, strings.NewReader(body)))
	return w
}

func apiError(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var e controlapi.Error
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("body %q: %v", w.Body, err)
	}
	return e.Error
}

func TestAdminGuard(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		msg    string
		www    bool
	}{
		{ErrAdminAuth, 401, "admin token required (Authorization: Bearer <DATA/admin-token> or an admin API token)", true},
		{fmt.Errorf("%w: admin token atk_1 expired", ErrAdminAuth), 401, "admin credentials required: admin token atk_1 expired", true},
		{&Forbidden{Msg: "bob (role auditor) may not GET /api/v1/users/x"}, 403, "bob (role auditor) may not GET /api/v1/users/x", false},
		{errors.New("store down"), 500, "store down", false},
	} {
		w := serve(t, &fakeCore{authErr: tc.err}, "GET", "/api/v1/users/x", "")
		if w.Code != tc.status || apiError(t, w) != tc.msg || (w.Header().Get("WWW-Authenticate") != "") != tc.www {
			t.Errorf("%v: got %d %q (WWW-Authenticate %q), want %d %q", tc.err, w.Code, w.Body, w.Header().Get("WWW-Authenticate"), tc.status, tc.msg)
		}
	}
}

func TestObjects(t *testing.T) {
	core := &fakeCore{objects: map[string]any{"ssh": map[string]string{"name": "ssh"}}}
	w := serve(t, core, "GET", "/api/v1/resources", "")
	if w.Code != 200 || strings.Join(strings.Fields(w.Body.String()), "") != `{"items":[]}` {
		t.Errorf("empty list: %d %q", w.Code, w.Body)
	}
	w = serve(t, core, "GET", "/api/v1/resources/ssh", "")
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"name": "ssh"`) || w.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("get: %d %q %v", w.Code, w.Body, w.Header())
	}
	w = serve(t, core, "GET", "/api/v1/resources/nope", "")
	if w.Code != 404 || apiError(t, w) != `resource "nope" not found` {
		t.Errorf("get unknown: %d %q", w.Code, w.Body)
	}
	w = serve(t, core, "GET", "/api/v1/resources?limit=0", "")
	if w.Code != 400 || apiError(t, w) != `query parameter limit: "0" must be a number from 1 to 1000` {
		t.Errorf("bad limit: %d %q", w.Code, w.Body)
	}
}

func TestDecodeJSON(t *testing.T) {
	for _, tc := range []struct {
		body, msg string
		limit     int64
		status    int
	}{
		{"", "request body: empty, a JSON object is required", 0, 400},
		{`{"name":"a"} {}`, "request body: trailing data after the JSON object", 0, 400},
		{`{"nope":1}`, `request body: json: unknown field "nope"`, 0, 400},
		{`{"name":"` + strings.Repeat("a", 100) + `"}`, "request body larger than 16 bytes", 16, 413},
	} {
		r := httptest.NewRequest("POST", "/", strings.NewReader(tc.body))
		w := httptest.NewRecorder()
		if tc.limit > 0 {
			r.Body = http.MaxBytesReader(w, r.Body, tc.limit)
		}
		var v struct {
			Name string `json:"name"`
		}
		if DecodeJSON(w, r, &v) || w.Code != tc.status || apiError(t, w) != tc.msg {
			t.Errorf("%q: %d %q, want %d %q", tc.body, w.Code, w.Body, tc.status, tc.msg)
		}
	}
}

func TestMiddleware(t *testing.T) {
	var gotIP string
	var gotLimit error
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			panic("boom")
		}
		gotIP = RequestIP(r.Context())
		_, gotLimit = io.ReadAll(r.Body)
	})
	allowed := true
	h := Middleware(next, slog.New(slog.DiscardHandler), func(ip string) bool { return allowed })

	r := httptest.NewRequest("POST", "/api/v1/users", strings.NewReader(strings.Repeat("x", MaxBody+1)))
	r.RemoteAddr = "192.0.2.7:4000"
	h.ServeHTTP(httptest.NewRecorder(), r)
	var mbe *http.MaxBytesError
	if gotIP != "192.0.2.7" || !errors.As(gotLimit, &mbe) {
		t.Errorf("request IP %q, body error %v", gotIP, gotLimit)
	}
	r = httptest.NewRequest("POST", "/api/v1/apply", strings.NewReader(strings.Repeat("x", MaxBody+1)))
	h.ServeHTTP(httptest.NewRecorder(), r)
	if gotLimit != nil {
		t.Errorf("apply body over the default limit refused: %v", gotLimit)
	}

	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/panic", nil))
	if w.Code != 500 || apiError(t, w) != "internal error" {
		t.Errorf("panic: %d %q", w.Code, w.Body)
	}

	allowed = false
	w = httptest.NewRecorder()
	r = httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "192.0.2.8:4000"
	h.ServeHTTP(w, r)
	if w.Code != 429 || w.Header().Get("Retry-After") != "1" || apiError(t, w) != "rate limit exceeded for 192.0.2.8" {
		t.Errorf("rate limited: %d %q %v", w.Code, w.Body, w.Header())
	}
}

type fakeSession struct {
	ClientSession
	tokenErr, postureErr error
}

func (f *fakeSession) ConnectionToken(connector string) (*controlapi.TokenResponse, error) {
	if f.tokenErr != nil {
		return nil, f.tokenErr
	}
	return &controlapi.TokenResponse{Token: "t-" + connector}, nil
}

func (f *fakeSession) ReportPosture(ctx context.Context, signed controlapi.SignedPosture) (controlapi.PostureVerdict, error) {
	return controlapi.PostureVerdict{}, f.postureErr
}

type clientCore struct {
	fakeCore
	sess *fakeSession
}

func (c *clientCore) ClientSession(ctx context.Context, token string) (ClientSession, error) {
	if token != "good" {
		return nil, errors.New("not signed in: unknown, expired or revoked session; sign in again")
	}
	return c.sess, nil
}

func TestClientErrors(t *testing.T) {
	call := func(core Core, token, path, body string) *httptest.ResponseRecorder {
		mux := http.NewServeMux()
		New(core, slog.New(slog.DiscardHandler)).Routes(mux)
		r := httptest.NewRequest("POST", path, strings.NewReader(body))
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		return w
	}
	for _, tc := range []struct {
		name, token, path, body string
		sess                    *fakeSession
		status                  int
		msg                     string
	}{
		{"no session", "bad", controlapi.PathConnectionToken, `{"connector_id":"c1"}`, &fakeSession{}, 401, "not signed in: unknown, expired or revoked session; sign in again"},
		{"no connector", "good", controlapi.PathConnectionToken, `{}`, &fakeSession{}, 400, "connector_id: required"},
		{"unknown connector", "good", controlapi.PathConnectionToken, `{"connector_id":"c9"}`, &fakeSession{tokenErr: fmt.Errorf("%w: connector %q", ErrUnknownComponent, "c9")}, 404, `connector_id: unknown component: connector "c9"`},
		{"no digest", "good", controlapi.PathConnectionToken, `{"connector_id":"c1"}`, &fakeSession{tokenErr: fmt.Errorf("connector c1: %w", ErrNoDigest)}, 409, "connector c1: " + ErrNoDigest.Error()},
		{"not allowed", "good", controlapi.PathConnectionToken, `{"connector_id":"c1"}`, &fakeSession{tokenErr: fmt.Errorf("%w: no resource", ErrNotAllowed)}, 403, "not allowed: no resource"},
		{"bad posture", "good", controlapi.PathPosture, `{}`, &fakeSession{postureErr: fmt.Errorf("%w: bad signature", ErrPostureReport)}, 400, "posture report: bad signature"},
		{"posture store", "good", controlapi.PathPosture, `{}`, &fakeSession{postureErr: errors.New("store posture report: disk full")}, 500, "store posture report: disk full"},
	} {
		w := call(&clientCore{sess: tc.sess}, tc.token, tc.path, tc.body)
		if w.Code != tc.status || apiError(t, w) != tc.msg {
			t.Errorf("%s: %d %q, want %d %q", tc.name, w.Code, w.Body, tc.status, tc.msg)
		}
	}
	w := call(&clientCore{sess: &fakeSession{}}, "good", controlapi.PathConnectionToken, `{"connector_id":"c1"}`)
	var tr controlapi.TokenResponse
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &tr) != nil || tr.Token != "t-c1" {
		t.Errorf("token: %d %q", w.Code, w.Body)
	}
}

type mfaSession struct {
	fakeSession
	person bool
	err    error
}

func (f *mfaSession) Person() bool { return f.person }

func (f *mfaSession) EnrollTOTP(ctx context.Context) (controlapi.MFAEnrollResponse, error) {
	return controlapi.MFAEnrollResponse{}, f.err
}

// sessionCore is a core whose every caller is signed in as sess.
type sessionCore struct {
	fakeCore
	sess ClientSession
}

func (c *sessionCore) ClientSession(ctx context.Context, token string) (ClientSession, error) {
	return c.sess, nil
}

func TestMFAErrors(t *testing.T) {
	for _, tc := range []struct {
		sess   *mfaSession
		status int
		msg    string
	}{
		{&mfaSession{person: false}, 403, "a second factor is for people; service accounts have none"},
		{&mfaSession{person: true, err: ErrMFAEnrolled}, 409, ErrMFAEnrolled.Error()},
		{&mfaSession{person: true, err: &Forbidden{Msg: "needs a step-up"}}, 403, "needs a step-up"},
		{&mfaSession{person: true, err: fmt.Errorf("%w: wait 30s", ErrMFAThrottled)}, 429, "too many wrong codes: wait 30s"},
		{&mfaSession{person: true, err: errors.New("generate TOTP secret: no entropy")}, 500, "generate TOTP secret: no entropy"},
	} {
		mux := http.NewServeMux()
		New(&sessionCore{sess: tc.sess}, slog.New(slog.DiscardHandler)).Routes(mux)
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest("POST", controlapi.PathMFAEnroll, nil))
		if w.Code != tc.status || apiError(t, w) != tc.msg {
			t.Errorf("%+v: %d %q, want %d %q", tc.sess, w.Code, w.Body, tc.status, tc.msg)
		}
	}
}
