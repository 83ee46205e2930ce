package connector

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/traversal"
)

// ClientCertificate returns the connector's enrolled credential (issued by
// the deployment CA, CN "connector:<id>") as a TLS client certificate. It
// authenticates the connector to the controller and to relays' signaling
// service; after a renewal it returns the new credential.
func (c *Connector) ClientCertificate() (*tls.Certificate, error) {
	st := c.state.Load()
	if st == nil || st.cert == nil || st.key == nil {
		return nil, ErrNotEnrolled
	}
	cert := st.tlsCertificate()
	return &cert, nil
}

// newTraversalAgent builds the NAT-traversal agent on the connector's QUIC
// socket: it keeps a signaling link to every relay of the policy, learns the
// connector's server-reflexive addresses (added to heartbeats) and answers
// clients' offers by punching towards their candidates.
func (c *Connector) newTraversalAgent() (*traversal.ConnectorAgent, error) {
	a, err := traversal.NewConnectorAgent(traversal.ConnectorAgentConfig{
		Transport:     c.tr,
		Certificate:   c.ClientCertificate,
		AdvertiseAddr: c.AddAdvertisedAddr,
		WithdrawAddr:  c.RemoveAdvertisedAddr,
		VerifyOffer:   c.verifyOffer,
		// A network that blocks UDP: the agent allocates on a relay over
		// TLS and the connector serves QUIC on that allocation too.
		TURNCredentials: c.turnCredentials,
		Serve:           c.serveRelayed,
		Logger:          c.log,
	})
	if err != nil {
		return nil, fmt.Errorf("NAT traversal agent: %w", err)
	}
	return a, nil
}

// turnCredentials asks the controller for TURN credentials of this
// connector (mTLS), used only when its own network blocks UDP.
func (c *Connector) turnCredentials(ctx context.Context) (controlapi.TURNCredentials, error) {
	var out controlapi.TURNCredentials
	if err := c.ctl.api.Call(ctx, http.MethodPost, controlapi.PathTURNCredentials, struct{}{}, &out); err != nil {
		return out, fmt.Errorf("TURN credentials: %w", err)
	}
	return out, nil
}

// serveRelayed runs the connector's QUIC server on a transport over a relay
// allocation, until that transport closes.
func (c *Connector) serveRelayed(tr *quic.Transport) {
	c.admit.install(tr)
	ln, err := tr.Listen(c.TLSConfig(), c.QUICConfig())
	if err != nil {
		c.log.Warn("QUIC server on a relayed transport", "err", err)
		return
	}
	go func() {
		if err := c.ServeListener(context.Background(), ln); err != nil && !errors.Is(err, quic.ErrTransportClosed) {
			c.log.Debug("relayed QUIC server ended", "err", err)
		}
	}()
}

// verifyOffer checks the Connection Token a relay forwards with a client's
// offer, before the connector sends anything towards that client: signature
// and issuer under the current policy, audience = this connector, expiry, and
// a device that is not revoked. The key binding and certificate digest are
// checked again on the QUIC handshake.
func (c *Connector) verifyOffer(tok string) error {
	p := c.policy.Load()
	if p == nil {
		return ErrNoPolicy
	}
	cl, err := p.tokenVerifier().Verify(tok, c.ID())
	if err != nil {
		cl, err = c.verifyExpired(p, tok, c.ID(), err)
	}
	if err != nil {
		c.met.handshakeFail.WithLabelValues("offer: " + tokenFailReason(err)).Inc()
		return fmt.Errorf("offer token: %w", err)
	}
	if p.revoked[cl.Device] {
		c.met.handshakeFail.WithLabelValues("offer: revoked").Inc()
		return fmt.Errorf("offer token: %w", ErrRevoked)
	}
	if !c.certs.serving(cl.ConnectorCertSHA256) {
		c.met.handshakeFail.WithLabelValues("offer: " + tokenFailReason(ErrWrongDigest)).Inc()
		return fmt.Errorf("offer token: %w", ErrWrongDigest)
	}
	return nil
}

// setRelays hands the relays of a policy snapshot to the traversal agent.
func (c *Connector) setRelays(relays []controlapi.RelayInfo) {
	if c.agent != nil {
		c.agent.SetRelays(relays)
	}
}

// RelayLinks reports, per relay id, whether the connector's signaling link
// to that relay is up.
func (c *Connector) RelayLinks() map[string]bool {
	if c.agent == nil {
		return map[string]bool{}
	}
	return c.agent.Connected()
}

// ReflexiveAddrs returns the server-reflexive addresses of the QUIC socket
// learned from STUN on the relays.
func (c *Connector) ReflexiveAddrs() []string {
	if c.agent == nil {
		return nil
	}
	return c.agent.ReflexiveAddrs()
}

// runTraversal runs the agent until ctx ends.
func (c *Connector) runTraversal(ctx context.Context) error {
	if c.agent == nil {
		<-ctx.Done()
		return nil
	}
	return c.agent.Run(ctx)
}
