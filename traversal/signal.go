package traversal

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/pki"
	"postern.dev/postern/traversal/sigwire"
)

// relayServerName is the name in relays' self-signed certificates; they are
// pinned by digest, so it is informational.
const relayServerName = "postern-relay"

// relayTLSConfig pins the relay's TLS certificate and presents cert.
func relayTLSConfig(r controlapi.RelayInfo, alpn string, cert *tls.Certificate) (*tls.Config, error) {
	if r.TLSCertSHA256 == "" {
		return nil, fmt.Errorf("%w: relay %s (%s)", ErrUnpinnedRelay, r.Name, r.ID)
	}
	want := []string{r.TLSCertSHA256}
	conf := pki.PinnedPeerConfig(func() []string { return want }, relayServerName, []string{alpn})
	if cert != nil {
		c := *cert
		conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	return conf, nil
}

// dialRelayTLS opens a TLS connection to the relay's TLS listener.
func dialRelayTLS(ctx context.Context, r controlapi.RelayInfo, alpn string, cert *tls.Certificate) (*tls.Conn, error) {
	conf, err := relayTLSConfig(r, alpn, cert)
	if err != nil {
		return nil, err
	}
	d := &tls.Dialer{NetDialer: controlapi.NewNetDialer(5*time.Second, 15*time.Second), Config: conf}
	c, err := d.DialContext(ctx, "tcp", r.TLSAddr)
	if err != nil {
		return nil, fmt.Errorf("connect to relay %s at %s: %w", r.Name, r.TLSAddr, err)
	}
	tc := c.(*tls.Conn)
	if tc.ConnectionState().NegotiatedProtocol != alpn {
		tc.Close()
		return nil, fmt.Errorf("relay %s does not speak %s", r.TLSAddr, alpn)
	}
	return tc, nil
}

// dialSignal opens a signaling connection and completes the hello.
func dialSignal(ctx context.Context, r controlapi.RelayInfo, cert *tls.Certificate, hello *sigwire.Message) (*sigwire.Conn, *sigwire.Message, error) {
	tc, err := dialRelayTLS(ctx, r, sigwire.ALPNSignal, cert)
	if err != nil {
		return nil, nil, err
	}
	c := sigwire.NewConn(tc)
	if err := c.Write(hello); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("%w: hello to relay %s: %w", ErrSignaling, r.TLSAddr, err)
	}
	_ = tc.SetReadDeadline(time.Now().Add(10 * time.Second))
	w, err := c.Read()
	_ = tc.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("%w: relay %s: %w", ErrSignaling, r.TLSAddr, err)
	}
	if w.Type != sigwire.TypeWelcome {
		c.Close()
		return nil, nil, fmt.Errorf("%w: relay %s refused: %s", ErrSignaling, r.TLSAddr, w.Error)
	}
	return c, w, nil
}

// usableRelays keeps online relays with both addresses and a pinned certificate.
func usableRelays(rs []controlapi.RelayInfo) []controlapi.RelayInfo {
	var out []controlapi.RelayInfo
	for _, r := range rs {
		if r.Online && r.TLSAddr != "" && r.UDPAddr != "" && r.TLSCertSHA256 != "" {
			out = append(out, r)
		}
	}
	return out
}

// relays are the usable relays, their IPv4 literals rewritten to the
// network's NAT64 prefix when this host is IPv6-only (nat64.go).
func (d *Dialer) relays(ctx context.Context) []controlapi.RelayInfo {
	rs := usableRelays(d.cfg.Relays())
	for i := range rs {
		rs[i].UDPAddr = defaultNAT64.translate(ctx, rs[i].UDPAddr, true)
		rs[i].TLSAddr = defaultNAT64.translate(ctx, rs[i].TLSAddr, true)
	}
	return rs
}
