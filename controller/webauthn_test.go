package controller

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-webauthn/webauthn/protocol/webauthncbor"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/store/pgtest"
)

// newWebAuthnController is newAccessController with a public URL that
// names a host (localhost), as WebAuthn needs; mod may set more.
func newWebAuthnController(t *testing.T, mod func(*Config)) (*testEnv, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	u := "https://localhost:" + port
	ln.Close()
	e := newTestControllerAt(t, t.TempDir(), u, func(c *Config) {
		c.Now = clk.Now
		if mod != nil {
			mod(c)
		}
	})
	e.apply(accessAPIYAML)
	return e, clk
}

// newTestControllerAt is newTestController serving publicURL (a localhost
// URL whose port is free).
func newTestControllerAt(t *testing.T, dir, publicURL string, mod func(*Config)) *testEnv {
	t.Helper()
	port := publicURL[strings.LastIndex(publicURL, ":")+1:]
	ln, err := net.Listen("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	return serveTestController(t, ln, dir, publicURL, mod)
}

// softKey is a software FIDO2 authenticator (ES256, "none" attestation)
// for unit tests of the verification; the browser test uses Chromium's
// virtual authenticator instead.
type softKey struct {
	id    []byte
	priv  *ecdsa.PrivateKey
	count uint32
}

func newSoftKey(t *testing.T) *softKey {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := make([]byte, 32)
	rand.Read(id)
	return &softKey{id: id, priv: priv}
}

const (
	flagUP = 0x01
	flagUV = 0x04
	flagAT = 0x40
)

func (k *softKey) authData(t *testing.T, rpID string, flags byte) []byte {
	h := sha256.Sum256([]byte(rpID))
	b := append([]byte{}, h[:]...)
	b = append(b, flags)
	b = binary.BigEndian.AppendUint32(b, k.count)
	if flags&flagAT != 0 {
		b = append(b, make([]byte, 16)...) // AAGUID
		b = binary.BigEndian.AppendUint16(b, uint16(len(k.id)))
		b = append(b, k.id...)
		x, y := make([]byte, 32), make([]byte, 32)
		k.priv.PublicKey.X.FillBytes(x)
		k.priv.PublicKey.Y.FillBytes(y)
		cose, err := webauthncbor.Marshal(webauthncose.EC2PublicKeyData{
			PublicKeyData: webauthncose.PublicKeyData{KeyType: int64(webauthncose.EllipticKey), Algorithm: int64(webauthncose.AlgES256)},
			Curve:         1, XCoord: x, YCoord: y,
		})
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, cose...)
	}
	return b
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func clientData(typ, challenge, origin string) []byte {
	b, _ := json.Marshal(map[string]any{"type": typ, "challenge": challenge, "origin": origin, "crossOrigin": false})
	return b
}

// register answers a creation challenge.
func (k *softKey) register(t *testing.T, rpID, origin, challenge string) json.RawMessage {
	t.Helper()
	att, err := webauthncbor.Marshal(struct {
		Fmt      string         `cbor:"fmt"`
		AttStmt  map[string]any `cbor:"attStmt"`
		AuthData []byte         `cbor:"authData"`
	}{"none", map[string]any{}, k.authData(t, rpID, flagUP|flagUV|flagAT)})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"id": b64u(k.id), "rawId": b64u(k.id), "type": "public-key",
		"response": map[string]any{"clientDataJSON": b64u(clientData("webauthn.create", challenge, origin)), "attestationObject": b64u(att)}})
	return b
}

