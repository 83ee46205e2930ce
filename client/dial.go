package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/traversal/udpgro"
)

// PathInfo describes how a QUIC connection to a connector is carried.
type PathInfo struct {
	Path       string // "direct" or "relay"
	Transport  string // "udp" or "tls"
	RemoteAddr string
}

// Dialer opens QUIC connections to connectors. The daemon's default is the
// traversal package's dialer (direct paths found by hole punching, relays
// from the policy; client/traversal.go); DirectDialer, which only dials the
// addresses a connector reports, serves Config.DirectOnly.
type Dialer interface {
	Dial(ctx context.Context, c controlapi.ConnectorInfo, tlsConf *tls.Config, quicConf *quic.Config) (*quic.Conn, PathInfo, error)
}

// DirectDialer dials the addresses a connector reports, happy-eyeballs style,
// from one shared quic.Transport on a plain *net.UDPConn (which keeps GSO and
// ECN).
type DirectDialer struct {
	tr *quic.Transport
	uc *net.UDPConn // the socket under tr
	// Stagger is the delay between attempts to successive addresses.
	Stagger time.Duration
}

// NewDirectDialer listens on laddr ("" means any address, any port).
func NewDirectDialer(laddr string) (*DirectDialer, error) {
	if laddr == "" {
		laddr = ":0"
	}
	ua, err := net.ResolveUDPAddr("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("resolve QUIC listen address %q: %w", laddr, err)
	}
	uc, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("listen UDP %s for QUIC: %w", laddr, err)
	}
	return &DirectDialer{tr: &quic.Transport{Conn: udpgro.Wrap(uc)}, uc: uc, Stagger: 250 * time.Millisecond}, nil
}

// Transport returns the shared QUIC transport (for STUN on the same socket).
func (d *DirectDialer) Transport() *quic.Transport { return d.tr }

// Close closes the transport and its socket.
func (d *DirectDialer) Close() error {
	err := d.tr.Close()
	if d.uc != nil {
		_ = d.uc.Close()
	}
	return err
}

// errNoAddrs is returned for a connector that reported no address.
var errNoAddrs = errors.New("connector reports no address")

// Dial tries every address of c, starting one attempt every Stagger, and
// returns the first connection that completes its handshake.
func (d *DirectDialer) Dial(ctx context.Context, c controlapi.ConnectorInfo, tlsConf *tls.Config, quicConf *quic.Config) (*quic.Conn, PathInfo, error) {
	var addrs []*net.UDPAddr
	for _, a := range c.Addrs {
		ua, err := net.ResolveUDPAddr("udp", a)
		if err != nil {
			continue
		}
		addrs = append(addrs, ua)
	}
	if len(addrs) == 0 {
		return nil, PathInfo{}, fmt.Errorf("dial connector %s: %w", c.Name, errNoAddrs)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		conn *quic.Conn
		addr *net.UDPAddr
		err  error
	}
	results := make(chan result, len(addrs))
	for i, a := range addrs {
		go func(i int, a *net.UDPAddr) {
			if i > 0 {
				t := time.NewTimer(time.Duration(i) * d.Stagger)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					results <- result{err: ctx.Err(), addr: a}
					return
				}
			}
			conn, err := d.tr.Dial(ctx, a, tlsConf.Clone(), quicConf.Clone())
			results <- result{conn: conn, addr: a, err: err}
		}(i, a)
	}
	var errs []error
	var won *quic.Conn
	var info PathInfo
	for range addrs {
		r := <-results
		if r.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.addr, r.err))
			continue
		}
		if won != nil {
			_ = r.conn.CloseWithError(0, "another address answered first")
			continue
		}
		won = r.conn
		info = PathInfo{Path: "direct", Transport: "udp", RemoteAddr: r.addr.String()}
		cancel()
	}
	if won == nil {
		return nil, PathInfo{}, fmt.Errorf("dial connector %s: %w", c.Name, errors.Join(errs...))
	}
	return won, info, nil
}
