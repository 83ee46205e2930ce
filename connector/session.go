package connector

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/quic-go/quic-go"

	"postern.dev/postern/ctoken"
	"postern.dev/postern/pki"
	"postern.dev/postern/wire"
)

// Connection close codes.
const (
	codeNoError         = quic.ApplicationErrorCode(wire.CodeNoError)
	codeUnauthenticated = quic.ApplicationErrorCode(wire.CodeUnauthenticated)
	codeTokenExpired    = quic.ApplicationErrorCode(wire.CodeTokenExpired)
	codeRevoked         = quic.ApplicationErrorCode(wire.CodeRevoked)
	codeShutdown        = quic.ApplicationErrorCode(wire.CodeShutdown)
	codeProtocol        = quic.ApplicationErrorCode(wire.CodeProtocol)
)

// session is one client QUIC connection.
type session struct {
	c         *Connector
	conn      *quic.Conn
	log       *slog.Logger
	thumb     string // RFC 7638 thumbprint of the client's device key
	presented string // digest of the certificate this connection was served

	mu       sync.Mutex
	claims   *ctoken.Claims // nil until the first token is accepted
	expTimer *time.Timer
	flows    map[*flow]struct{}
	authDone chan struct{} // closed at the first token verdict
	authOnce sync.Once
	pending  atomic.Int64 // flows accepted before the first token verdict and still waiting for it
}

// maxPendingFlows bounds the flows a connection may have open before its
// token is verified (from the stream's arrival to the verdict).
const maxPendingFlows = 256

func (s *session) currentClaims() *ctoken.Claims {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claims
}

func newSession(c *Connector, conn *quic.Conn) *session {
	s := &session{
		c: c, conn: conn, flows: map[*flow]struct{}{}, authDone: make(chan struct{}),
		log: c.log.With("remote", conn.RemoteAddr().String()),
	}
	cs := conn.ConnectionState().TLS
	if len(cs.PeerCertificates) > 0 {
		s.thumb, _ = pki.CertKeyThumbprint(cs.PeerCertificates[0])
	}
	s.presented = c.certs.lookup(cs.ServerName).digest
	return s
}

func (s *session) close(code quic.ApplicationErrorCode, msg string) {
	s.conn.CloseWithError(code, msg)
}

// serve runs the connection: the first stream is the control stream, every
// later one a flow.
func (s *session) serve(ctx context.Context) {
	cctx := s.conn.Context()
	stop := context.AfterFunc(ctx, func() { s.close(codeShutdown, "connector shutting down") })
	defer stop()
	defer func() {
		s.mu.Lock()
		if s.expTimer != nil {
			s.expTimer.Stop()
		}
		s.mu.Unlock()
		s.authOnce.Do(func() { close(s.authDone) })
	}()

	actx, cancel := context.WithTimeout(cctx, authWait)
	ctrl, err := s.conn.AcceptStream(actx)
	cancel()
	if err != nil {
		s.c.met.handshakeFail.WithLabelValues("no control stream").Inc()
		s.close(codeUnauthenticated, "no control stream with a connection token")
		return
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.controlLoop(ctrl)
	}()
	for {
		st, err := s.conn.AcceptStream(cctx)
		if err != nil {
			break
		}
		// Before the first token verdict a connection holds at most
		// maxPendingFlows flows, counted from here: a stream over that is
		// reset at once, without a goroutine waiting for its header.
		preauth := s.currentClaims() == nil
		if preauth && s.pending.Add(1) > maxPendingFlows {
			s.pending.Add(-1)
			st.CancelRead(quic.StreamErrorCode(wire.CodeFlowRefused))
			st.CancelWrite(quic.StreamErrorCode(wire.CodeFlowRefused))
			s.c.met.refusals.WithLabelValues(wire.StatusUnauthenticated.String(), "too many flows before the token").Inc()
			continue
		}
		s.c.wg.Add(1)
		go func() {
			defer s.c.wg.Done()
			if !s.c.devFlows.acquire(s.thumb) {
				if preauth {
					s.pending.Add(-1)
				}
				s.refuseOverLimit(st)
				return
			}
			defer s.c.devFlows.release(s.thumb)
			s.handleFlow(st, preauth)
		}()
	}
	wg.Wait()
}

// controlLoop reads token frames: the first authenticates the connection,
// later ones extend it.
func (s *session) controlLoop(cs *quic.Stream) {
	first := true
	// The first token must arrive within authWait: a connection that
	// never sends one is closed, not kept alive by its keepalives.
	_ = cs.SetReadDeadline(time.Now().Add(authWait))
	for {
		kind, payload, err := wire.ReadFrame(cs)
		if err != nil {
			if isFrameError(err) {
				_ = wire.WriteStatus(cs, wire.StatusBadRequest, err.Error())
				s.c.met.handshakeFail.WithLabelValues("malformed token frame").Inc()
				s.closeAfterStatus(cs, codeProtocol, "malformed control frame")
				return
			}
			if first {
				why := "control stream closed before a token"
				if errors.Is(err, os.ErrDeadlineExceeded) {
					why = fmt.Sprintf("no connection token within %v", authWait)
				}
				s.c.met.handshakeFail.WithLabelValues("no token").Inc()
				s.close(codeUnauthenticated, why)
			} else if s.conn.Context().Err() == nil {
				s.close(codeNoError, "control stream closed")
			}
			return
		}
		if kind != wire.KindToken {
			_ = wire.WriteStatus(cs, wire.StatusBadRequest, "control stream carries token frames only")
			s.c.met.handshakeFail.WithLabelValues("malformed token frame").Inc()
			s.closeAfterStatus(cs, codeProtocol, "unexpected frame on the control stream")
			return
		}
		claims, err := s.verify(string(payload), first)
		if err != nil {
			reason := tokenFailReason(err)
			s.c.met.handshakeFail.WithLabelValues(reason).Inc()
			s.log.Info("connection token refused", "reason", reason, "err", err, "refresh", !first)
			_ = wire.WriteStatus(cs, wire.StatusUnauthenticated, err.Error())
			if first {
				s.authOnce.Do(func() { close(s.authDone) })
				s.closeAfterStatus(cs, codeUnauthenticated, "connection token refused: "+reason)
				return
			}
			continue // a refused refresh keeps the previous token until it expires
		}
		s.setAuth(claims)
		if first {
			admitted(s.conn)
			s.log.Info("client authenticated", "principal", claims.Subject, "device", claims.Device)
			s.authOnce.Do(func() { close(s.authDone) })
			first = false
			_ = cs.SetReadDeadline(time.Time{})
		}
		if err := wire.WriteStatus(cs, wire.StatusOK, ""); err != nil {
			return
		}
	}
}