// assert answers a request challenge, signing with the key.
func (k *softKey) assert(t *testing.T, rpID, origin, challenge string) json.RawMessage {
	t.Helper()
	k.count++
	ad := k.authData(t, rpID, flagUP|flagUV)
	cd := clientData("webauthn.get", challenge, origin)
	h := sha256.Sum256(cd)
	sum := sha256.Sum256(append(append([]byte{}, ad...), h[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, k.priv, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{"id": b64u(k.id), "rawId": b64u(k.id), "type": "public-key",
		"response": map[string]any{"clientDataJSON": b64u(cd), "authenticatorData": b64u(ad), "signature": b64u(sig)}})
	return b
}

// ceremony is a started ceremony as the test sees it.
type ceremony struct {
	controlapi.WebAuthnCeremony
	secret, challenge string
}

func (e *testEnv) beginWebAuthn(tok string, register bool, wantStatus int) ceremony {
	e.t.Helper()
	st, data := e.call(nil, http.MethodPost, controlapi.PathMFAWebAuthn, tok, controlapi.WebAuthnBegin{Register: register})
	if st != wantStatus {
		e.t.Fatalf("begin (register %v): %d %s, want %d", register, st, data, wantStatus)
	}
	var c ceremony
	if st != 200 {
		return c
	}
	mustJSON(e.t, data, &c.WebAuthnCeremony)
	i := strings.Index(c.URL, "#")
	if i < 0 || !strings.HasPrefix(c.URL, e.url+controlapi.PathWebAuthnPage) {
		e.t.Fatalf("ceremony URL %q", c.URL)
	}
	c.secret = c.URL[i+1:]
	st, data = e.call(nil, http.MethodPost, controlapi.PathWebAuthnOptions, "", controlapi.WebAuthnSecret{Secret: c.secret})
	var opts controlapi.WebAuthnOptions
	if st != 200 || json.Unmarshal(data, &opts) != nil {
		e.t.Fatalf("options: %d %s", st, data)
	}
	var pk struct{ Challenge string }
	mustJSON(e.t, opts.PublicKey, &pk)
	c.challenge = pk.Challenge
	return c
}

func (e *testEnv) finishWebAuthn(secret string, cred json.RawMessage) (int, string) {
	e.t.Helper()
	st, data := e.call(nil, http.MethodPost, controlapi.PathWebAuthnFinish, "", controlapi.WebAuthnFinish{Secret: secret, Credential: cred})
	return st, string(data)
}

func (e *testEnv) ceremonyState(tok, id string) controlapi.WebAuthnCeremony {
	e.t.Helper()
	st, data := e.call(nil, http.MethodGet, controlapi.PathMFAWebAuthn+"/"+id, tok, nil)
	var c controlapi.WebAuthnCeremony
	if st != 200 || json.Unmarshal(data, &c) != nil {
		e.t.Fatalf("ceremony %s: %d %s", id, st, data)
	}
	return c
}

// auditCounts counts alice's mfa-* audit actions on kind.
func (e *testEnv) auditCounts(kind string) map[string]int {
	var audit ListResponse
	mustJSON(e.t, e.admin(http.MethodGet, "/api/v1/audit?limit=500", nil, 200), &audit)
	seen := map[string]int{}
	for _, it := range audit.Items {
		b, _ := json.Marshal(it)
		var a struct{ Action, Actor, Kind string }
		json.Unmarshal(b, &a)
		if strings.HasPrefix(a.Action, "mfa-") && a.Actor == "alice@example.com" && a.Kind == kind {
			seen[a.Action]++
		}
	}
	return seen
}

func TestWebAuthnCeremoniesSQLite(t *testing.T) {
	e, clk := newWebAuthnController(t, nil)
	testWebAuthnCeremonies(t, e, clk)
}

func TestWebAuthnCeremoniesPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	e, clk := newWebAuthnController(t, func(c *Config) { c.DatabaseURL = pg.NewDatabase(t) })
	testWebAuthnCeremonies(t, e, clk)
}

// testWebAuthnCeremonies: registration and assertion with a software
// authenticator step up exactly as TOTP does (session MFA time, token
// claims, audit), and every bad answer is refused by the library's
// verification with a clear error, changing nothing but the ceremony.
func testWebAuthnCeremonies(t *testing.T, e *testEnv, clk *fakeClock) {
	const rpID = "localhost"
	origin := e.url
	alice := e.login("alice@example.com", "correct horse")
	tok := alice.session.SessionToken
	// Assertion before any key: a clear 404.
	e.beginWebAuthn(tok, false, http.StatusNotFound)

	key := newSoftKey(t)
	reg := e.beginWebAuthn(tok, true, 200)
	if reg.Kind != controlapi.WebAuthnRegister || reg.State != controlapi.WebAuthnPending {
		t.Fatalf("begin: %+v", reg.WebAuthnCeremony)
	}
	if st, body := e.finishWebAuthn(reg.secret, key.register(t, rpID, origin, reg.challenge)); st != 200 {
		t.Fatalf("register: %d %s", st, body)
	}
	got := e.ceremonyState(tok, reg.ID)
	if got.State != controlapi.WebAuthnDone || got.MFA == nil || got.MFA.SecurityKeys != 1 || !got.MFA.Enrolled || !got.MFA.LastAt.Equal(clk.Now()) {
		t.Fatalf("after register: %+v %+v", got, got.MFA)
	}
	// The registration's secret is spent.
	if st, body := e.finishWebAuthn(reg.secret, key.register(t, rpID, origin, reg.challenge)); st != http.StatusConflict || !strings.Contains(body, "finished") {
		t.Fatalf("register replayed: %d %s", st, body)
	}
	s, m, err := e.c.session(tok)
	if err != nil {
		t.Fatal(err)
	}
	if mfaAt, amr, _, _ := m.accessClaims(s, "corp", clk.Now()); mfaAt != clk.Now().Unix() || len(amr) != 1 || amr[0] != amrHWK {
		t.Fatalf("claims after register: %d %v", mfaAt, amr)
	}

	// Later: step up with the key.
	clk.Add(2 * time.Hour)
	good := e.beginWebAuthn(tok, false, 200)
	if st, body := e.finishWebAuthn(good.secret, key.assert(t, rpID, origin, good.challenge)); st != 200 {
		t.Fatalf("assert: %d %s", st, body)
	}
	stepped := clk.Now()
	s, m, _ = e.c.session(tok)
	if !s.MFAAt.Equal(stepped) || s.MFAMethod != amrHWK {
		t.Fatalf("session after assert: %v %q", s.MFAAt, s.MFAMethod)
	}
	counter := m.access.webauthn[s.PrincipalID][0].Credential.Authenticator.SignCount
	if counter != key.count {
		t.Fatalf("stored sign count %d, want %d", counter, key.count)
	}

	// Bad answers. Each is refused with a clear error and changes neither
	// the session's step-up nor the stored key.
	clk.Add(time.Hour)
	other := newSoftKey(t)
	forged := func(c ceremony) json.RawMessage {
		var v map[string]any
		json.Unmarshal(key.assert(t, rpID, origin, c.challenge), &v)
		sig, _ := base64.RawURLEncoding.DecodeString(v["response"].(map[string]any)["signature"].(string))
		sig[len(sig)-1] ^= 0x55
		v["response"].(map[string]any)["signature"] = b64u(sig)
		b, _ := json.Marshal(v)
		return b
	}
	replayed := key.assert(t, rpID, origin, good.challenge)
	cases := []struct {
		name string
		cred func(c ceremony) json.RawMessage
		want string
	}{
		{"forged signature", forged, "signature"},
		{"wrong challenge", func(c ceremony) json.RawMessage {
			return key.assert(t, rpID, origin, b64u(bytes.Repeat([]byte{7}, 32)))
		}, "challenge"},
		{"replayed challenge", func(ceremony) json.RawMessage { return replayed }, "challenge"},
		{"unknown credential", func(c ceremony) json.RawMessage { return other.assert(t, rpID, origin, c.challenge) }, "credential"},
		{"wrong origin", func(c ceremony) json.RawMessage { return key.assert(t, rpID, "https://evil.example", c.challenge) }, "origin"},
	}
	for _, tc := range cases {
		c := e.beginWebAuthn(tok, false, 200)
		st, body := e.finishWebAuthn(c.secret, tc.cred(c))
		t.Logf("%s: %d %s", tc.name, st, strings.TrimSpace(body))
		if st != http.StatusForbidden || !strings.Contains(body, "WebAuthn verification failed") || !strings.Contains(strings.ToLower(body), tc.want) {
			t.Errorf("%s: %d %s", tc.name, st, body)
		}
		if cs := e.ceremonyState(tok, c.ID); cs.State != controlapi.WebAuthnFailed || cs.Error == "" {
			t.Errorf("%s: ceremony %+v", tc.name, cs)
		}
		s, m, _ := e.c.session(tok)
		if !s.MFAAt.Equal(stepped) {
			t.Errorf("%s: step-up moved to %v", tc.name, s.MFAAt)
		}
		if k := m.access.webauthn[s.PrincipalID]; len(k) != 1 || k[0].Credential.Authenticator.SignCount != counter {
			t.Errorf("%s: keys changed: %+v", tc.name, k)
		}
		// The ceremony is spent: a right answer afterwards is refused too.
		if st, _ := e.finishWebAuthn(c.secret, key.assert(t, rpID, origin, c.challenge)); st != http.StatusConflict {
			t.Errorf("%s: finish after failure: %d", tc.name, st)
		}
	}
	// Unknown secret, no credential.
	if st, body := e.finishWebAuthn("wan_nope", replayed); st != http.StatusNotFound || !strings.Contains(body, "unknown or finished") {
		t.Fatalf("unknown secret: %d %s", st, body)
	}
	// Five failures: the same limit as wrong TOTP codes.
	e.beginWebAuthn(tok, false, http.StatusTooManyRequests)
	clk.Add(mfaFailWindow + time.Second)
	last := e.beginWebAuthn(tok, false, 200)
	if st, body := e.finishWebAuthn(last.secret, key.assert(t, rpID, origin, last.challenge)); st != 200 {
		t.Fatalf("assert after the window: %d %s", st, body)
	}
	// A copy of the key whose counter is behind the stored one: refused as
	// a possible clone, the stored counter unchanged.
	clone := *key
	clone.count = 0
	c := e.beginWebAuthn(tok, false, 200)
	if st, body := e.finishWebAuthn(c.secret, clone.assert(t, rpID, origin, c.challenge)); st != http.StatusForbidden || !strings.Contains(body, "cloned") {
		t.Fatalf("cloned key: %d %s", st, body)
	}
	if _, m, _ := e.c.session(tok); m.access.webauthn[s.PrincipalID][0].Credential.Authenticator.SignCount != key.count {
		t.Fatal("a cloned key's counter was stored")
	}
	// A second key needs a recent step-up (it has one now), and the same
	// key cannot be enrolled twice (excluded, and refused by the store).
	clk.Add(mfaRemoveWindow + time.Minute)
	e.beginWebAuthn(tok, true, http.StatusForbidden)
	st, _ := e.call(nil, http.MethodPost, controlapi.PathMFAEnroll, tok, struct{}{})
	if st != http.StatusForbidden {
		t.Fatalf("TOTP enroll next to a key without step-up: %d", st)
	}
	c = e.beginWebAuthn(tok, false, 200)
	e.finishWebAuthn(c.secret, key.assert(t, rpID, origin, c.challenge))
	c = e.beginWebAuthn(tok, true, 200)
	if st, body := e.finishWebAuthn(c.secret, key.register(t, rpID, origin, c.challenge)); st != http.StatusConflict || !strings.Contains(body, "already enrolled") {
		t.Fatalf("same key twice: %d %s", st, body)
	}
	if seen := e.auditCounts(KindWebAuthn); seen["mfa-enroll"] != 1 || seen["mfa-confirm"] != 1 || seen["mfa-verify"] != 3 || seen["mfa-failed"] != 6 {
		t.Fatalf("audit: %v", seen)
	}
	// Another user's session cannot see alice's ceremony.
	bob := e.login("bob@example.com", "battery staple")
	if st, _ := e.call(nil, http.MethodGet, controlapi.PathMFAWebAuthn+"/"+c.ID, bob.session.SessionToken, nil); st != http.StatusNotFound {
		t.Fatalf("bob reads alice's ceremony: %d", st)
	}
	// Removal (recent step-up) leaves no key; a ceremony begun before it
	// cannot bring the key back.
	pending := e.beginWebAuthn(tok, false, 200)
	if st, data := e.call(nil, http.MethodPost, controlapi.PathMFAWebAuthn+"/remove", tok, struct{}{}); st != http.StatusNoContent {
		t.Fatalf("remove: %d %s", st, data)
	}
	if st, body := e.finishWebAuthn(pending.secret, key.assert(t, rpID, origin, pending.challenge)); st != http.StatusForbidden {
		t.Fatalf("assert with a removed key: %d %s", st, body)
	}
	if _, m, _ := e.c.session(tok); len(m.access.webauthn[s.PrincipalID]) != 0 {
		t.Fatal("a removed key came back")
	}
	if st, data := e.call(nil, http.MethodGet, controlapi.PathMFA, tok, nil); st != 200 || strings.Contains(string(data), "security_keys") {
		t.Fatalf("status after remove: %d %s", st, data)
	}
}

// TestWebAuthnNeedsAHostName: a controller whose public URL is an IP
// address says why it cannot offer WebAuthn.
func TestWebAuthnNeedsAHostName(t *testing.T) {
	e, _ := newAccessController(t)
	alice := e.login("alice@example.com", "correct horse")
	st, data := e.call(nil, http.MethodPost, controlapi.PathMFAWebAuthn, alice.session.SessionToken, controlapi.WebAuthnBegin{Register: true})
	if st != http.StatusNotImplemented || !strings.Contains(string(data), "IP address 127.0.0.1") {
		t.Fatalf("begin on an IP URL: %d %s", st, data)
	}
}

// TestWebAuthnPageHeaders: the page and its script come with a CSP that
// allows no inline script, and the page has none.
func TestWebAuthnPageHeaders(t *testing.T) {
	e, _ := newWebAuthnController(t, nil)
	for _, p := range []string{"", "webauthn.js", "style.css"} {
		resp, err := e.client(nil).Get(e.url + controlapi.PathWebAuthnPage + p)
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		body.ReadFrom(resp.Body)
		resp.Body.Close()
		csp := resp.Header.Get("Content-Security-Policy")
		if resp.StatusCode != 200 || !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
			t.Fatalf("%q: %d CSP %q", p, resp.StatusCode, csp)
		}
		if p == "" && (strings.Contains(body.String(), "<script>") || !strings.Contains(body.String(), `src="webauthn.js"`)) {
			t.Fatalf("page: %s", body.String())
		}
	}
}
