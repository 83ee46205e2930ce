package controlapi_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/pki"
)

// enrollServer is a controller that answers PathEnrollConnector for secret
// and presents its CA in its TLS chain, as postern-controller does.
func enrollServer(t *testing.T, secret string) (*httptest.Server, *pki.CA, *controlapi.EnrollRequest) {
	t.Helper()
	ca, err := pki.NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	got := &controlapi.EnrollRequest{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != controlapi.PathEnrollConnector || json.NewDecoder(r.Body).Decode(got) != nil || got.Secret != secret {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(controlapi.Error{Error: "bad enrollment secret"})
			return
		}
		_ = json.NewEncoder(w).Encode(controlapi.EnrollResponse{ID: "c-1", Name: "corp-a"})
	}))
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, err := ca.IssueServer([]string{"127.0.0.1"}, key.Public(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw, ca.Cert.Raw}, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, ca, got
}

// TestEnrollPinsTheCAAndSendsTheKey: Enroll trusts the controller only
// through the token's CA fingerprint, sends the secret, the public key (as
// PEM) and the hostname, and returns the answer with the pinned CA; a wrong
// fingerprint stops it before any request, a refused secret is a
// StatusError, and a URL that is not https is a bad token.
func TestEnrollPinsTheCAAndSendsTheKey(t *testing.T) {
	srv, ca, got := enrollServer(t, "s3cret")
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	tok := controlapi.EnrollmentToken{Kind: "connector", ControllerURL: srv.URL, CAFingerprint: ca.Fingerprint(), Secret: "s3cret"}
	ctx := context.Background()
	resp, pinned, err := tok.Enroll(ctx, controlapi.PathEnrollConnector, pub, "host-1", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ID != "c-1" || !pinned.Equal(ca.Cert) || got.Hostname != "host-1" || got.Version == "" {
		t.Fatalf("answer %+v, CA %v, request %+v", resp, pinned.Subject, got)
	}
	blk, _ := pem.Decode([]byte(got.PublicKeyPEM))
	if blk == nil {
		t.Fatalf("public key %q is not PEM", got.PublicKeyPEM)
	}
	if sent, err := x509.ParsePKIXPublicKey(blk.Bytes); err != nil || !pub.Equal(sent) {
		t.Fatalf("sent public key %v (%v), want the one given", sent, err)
	}

	other, _ := pki.NewCA("other CA")
	wrongCA := tok
	wrongCA.CAFingerprint = other.Fingerprint()
	*got = controlapi.EnrollRequest{}
	if _, _, err := wrongCA.Enroll(ctx, controlapi.PathEnrollConnector, pub, "", 5*time.Second); !errors.Is(err, pki.ErrDigestMismatch) || got.Secret != "" {
		t.Fatalf("wrong CA fingerprint: %v (request %+v), want ErrDigestMismatch before any request", err, got)
	}
	wrongSecret := tok
	wrongSecret.Secret = "nope"
	var se *controlapi.StatusError
	if _, _, err := wrongSecret.Enroll(ctx, controlapi.PathEnrollConnector, pub, "", 5*time.Second); !errors.As(err, &se) || se.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong secret: %v, want a 401 StatusError", err)
	}
	plain := tok
	plain.ControllerURL = "http://127.0.0.1:1"
	if _, _, err := plain.Enroll(ctx, controlapi.PathEnrollConnector, pub, "", 5*time.Second); !errors.Is(err, controlapi.ErrBadEnrollmentToken) {
		t.Fatalf("http URL: %v, want ErrBadEnrollmentToken", err)
	}
}
