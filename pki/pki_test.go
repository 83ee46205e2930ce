package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
)

func TestThumbprintRFC7638Vector(t *testing.T) {
	// RFC 8037 appendix A.3: thumbprint of the example Ed25519 key.
	x := "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
	pub := mustB64(t, x)
	if got := KeyThumbprint(pub); got != "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k" {
		t.Fatalf("thumbprint %s", got)
	}
}

func TestCAIssueAndPin(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, err := ca.IssueServer([]string{"127.0.0.1", "controller.test"}, &key.PublicKey, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.Cert.Raw}, PrivateKey: key}
	addr := handshakeServer(t, cert)
	got, err := FetchCAByFingerprint(addr, "127.0.0.1", ca.Fingerprint(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(ca.Cert) {
		t.Fatal("wrong CA returned")
	}
	_, err = FetchCAByFingerprint(addr, "127.0.0.1", strings.Repeat("0", 64), 5*time.Second)
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("wrong fingerprint: err %v", err)
	}
	// PEM round trips.
	if c, err := ParseCertPEM(EncodeCertPEM(ca.Cert)); err != nil || !c.Equal(ca.Cert) {
		t.Fatal("cert PEM round trip")
	}
	kp, _ := EncodeKeyPEM(ca.Key)
	if _, err := ParseKeyPEM(kp); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseKeyPEM([]byte("junk")); err == nil {
		t.Fatal("junk key accepted")
	}
}

func TestPinnedPeerConfig(t *testing.T) {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	srv, err := SelfSigned(k, "conn", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	addr := handshakeServer(t, srv)
	dial := func(want string) error {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer conn.Close()
		c := tls.Client(conn, PinnedPeerConfig(func() []string { return []string{want} }, "conn", nil))
		return c.Handshake()
	}
	if err := dial(CertDigest(srv.Certificate[0])); err != nil {
		t.Fatalf("right digest refused: %v", err)
	}
	if err := dial(strings.Repeat("1", 64)); err == nil {
		t.Fatal("wrong digest accepted (MITM)")
	}
}

// handshakeServer serves TLS 1.3 with cert on a loopback port until the test
// ends, completing each handshake before closing; it returns the address.
func handshakeServer(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Serve(t, ln, func(c net.Conn) {
		_ = c.(*tls.Conn).Handshake()
		c.Close()
	})
	return ln.Addr().String()
}
