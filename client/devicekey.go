package client

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"postern.dev/postern/pki"
)

// revokedKeySuffix is appended to device.key when the controller refuses the
// key for good; the file is kept for the record, never used again.
const revokedKeySuffix = ".revoked"

// isRevokedDeviceKey reports whether a sign-in failed because an
// administrator revoked this device (the controller answers 403 "this device
// key was revoked ...").
func isRevokedDeviceKey(err error) bool {
	return errors.Is(err, ErrForbidden) && strings.Contains(err.Error(), "device key was revoked")
}

// rotateRevokedKey replaces a device key the controller revoked, so that a
// new sign-in (which needs the user's credentials, or the service key)
// enrolls this machine as a new device. It runs only while signed out and
// with the tunnel down, when nothing else reads the key. The old key is kept
// as device.key.revoked.
func (d *Daemon) rotateRevokedKey() (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sess != nil || d.up {
		return false, nil
	}
	p := d.state.path(deviceKeyFile)
	if err := os.Rename(p, p+revokedKeySuffix); err != nil {
		return false, fmt.Errorf("set the revoked device key aside: %w", err)
	}
	key, err := d.state.deviceKey()
	if err != nil {
		return false, err
	}
	cert, err := pki.SelfSigned(key, "device.postern.invalid", 10*365*24*time.Hour)
	if err != nil {
		return false, fmt.Errorf("device certificate: %w", err)
	}
	d.key, d.cert = key, cert
	d.jkt = pki.KeyThumbprint(key.Public().(ed25519.PublicKey))
	d.log.Warn("an administrator revoked this device; made a new device key", "revoked_key", p+revokedKeySuffix)
	return true, nil
}
