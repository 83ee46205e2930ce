package client

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"postern.dev/postern/internal/atomicfile"
)

// SOCKS5SecretName is the file in the state directory that holds the SOCKS5
// proxy's credentials, one line "user:password" (mode 0600, readable only by
// the account posternd runs as). posternd creates it on first use and keeps
// it across restarts, so browser and tool settings stay valid; delete it to
// get a new password at the next start.
const SOCKS5SecretName = "socks5.secret"

// minSOCKSPassword is the shortest password accepted from an edited file.
const minSOCKSPassword = 16

// socksCredentials are the username and password SOCKS5 clients must give.
type socksCredentials struct{ user, pass string }

// check compares in constant time (for equal lengths).
func (c socksCredentials) check(user, pass string) bool {
	u := subtle.ConstantTimeCompare([]byte(user), []byte(c.user))
	p := subtle.ConstantTimeCompare([]byte(pass), []byte(c.pass))
	return u&p == 1
}

// loadOrCreateSOCKSSecret reads the credentials from path, or creates the
// file with user "postern" and a random 192-bit password. A file that is
// malformed or readable by others is an error naming what is wrong; it is
// left as it is.
func loadOrCreateSOCKSSecret(path string) (socksCredentials, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		var r [24]byte
		if _, err := rand.Read(r[:]); err != nil {
			return socksCredentials{}, fmt.Errorf("SOCKS5 password: %w", err)
		}
		c := socksCredentials{user: "postern", pass: base64.RawURLEncoding.EncodeToString(r[:])}
		if err := atomicfile.Write(path, []byte(c.user+":"+c.pass+"\n"), 0o600); err != nil {
			return socksCredentials{}, fmt.Errorf("SOCKS5 credentials: %w", err)
		}
		return c, nil
	}
	if err != nil {
		return socksCredentials{}, fmt.Errorf("SOCKS5 credentials: %w", err)
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err != nil {
			return socksCredentials{}, fmt.Errorf("SOCKS5 credentials: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return socksCredentials{}, fmt.Errorf("SOCKS5 credentials file %s has mode %04o: other users could read the password; run chmod 600 %s (or delete it for a new one)", path, fi.Mode().Perm(), path)
		}
	}
	line := strings.TrimRight(string(b), "\r\n")
	user, pass, ok := strings.Cut(line, ":")
	switch {
	case !ok || strings.ContainsAny(line, "\r\n"):
		return socksCredentials{}, fmt.Errorf("SOCKS5 credentials file %s: want one line user:password", path)
	case user == "" || len(user) > 255:
		return socksCredentials{}, fmt.Errorf("SOCKS5 credentials file %s: the user name must be 1 to 255 bytes", path)
	case len(pass) < minSOCKSPassword || len(pass) > 255:
		return socksCredentials{}, fmt.Errorf("SOCKS5 credentials file %s: the password must be %d to 255 bytes", path, minSOCKSPassword)
	}
	return socksCredentials{user: user, pass: pass}, nil
}
