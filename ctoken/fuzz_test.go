package ctoken

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// FuzzVerify feeds arbitrary strings to Verify: nothing panics, and only a
// token signed with the key set's key is ever accepted (the fuzzer cannot
// forge Ed25519, so any success is a bug).
func FuzzVerify(f *testing.F) {
	s, v := newSigner(f)
	tok, err := s.Issue(goodClaims())
	if err != nil {
		f.Fatal(err)
	}
	parts := strings.Split(tok, ".")
	f.Add(tok)
	f.Add(parts[0] + "." + parts[1] + ".")
	f.Add(parts[0] + "." + parts[1])
	f.Add("eyJhbGciOiJub25lIn0." + parts[1] + ".")
	f.Add(strings.Repeat("a", MaxTokenSize+1))
	f.Add("..")
	f.Fuzz(func(t *testing.T, token string) {
		c, err := v.Verify(token, testAud)
		if err == nil && token != tok {
			t.Fatalf("accepted a token that was not issued: %q -> %+v", token, c)
		}
		if (err == nil) != (c != nil) {
			t.Fatalf("Verify returned claims %v with error %v", c, err)
		}
	})
}

// FuzzVerifySigned signs arbitrary header and payload JSON with the real key,
// so the fuzzer explores everything after the signature check: whatever it
// builds, an accepted token has alg EdDSA, a known kid, the right iss and
// aud, an expiry in the future, and every required claim.
func FuzzVerifySigned(f *testing.F) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	v := &Verifier{Issuer: testIssuer, Keys: NewKeySet(map[string]ed25519.PublicKey{"k1": pub})}
	exp := time.Now().Add(time.Hour).Unix()
	good := map[string]any{"iss": testIssuer, "aud": testAud, "sub": "u1", "dev": "d1", "jti": "j1", "exp": exp,
		"ccs": testDigest, "cnf": map[string]any{"jkt": "t"}, "pk": "user"}
	enc := func(m map[string]any) string { b, _ := json.Marshal(m); return string(b) }
	f.Add(`{"alg":"EdDSA","kid":"k1","typ":"JWT"}`, enc(good))
	f.Add(`{"alg":"EdDSA","kid":"k2"}`, enc(good))
	f.Add(`{"alg":"none","kid":"k1"}`, enc(good))
	f.Add(`{"alg":"HS256","kid":"k1"}`, enc(good))
	f.Add(`{"alg":"EdDSA","kid":"k1","crit":["x"]}`, `{"iss":"`+testIssuer+`","aud":["a","`+testAud+`"],"exp":1e30}`)
	f.Add(`{"alg":"EdDSA","kid":"k1"}`, `{"iss":"`+testIssuer+`","aud":"`+testAud+`","exp":"tomorrow"}`)
	f.Fuzz(func(t *testing.T, header, payload string) {
		in := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
		tok := in + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(priv, []byte(in)))
		c, err := v.Verify(tok, testAud)
		if err != nil {
			return
		}
		var h map[string]any
		if json.Unmarshal([]byte(header), &h) != nil || h["alg"] != "EdDSA" || h["kid"] != "k1" {
			t.Fatalf("accepted header %s", header)
		}
		switch {
		case c.Issuer != testIssuer:
			t.Fatalf("accepted iss %q", c.Issuer)
		case !containsAud(c.Audience, testAud):
			t.Fatalf("accepted aud %v", c.Audience)
		case c.ExpiresAt == nil || c.ExpiresAt.Time.Before(time.Now().Add(-Leeway)):
			t.Fatalf("accepted exp %v", c.ExpiresAt)
		case c.Subject == "" || c.Device == "" || c.Cnf.JKT == "" || len(c.ConnectorCertSHA256) != 64 || c.ID == "":
			t.Fatalf("accepted incomplete claims %+v", c)
		}
	})
}

func containsAud(auds []string, want string) bool {
	for _, a := range auds {
		if a == want {
			return true
		}
	}
	return false
}

// FuzzParseJWKS: any document either fails or yields only 32-byte keys
// under non-empty kids.
func FuzzParseJWKS(f *testing.F) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	b, _ := json.Marshal(JWKS{Keys: []JWK{PublicJWK("k1", pub)}})
	f.Add(b)
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","x":"AA"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","kid":"a","n":"x","e":"AQAB"}]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := ParseJWKS(data)
		if err != nil {
			return
		}
		if len(keys) == 0 {
			t.Fatal("no error and no keys")
		}
		for kid, k := range keys {
			if kid == "" || len(k) != ed25519.PublicKeySize {
				t.Fatalf("key %q of %d bytes", kid, len(k))
			}
		}
	})
}
