package client

import (
	"context"
	"crypto/tls"

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
		TURNCredentials: d.creds.TURNCredentials,
		ConnectionToken: d.creds.SignalingToken,
		OnPathChange: func(connectorID string, p traversal.PathInfo) {
			if pl := d.currentPool(); pl != nil {
				pl.setPath(connectorID, PathInfo{Path: p.Path, Transport: p.Transport, RemoteAddr: p.RemoteAddr})
			}
		},
		Logger: d.log,
	})
}

// currentRelays returns the relays of the applied policy without taking
// d.mu: the dial that asks runs in a pool goroutine that pool.close waits
// for while d.mu is held (sign-out after the session ended).
func (d *Daemon) currentRelays() []controlapi.RelayInfo {
	if r := d.relays.Load(); r != nil {
		return *r
	}
	return nil
}
