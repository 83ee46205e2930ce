package client

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSOCKSSecretFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), SOCKS5SecretName)
	c, err := loadOrCreateSOCKSSecret(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("created %s: %v mode %v, want 0600", path, err, fi.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	if string(b) != c.user+":"+c.pass+"\n" || len(c.pass) < 32 || c.user == "" {
		t.Fatalf("file %q, credentials %+v", b, c)
	}
	again, err := loadOrCreateSOCKSSecret(path)
	if err != nil || again != c {
		t.Fatalf("second start: %+v %v, want the same credentials", again, err)
	}
	if !c.check(c.user, c.pass) || c.check(c.user, c.pass+"x") || c.check("x", c.pass) || c.check("", "") {
		t.Fatal("check accepts wrong credentials or refuses right ones")
	}
	if other, _ := loadOrCreateSOCKSSecret(filepath.Join(t.TempDir(), SOCKS5SecretName)); other.pass == c.pass {
		t.Fatal("two daemons got the same password")
	}

	bad := map[string]string{
		"no colon":       "postern-only-a-user-name-here\n",
		"empty user":     ":aaaaaaaaaaaaaaaaaaaaaaaa\n",
		"short password": "postern:short\n",
		"two lines":      "postern:aaaaaaaaaaaaaaaaaaaa\nx:y\n",
	}
	for name, content := range bad {
		p := filepath.Join(t.TempDir(), SOCKS5SecretName)
		os.WriteFile(p, []byte(content), 0o600)
		if _, err := loadOrCreateSOCKSSecret(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: err %v, want an error naming the file", name, err)
		}
		if b, _ := os.ReadFile(p); string(b) != content {
			t.Errorf("%s: the file was changed to %q", name, b)
		}
	}
	p := filepath.Join(t.TempDir(), SOCKS5SecretName)
	os.WriteFile(p, []byte("me:a-password-of-my-own\n"), 0o644)
	if _, err := loadOrCreateSOCKSSecret(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable secret: err %v, want a refusal", err)
	}
	os.Chmod(p, 0o600)
	if c, err := loadOrCreateSOCKSSecret(p); err != nil || c.user != "me" || c.pass != "a-password-of-my-own" {
		t.Errorf("own credentials: %+v %v", c, err)
	}
}

// TestSOCKS5FrontendRefusesNoAuth: a started front-end turns away clients
// offering only "no authentication" and those with a wrong password.
func TestSOCKS5FrontendRefusesNoAuth(t *testing.T) {
	fe := NewSOCKS5Frontend("127.0.0.1:0")
	d := newTestDaemon(t, fe)
	if err := fe.Start(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	defer fe.Close()
	user, _ := fe.Credentials()
	cases := []struct {
		name        string
		hello, want []byte
	}{
		{"no auth", []byte{5, 1, 0}, []byte{5, 0xff}},
		{"wrong password", append(append([]byte{5, 1, 2, 1, byte(len(user))}, user...), append([]byte{16}, "0123456789abcdef"...)...), []byte{5, 2, 1, 1}},
	}
	for _, tc := range cases {
		c, err := net.Dial("tcp", fe.ListenAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(tc.hello)
		got, _ := io.ReadAll(c) // the proxy closes after refusing
		c.Close()
		if !bytes.Equal(got, tc.want) {
			t.Errorf("%s: reply %x, want %x", tc.name, got, tc.want)
		}
	}
	if _, code, err := socksConnect(fe, "127.0.0.1", 9); err != nil || code == 0 {
		t.Errorf("with the right credentials: code %d err %v, want a SOCKS reply (not signed in)", code, err)
	}
}
