package ctoken

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	testIssuer = "https://controller.example"
	testAud    = "conn-1"
	testDigest = "aa00000000000000000000000000000000000000000000000000000000000011"
)

func newSigner(t testing.TB) (*Signer, *Verifier) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := &Signer{Issuer: testIssuer, KeyID: "k1", Key: priv}
	v := &Verifier{Issuer: testIssuer, Keys: NewKeySet(map[string]ed25519.PublicKey{"k1": pub})}
	return s, v
}

func goodClaims() Claims {
	return Claims{
		PrincipalKind:       "user",
		Device:              "dev-1",
		ConnectorCertSHA256: testDigest,
		Cnf:                 Confirmation{JKT: "thumb"},
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   "user-1",
			Audience:  jwt.ClaimStrings{testAud},
			ExpiresAt: jwt.NewNumericDate(time.Now().Add(5 * time.Minute)),
		},
	}
}

func TestIssueVerifyRoundTrip(t *testing.T) {
	s, v := newSigner(t)
	tok, err := s.Issue(goodClaims())
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(tok, testAud)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if c.Subject != "user-1" || c.Device != "dev-1" || c.ConnectorCertSHA256 != testDigest || c.Cnf.JKT != "thumb" || c.ID == "" {
		t.Fatalf("claims not carried: %+v", c)
	}
}

// segments splits a token and decodes its payload for tampering.
func reassemble(header, payload map[string]any, sig string) string {
	h, _ := json.Marshal(header)
	p, _ := json.Marshal(payload)
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p) + "." + sig
}

func decodePart(t *testing.T, s string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestVerifyRefuses(t *testing.T) {
	s, v := newSigner(t)
	good, err := s.Issue(goodClaims())
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(good, ".")
	pub, _ := v.Keys.Get("k1")

	hs256WithPublicKey := func() string {
		tk := jwt.NewWithClaims(jwt.SigningMethodHS256, goodClaims())
		tk.Header["kid"] = "k1"
		out, err := tk.SignedString([]byte(pub))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	algNone := func() string {
		h := decodePart(t, parts[0])
		h["alg"] = "none"
		return reassemble(h, decodePart(t, parts[1]), "")
	}
	tampered := func() string {
		p := decodePart(t, parts[1])
		p["sub"] = "admin"
		return reassemble(decodePart(t, parts[0]), p, parts[2])
	}
	unknownKid := func() string {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		o := &Signer{Issuer: testIssuer, KeyID: "k2", Key: priv}
		out, _ := o.Issue(goodClaims())
		return out
	}
	withClaims := func(mut func(*Claims)) string {
		c := goodClaims()
		mut(&c)
		out, err := s.Issue(c)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	wrongIssuer := func() string {
		o := *s
		o.Issuer = "https://evil.example"
		out, _ := o.Issue(goodClaims())
		return out
	}
	missingExp := func() string {
		c := goodClaims()
		c.ExpiresAt = nil
		tk := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
		tk.Header["kid"] = "k1"
		out, err := tk.SignedString(s.Key)
		if err != nil {
			t.Fatal(err)
		}
		// Issue would fill exp; craft by hand without it.
		p := decodePart(t, strings.Split(out, ".")[1])
		if _, ok := p["exp"]; ok {
			t.Fatal("exp present")
		}
		return out
	}

	cases := map[string]string{
		"alg none":              algNone(),
		"HS256 with public key": hs256WithPublicKey(),
		"wrong aud":             withClaims(func(c *Claims) { c.Audience = jwt.ClaimStrings{"conn-2"} }),
		"wrong iss":             wrongIssuer(),
		"expired":               withClaims(func(c *Claims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Minute)) }),
		"missing exp":           missingExp(),
		"tampered payload":      tampered(),
		"unknown kid":           unknownKid(),
		"missing cnf":           withClaims(func(c *Claims) { c.Cnf.JKT = "" }),
		"missing dev":           withClaims(func(c *Claims) { c.Device = "" }),
		"missing digest":        withClaims(func(c *Claims) { c.ConnectorCertSHA256 = "" }),
		"empty":                 "",
		"garbage":               "not.a.token",
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := v.Verify(tok, testAud); err == nil {
				t.Fatalf("accepted %s", name)
			}
		})
	}
}

func TestExpiryLeewayAtMost30s(t *testing.T) {
	s, v := newSigner(t)
	tok, _ := s.Issue(goodClaims())
	v.Now = func() time.Time { return time.Now().Add(5*time.Minute + 20*time.Second) }
	if _, err := v.Verify(tok, testAud); err != nil {
		t.Fatalf("within leeway refused: %v", err)
	}
	v.Now = func() time.Time { return time.Now().Add(5*time.Minute + 31*time.Second) }
	if _, err := v.Verify(tok, testAud); err == nil {
		t.Fatal("accepted beyond 30 s of leeway")
	}
}

func TestMegabyteOfDotsIsRefusedQuickly(t *testing.T) {
	_, v := newSigner(t)
	big := strings.Repeat(".", 1<<20)
	start := time.Now()
	_, err := v.Verify(big, testAud)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
	// Not a timing assertion on the machine's speed: the check happens before
	// parsing, so it cannot take long; a second is a generous guard.
	if d := time.Since(start); d > time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestJWKSRoundTrip(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	doc, _ := json.Marshal(JWKS{Keys: []JWK{PublicJWK("k9", pub)}})
	keys, err := ParseJWKS(doc)
	if err != nil {
		t.Fatal(err)
	}
	if !keys["k9"].Equal(pub) {
		t.Fatal("key mismatch")
	}
	if _, err := ParseJWKS([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"x","x":"!!"}]}`)); err == nil {
		t.Fatal("bad x accepted")
	}
	if _, err := ParseJWKS([]byte(`{`)); err == nil {
		t.Fatal("bad json accepted")
	}
}

func BenchmarkVerify(b *testing.B) {
	s, v := newSigner(b)
	tok, _ := s.Issue(goodClaims())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok, testAud); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIssue(b *testing.B) {
	s, _ := newSigner(b)
	c := goodClaims()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Issue(c); err != nil {
			b.Fatal(err)
		}
	}
}
