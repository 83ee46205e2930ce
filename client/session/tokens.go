// The session's token source: Connection Tokens for connectors, verified
// before anything trusts them, and the relays' credentials.

package session

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/ctoken"
)

// ConnectionToken asks the controller for a Connection Token for connector
// c and verifies it (signature, issuer, audience, key binding, device)
// before anything trusts the certificate digest inside.
func (m *Manager) ConnectionToken(ctx context.Context, c controlapi.ConnectorInfo) (string, *ctoken.Claims, error) {
	m.mu.Lock()
	cc, issuer, info, jkt := m.ctl, m.issuer, m.info, m.jkt
	m.mu.Unlock()
	if cc == nil || info == nil {
		return "", nil, ErrNotSignedIn
	}
	resp, err := cc.connectionToken(ctx, c.ID)
	if err != nil {
		return "", nil, fmt.Errorf("connection token for connector %s: %w", c.Name, err)
	}
	v := &ctoken.Verifier{Issuer: issuer, Keys: m.keys}
	claims, err := v.Verify(resp.Token, c.ID)
	if err != nil {
		return "", nil, fmt.Errorf("%w: connector %s: %v", ErrTokenInvalid, c.Name, err)
	}
	if claims.Cnf.JKT != jkt {
		return "", nil, fmt.Errorf("%w: connector %s: %v", ErrTokenInvalid, c.Name, ctoken.ErrWrongBinding)
	}
	if claims.Device != info.DeviceID {
		return "", nil, fmt.Errorf("%w: connector %s: token names device %q, this is %q", ErrTokenInvalid, c.Name, claims.Device, info.DeviceID)
	}
	m.sigTokens.Store(c.ID, cachedToken{token: resp.Token, device: claims.Device, exp: claims.ExpiresAt.Time})
	return resp.Token, claims, nil
}

// Relays returns the relays of the current policy without taking the
// Manager's lock: the dial that asks runs in a pool goroutine that the
// daemon waits for while holding its own.
func (m *Manager) Relays() []controlapi.RelayInfo {
	if r := m.relays.Load(); r != nil {
		return *r
	}
	return nil
}

// cachedTURN is a TURN credential from the controller, kept for the session
// (controlClient) that fetched it.
type cachedTURN struct {
	cc    *controlClient
	creds controlapi.TURNCredentials
}

// turnMinLife is the validity a cached TURN credential must still have to
// be used for a new allocation.
const turnMinLife = 2 * time.Minute

// TURNCredentials returns short-lived TURN credentials for the relays
// (PathTURNCredentials with the session). They are reused until two minutes
// before they expire: a relayed connection that must allocate again (the
// client roamed, the relay restarted) does not wait for the controller,
// which the new network may not reach yet.
func (m *Manager) TURNCredentials(ctx context.Context) (controlapi.TURNCredentials, error) {
	m.mu.Lock()
	cc := m.ctl
	m.mu.Unlock()
	if cc == nil {
		return controlapi.TURNCredentials{}, ErrNotSignedIn
	}
	if c := m.turnCache.Load(); c != nil && c.cc == cc && time.Until(c.creds.ExpiresAt) > turnMinLife {
		return c.creds, nil
	}
	var out controlapi.TURNCredentials
	if err := cc.do(ctx, http.MethodGet, controlapi.PathTURNCredentials, nil, &out, 15*time.Second); err != nil {
		return out, fmt.Errorf("TURN credentials: %w", err)
	}
	if out.Username == "" || out.Password == "" {
		return out, fmt.Errorf("TURN credentials: %w: the answer holds no credential", ErrControllerRefused)
	}
	m.turnCache.Store(&cachedTURN{cc: cc, creds: out})
	return out, nil
}

// cachedToken is a verified Connection Token kept for relay signaling.
type cachedToken struct {
	token  string
	device string
	exp    time.Time
}

// signalingMinLife is the validity a cached token must still have to be
// presented to a relay again.
const signalingMinLife = 30 * time.Second

// SignalingToken returns a Connection Token for connector id, to present to
// a relay's signaling service (which checks its signature, audience and key
// binding) and, through it, to the connector. The token the connection was
// dialed with is reused while it is valid: a path repair after roaming or a
// relay restart must not wait for the controller, which may be unreachable
// from the new network (or down: fail static) or reached only over a
// connection that died with the old address.
func (m *Manager) SignalingToken(ctx context.Context, id string) (string, error) {
	m.mu.Lock()
	info, pol := m.info, m.pol
	m.mu.Unlock()
	if info == nil {
		return "", ErrNotSignedIn
	}
	if v, ok := m.sigTokens.Load(id); ok {
		ct := v.(cachedToken)
		if ct.device == info.DeviceID && time.Until(ct.exp) > signalingMinLife {
			return ct.token, nil
		}
	}
	var c controlapi.ConnectorInfo
	found := false
	if pol != nil {
		for _, ci := range pol.Connectors {
			if ci.ID == id {
				c, found = ci, true
				break
			}
		}
	}
	if !found {
		return "", fmt.Errorf("connector %s is not in the policy", id)
	}
	tok, _, err := m.ConnectionToken(ctx, c)
	return tok, err
}
