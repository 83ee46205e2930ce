package api

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/adminapi"
)

// enrollCore is an in-memory set of enrollment tokens: secret -> kind.
type enrollCore struct {
	fakeCore
	tokens     map[string]string
	enrolled   []string // kind:secret of every enrollment accepted
	heartbeats int
}

func (f *enrollCore) Enroll(ctx context.Context, kind string, req controlapi.EnrollRequest, pub any, pubPEM string) (controlapi.EnrollResponse, int, error) {
	k, ok := f.tokens[req.Secret]
	switch {
	case !ok:
		return controlapi.EnrollResponse{}, http.StatusUnauthorized, errors.New("enrollment refused: unknown enrollment token")
	case k != kind:
		return controlapi.EnrollResponse{}, http.StatusBadRequest, fmt.Errorf("enrollment refused: this is a %s token, not a %s token", k, kind)
	}
	if _, ed := pub.(ed25519.PublicKey); !ed || !strings.HasPrefix(pubPEM, "-----BEGIN PUBLIC KEY-----") {
		return controlapi.EnrollResponse{}, http.StatusInternalServerError, errors.New("key not parsed")
	}
	delete(f.tokens, req.Secret)
	f.enrolled = append(f.enrolled, kind+":"+req.Secret)
	return controlapi.EnrollResponse{ID: "c1", Name: "edge"}, http.StatusOK, nil
}

func (f *enrollCore) ComponentIdentity(r *http.Request) (string, string, error) {
	return adminapi.KindConnector, "c1", nil
}

func (f *enrollCore) ConnectorHeartbeat(ctx context.Context, id string, hb controlapi.Heartbeat) (controlapi.HeartbeatResponse, error) {
	f.heartbeats++
	return controlapi.HeartbeatResponse{IntervalSeconds: 1}, nil
}

func testKeyPEM(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(pub)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

func TestEnroll(t *testing.T) {
	key := testKeyPEM(t)
	body := func(secret, key, host string) string {
		b, _ := json.Marshal(controlapi.EnrollRequest{Secret: secret, PublicKeyPEM: key, Hostname: host})
		return string(b)
	}
	core := &enrollCore{tokens: map[string]string{"s1": adminapi.KindConnector, "s2": adminapi.KindRelay}}
	for _, tc := range []struct {
		name, path, body string
		status           int
		msg              string
	}{
		{"no body", controlapi.PathEnrollConnector, ``, 400, "request body: empty, a JSON object is required"},
		{"unknown field", controlapi.PathEnrollConnector, `{"secret":"s1","extra":1}`, 400, `request body: json: unknown field "extra"`},
		{"no secret", controlapi.PathEnrollConnector, body("", key, ""), 400, "secret: required"},
		{"no key", controlapi.PathEnrollConnector, body("s1", "", ""), 400, `public_key_pem: not a PEM "PUBLIC KEY" block`},
		{"long host", controlapi.PathEnrollConnector, body("s1", key, strings.Repeat("h", 256)), 400, "hostname or version: too long"},
		{"unknown token", controlapi.PathEnrollConnector, body("s9", key, ""), 401, "enrollment refused: unknown enrollment token"},
		{"wrong kind", controlapi.PathEnrollConnector, body("s2", key, ""), 400, "enrollment refused: this is a relay token, not a connector token"},
	} {
		w := serve(t, core, "POST", tc.path, tc.body)
		if w.Code != tc.status || apiError(t, w) != tc.msg {
			t.Errorf("%s: %d %q, want %d %q", tc.name, w.Code, w.Body, tc.status, tc.msg)
		}
	}
	if len(core.enrolled) != 0 || len(core.tokens) != 2 {
		t.Fatalf("bad input changed the tokens: enrolled %v, left %v", core.enrolled, core.tokens)
	}
	w := serve(t, core, "POST", controlapi.PathEnrollRelay, body("s2", key, "host"))
	var resp controlapi.EnrollResponse
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &resp) != nil || resp.ID != "c1" {
		t.Fatalf("enroll: %d %q", w.Code, w.Body)
	}
	if len(core.enrolled) != 1 || core.enrolled[0] != "relay:s2" {
		t.Errorf("enrolled %v", core.enrolled)
	}
}

func TestHeartbeatRefusesBadItems(t *testing.T) {
	digest := strings.Repeat("ab", 32)
	core := &enrollCore{}
	for _, tc := range []struct {
		hb  string
		msg string
	}{
		{`{"cert_sha256":[]}`, "cert_sha256: 1 to 8 certificate digests required"},
		{`{"cert_sha256":["` + digest + `","zz"]}`, `cert_sha256[1]: "zz" is not a hex SHA-256 digest`},
		{`{"cert_sha256":["` + digest + `"],"addrs":["192.0.2.1:443","192.0.2.2"]}`, `addrs[1]: "192.0.2.2" is not host:port`},
	} {
		mux := http.NewServeMux()
		New(core, slog.New(slog.DiscardHandler)).Routes(mux)
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest("POST", controlapi.PathConnectorHeartbeat, strings.NewReader(tc.hb)))
		if w.Code != 400 || apiError(t, w) != tc.msg {
			t.Errorf("%s: %d %q, want 400 %q", tc.hb, w.Code, w.Body, tc.msg)
		}
	}
	if core.heartbeats != 0 {
		t.Errorf("a refused heartbeat was recorded")
	}
	w := serve(t, core, "POST", controlapi.PathConnectorHeartbeat, `{"cert_sha256":["`+strings.ToUpper(digest)+`"],"addrs":["192.0.2.1:443"]}`)
	if w.Code != 200 || core.heartbeats != 1 {
		t.Errorf("heartbeat: %d %q", w.Code, w.Body)
	}
}
