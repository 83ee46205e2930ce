package client

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"

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
		Relays: func() []controlapi.RelayInfo {
			d.mu.Lock()
			defer d.mu.Unlock()
			if d.pol == nil {
				return nil
			}
			return d.pol.Relays
		},
		TURNCredentials: func(ctx context.Context) (controlapi.TURNCredentials, error) {
			d.mu.Lock()
			cc := d.ctl
			d.mu.Unlock()
			var out controlapi.TURNCredentials
			if cc == nil {
				return out, ErrNotSignedIn
			}
			err := cc.do(ctx, http.MethodGet, controlapi.PathTURNCredentials, nil, &out, 0)
			return out, err
		},
		ConnectionToken: func(ctx context.Context, connectorID string) (string, error) {
			info, ok := d.connectorInfo(connectorID)
			if !ok {
				return "", fmt.Errorf("connector %s is not in the policy", connectorID)
			}
			tok, _, err := d.connectionToken(ctx, info)
			return tok, err
		},
		OnPathChange: func(connectorID string, p traversal.PathInfo) {
			if pl := d.currentPool(); pl != nil {
				pl.setPath(connectorID, PathInfo{Path: p.Path, Transport: p.Transport, RemoteAddr: p.RemoteAddr})
			}
		},
		Logger: d.log,
	})
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