// closeAfterStatus lets the client read the status just written, then closes.
func (s *session) closeAfterStatus(cs *quic.Stream, code quic.ApplicationErrorCode, msg string) {
	cs.Close()
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-s.conn.Context().Done():
	case <-t.C:
	}
	s.close(code, msg)
}

func isFrameError(err error) bool {
	return errors.Is(err, wire.ErrVersion) || errors.Is(err, wire.ErrKind) ||
		errors.Is(err, wire.ErrTooLarge) || errors.Is(err, wire.ErrMalformed) ||
		errors.Is(err, io.ErrUnexpectedEOF)
}

// verify checks a Connection Token for this connection.
func (s *session) verify(tok string, first bool) (*ctoken.Claims, error) {
	p := s.c.policy.Load()
	if p == nil {
		return nil, ErrNoPolicy
	}
	cl, err := p.tokenVerifier().Verify(tok, s.c.ID())
	if err != nil {
		if cl, err = s.c.verifyExpired(p, tok, s.c.ID(), err); err != nil {
			return nil, err
		}
	}
	if s.thumb == "" || subtle.ConstantTimeCompare([]byte(cl.Cnf.JKT), []byte(s.thumb)) != 1 {
		return nil, ErrWrongBinding
	}
	if first {
		// The token must name the certificate this connection was served.
		if !pki.DigestEqual(cl.ConnectorCertSHA256, s.presented) || !s.c.certs.serving(cl.ConnectorCertSHA256) {
			return nil, ErrWrongDigest
		}
	} else {
		// A refresh may already name the certificate that replaced it.
		if !pki.DigestEqual(cl.ConnectorCertSHA256, s.presented) && !s.c.certs.serving(cl.ConnectorCertSHA256) {
			return nil, ErrWrongDigest
		}
		s.mu.Lock()
		old := s.claims
		s.mu.Unlock()
		if old == nil || old.Subject != cl.Subject || old.Device != cl.Device {
			return nil, ErrPrincipalChanged
		}
	}
	if p.revoked[cl.Device] {
		return nil, ErrRevoked
	}
	return cl, nil
}

func tokenFailReason(err error) string {
	switch {
	case errors.Is(err, ErrNoPolicy):
		return "no policy"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, ctoken.ErrUnknownKey), errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "bad signature"
	case errors.Is(err, ctoken.ErrTooLarge):
		return "too large"
	case errors.Is(err, ErrWrongDigest):
		return "wrong certificate digest"
	case errors.Is(err, ErrWrongBinding):
		return "wrong device key"
	case errors.Is(err, ErrRevoked):
		return "revoked"
	case errors.Is(err, ErrPrincipalChanged):
		return "principal changed"
	}
	return "invalid token"
}

// setAuth installs accepted claims and closes the connection at their expiry
// unless a later token extends it.
func (s *session) setAuth(cl *ctoken.Claims) {
	until := time.Until(cl.ExpiresAt.Time)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.claims = cl
	if s.expTimer == nil {
		s.expTimer = time.AfterFunc(until, s.onTokenExpiry)
	} else {
		s.expTimer.Reset(until)
	}
}

// waitAuth waits for the first token verdict and returns the claims, or nil.
func (s *session) waitAuth() *ctoken.Claims {
	t := time.NewTimer(authWait)
	defer t.Stop()
	select {
	case <-s.authDone:
	case <-t.C:
	case <-s.conn.Context().Done():
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claims
}

func (s *session) addFlow(f *flow) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn.Context().Err() != nil {
		return false
	}
	s.flows[f] = struct{}{}
	return true
}

func (s *session) removeFlow(f *flow) {
	s.mu.Lock()
	delete(s.flows, f)
	s.mu.Unlock()
}

// enforce applies a new policy to this connection.
func (s *session) enforce(p *compiledPolicy) {
	s.mu.Lock()
	cl := s.claims
	flows := make([]*flow, 0, len(s.flows))
	for f := range s.flows {
		flows = append(flows, f)
	}
	s.mu.Unlock()
	if cl == nil {
		return
	}
	if p.revoked[cl.Device] {
		s.log.Info("closing connection of revoked device", "device", cl.Device)
		s.close(codeRevoked, "device revoked")
		return
	}
	for _, f := range flows {
		if d := p.authorize(cl, f.hdr, s.c.now(), true); d.status != wire.StatusOK {
			s.log.Info("closing flow no longer allowed", "resource", f.hdr.ResourceID, "dst", f.hdr.Destination, "reason", d.reason)
			f.kill(resultPolicy)
		}
	}
}
