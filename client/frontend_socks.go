package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"

	"postern.dev/postern/client/socks5"
	"postern.dev/postern/localapi"
	"postern.dev/postern/wire"
)

// SOCKS5Frontend captures flows through a SOCKS5 proxy: no TUN, no root.
// Clients must authenticate with the username and password in SecretFile
// (RFC 1929): any other local user who can reach the port cannot use the
// signed-in user's access.
type SOCKS5Frontend struct {
	Addr string
	// SecretFile holds "user:password" (default: SOCKS5SecretName in the
	// daemon's state directory); created with mode 0600 if missing.
	SecretFile string

	creds  socksCredentials
	ln     net.Listener
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewSOCKS5Frontend returns a front-end listening on addr when started.
func NewSOCKS5Frontend(addr string) *SOCKS5Frontend { return &SOCKS5Frontend{Addr: addr} }

// Start implements Frontend.
func (f *SOCKS5Frontend) Start(ctx context.Context, d *Daemon) error {
	if f.SecretFile == "" {
		f.SecretFile = filepath.Join(d.cfg.StateDir, SOCKS5SecretName)
	}
	creds, err := loadOrCreateSOCKSSecret(f.SecretFile)
	if err != nil {
		return err
	}
	f.creds = creds
	ln, err := net.Listen("tcp", f.Addr)
	if err != nil {
		return fmt.Errorf("SOCKS5 listen %s: %w", f.Addr, err)
	}
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		d.log.Warn("SOCKS5 proxy listens on a non-loopback address: anyone who reaches it uses your access", "addr", ln.Addr())
	}
	f.ln = ln
	ctx, f.cancel = context.WithCancel(ctx)
	srv := &socks5.Server{Dialer: socksDialer{d}, Authenticate: creds.check, Reply: socksReply, Logger: d.log}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		if err := srv.Serve(ctx, ln); err != nil {
			d.log.Warn("SOCKS5 proxy stopped", "err", err)
		}
	}()
	d.log.Info("SOCKS5 proxy listening", "addr", ln.Addr(), "credentials", f.SecretFile)
	return nil
}

// ListenAddr returns the bound address (after Start).
func (f *SOCKS5Frontend) ListenAddr() net.Addr {
	if f.ln == nil {
		return nil
	}
	return f.ln.Addr()
}

// Credentials returns the username and password clients must give (after
// Start).
func (f *SOCKS5Frontend) Credentials() (user, password string) { return f.creds.user, f.creds.pass }

// Update implements Frontend; SOCKS5 needs nothing per policy.
func (f *SOCKS5Frontend) Update(*PolicyView) {}

// Names implements Frontend: SOCKS5 sees names directly.
func (f *SOCKS5Frontend) Names() NameMapper { return nil }

// Explain implements Frontend.
func (f *SOCKS5Frontend) Explain(context.Context, string) (localapi.DNSExplain, bool) {
	return localapi.DNSExplain{}, false
}

// Describe implements Frontend.
func (f *SOCKS5Frontend) Describe(s *localapi.Status) {
	if f.ln != nil {
		s.SOCKS5 = f.ln.Addr().String()
		s.SOCKS5Secret = f.SecretFile
	}
}

// Close implements Frontend.
func (f *SOCKS5Frontend) Close() error {
	if f.cancel != nil {
		f.cancel()
	}
	f.wg.Wait()
	return nil
}

type socksDialer struct{ d *Daemon }

func (s socksDialer) DialTCP(ctx context.Context, host string, port uint16) (net.Conn, error) {
	return s.d.DialTCP(ctx, host, port)
}

func (s socksDialer) DialUDP(ctx context.Context, host string, port uint16) (socks5.DatagramConn, error) {
	return s.d.DialUDP(ctx, host, port)
}

func socksReply(err error) byte {
	if errors.Is(err, ErrNoResource) || errors.Is(err, ErrPortNotAllowed) {
		return socks5.ReplyNotAllowed
	}
	switch flowStatus(err) {
	case wire.StatusDenied, wire.StatusUnauthenticated, wire.StatusMFARequired, wire.StatusPosture, wire.StatusApprovalRequired:
		return socks5.ReplyNotAllowed
	case wire.StatusRefused:
		return socks5.ReplyConnectionRefused
	case wire.StatusTimeout:
		return socks5.ReplyTTLExpired
	case wire.StatusUnreachable:
		if errors.Is(err, ErrNoConnector) {
			return socks5.ReplyNetworkUnreachable
		}
		return socks5.ReplyHostUnreachable
	}
	return socks5.ReplyGeneralFailure
}
