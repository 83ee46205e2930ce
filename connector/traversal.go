package connector

import (
	"context"
	"crypto/tls"
	"fmt"

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
		Logger:        c.log,
	})
	if err != nil {
		return nil, fmt.Errorf("NAT traversal agent: %w", err)
	}
	return a, nil
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
