package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/traversal"
)

// traversalDialer adapts traversal.Dialer (ICE-style direct paths, TURN
// relays over UDP or TLS, migration to a direct path) to Dialer.
type traversalDialer struct{ t *traversal.Dialer }

func (a traversalDialer) Dial(ctx context.Context, c controlapi.ConnectorInfo, tlsConf *tls.Config, quicConf *quic.Config) (*quic.Conn, PathInfo, error) {
	conn, p, err := a.t.Dial(ctx, c, tlsConf, quicConf)
	if err != nil {
		return nil, PathInfo{}, err
	}
	return conn, PathInfo{Path: p.Path, Transport: p.Transport, RemoteAddr: p.RemoteAddr}, nil
}

// newTraversalDialer builds the default dialer: relays and credentials come
// from the current policy and session.
func (d *Daemon) newTraversalDialer() (*traversal.Dialer, error) {
	return traversal.NewDialer(traversal.DialerConfig{
		Relays:          d.currentRelays,
		TURNCredentials: d.turnCredentials,
		ConnectionToken: d.signalingToken,
		OnPathChange: func(connectorID string, p traversal.PathInfo) {
			if pl := d.currentPool(); pl != nil {
				pl.setPath(connectorID, PathInfo{Path: p.Path, Transport: p.Transport, RemoteAddr: p.RemoteAddr})
			}
		},
		Logger: d.log,
	})
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

// currentRelays returns the relays of the current policy without taking
// d.mu: the dial that asks runs in a pool goroutine that pool.close waits
// for while d.mu is held (sign-out after the session ended).
func (d *Daemon) currentRelays() []controlapi.RelayInfo {
	if r := d.relays.Load(); r != nil {
		return *r
	}
	return nil
}

// turnCredentials returns short-lived TURN credentials for the relays
// (PathTURNCredentials with the session). They are reused until two minutes
// before they expire: a relayed connection that must allocate again (the
// client roamed, the relay restarted) does not wait for the controller,
// which the new network may not reach yet.
func (d *Daemon) turnCredentials(ctx context.Context) (controlapi.TURNCredentials, error) {
	d.mu.Lock()
	cc := d.ctl
	d.mu.Unlock()
	if cc == nil {
		return controlapi.TURNCredentials{}, ErrNotSignedIn
	}
	if c := d.turnCache.Load(); c != nil && c.cc == cc && time.Until(c.creds.ExpiresAt) > turnMinLife {
		return c.creds, nil
	}
	var out controlapi.TURNCredentials
	if err := cc.do(ctx, http.MethodGet, controlapi.PathTURNCredentials, nil, &out, 15*time.Second); err != nil {
		return out, fmt.Errorf("TURN credentials: %w", err)
	}
	if out.Username == "" || out.Password == "" {
		return out, fmt.Errorf("TURN credentials: %w: the answer holds no credential", ErrControllerRefused)
	}
	d.turnCache.Store(&cachedTURN{cc: cc, creds: out})
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

// signalingToken returns a Connection Token for connector id, to present to
// a relay's signaling service (which checks its signature, audience and key
// binding) and, through it, to the connector. The token the connection was
// dialed with is reused while it is valid: a path repair after roaming or a
// relay restart must not wait for the controller, which may be unreachable
// from the new network (or down: fail static) or reached only over a
// connection that died with the old address.
func (d *Daemon) signalingToken(ctx context.Context, id string) (string, error) {
	d.mu.Lock()
	sess := d.sess
	d.mu.Unlock()
	if sess == nil {
		return "", ErrNotSignedIn
	}
	if v, ok := d.sigTokens.Load(id); ok {
		ct := v.(cachedToken)
		if ct.device == sess.DeviceID && time.Until(ct.exp) > signalingMinLife {
			return ct.token, nil
		}
	}
	info, ok := d.connectorInfo(id)
	if !ok {
		return "", fmt.Errorf("connector %s is not in the policy", id)
	}
	tok, _, err := d.connectionToken(ctx, info)
	return tok, err
}

func (d *Daemon) connectorInfo(id string) (controlapi.ConnectorInfo, bool) {
	for _, cs := range d.table.Load().connectors {
		for _, c := range cs {
			if c.ID == id {
				return c, true
			}
		}
	}
	return controlapi.ConnectorInfo{}, false
}
