// Component API (mTLS): certificate renewal (POST controlapi.PathRenew),
// connector heartbeats (POST controlapi.PathConnectorHeartbeat), flow
// events (POST controlapi.PathConnectorEvents), relay registration (POST
// controlapi.PathRelayRegister) and TURN credentials for connectors and
// client devices (controlapi.PathTURNCredentials) and enrollment (POST
// controlapi.PathEnrollConnector, controlapi.PathEnrollRelay); the policy
// streams are in stream.go.

package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/adminapi"
)

// Components records what connectors and relays report. Their ids come
// from Server.Component.
type Components interface {
	// ConnectorHeartbeat records a connector's heartbeat (its certificate
	// digests already valid and lower-case) and answers it.
	ConnectorHeartbeat(ctx context.Context, id string, hb controlapi.Heartbeat) (controlapi.HeartbeatResponse, error)
	// StoreFlowEvents keeps a batch of a connector's flow events and notes
	// the resources they used.
	StoreFlowEvents(ctx context.Context, id string, events []controlapi.FlowEvent) error
	// RegisterRelay records a relay's addresses, certificate digest and
	// stats (already valid) and answers with what the relay serves with.
	RegisterRelay(ctx context.Context, id string, req controlapi.RelayRegister) (controlapi.RelayRegisterResponse, error)
	// Enroll redeems the enrollment token req.Secret for a component of
	// kind enrolling with key pub (pubPEM its canonical PEM; the request
	// already valid) and issues its first certificate. On failure it
	// returns the status to answer with (401 for a token refused).
	Enroll(ctx context.Context, kind string, req controlapi.EnrollRequest, pub any, pubPEM string) (controlapi.EnrollResponse, int, error)
	// RenewCredential issues component kind id a new client certificate
	// for key pub; pubPEM, when set, is the new key it enrolls with from now
	// on (recorded and audited).
	RenewCredential(ctx context.Context, kind, id string, pub any, pubPEM string) (controlapi.EnrollResponse, error)
	// TURNCredentials are TURN credentials for a component (principal
	// "connector:<id>").
	TURNCredentials(principal string) controlapi.TURNCredentials
}

// ErrNothingToRelay: no resource of a device's account is served by a
// connector, so it gets no TURN credentials (403).
var ErrNothingToRelay = errors.New("no resource of this account is served by a connector: nothing to relay to")

// maxEventBatch is the most flow events one POST may carry.
const maxEventBatch = 5000

func (s *Server) componentRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST "+controlapi.PathEnrollConnector, s.handleEnroll(adminapi.KindConnector))
	mux.HandleFunc("POST "+controlapi.PathEnrollRelay, s.handleEnroll(adminapi.KindRelay))
	mux.HandleFunc("POST "+controlapi.PathRenew, s.handleRenew)
	mux.HandleFunc("GET "+controlapi.PathTURNCredentials, s.handleTURN)
	mux.HandleFunc("POST "+controlapi.PathTURNCredentials, s.handleTURN)
	mux.HandleFunc("POST "+controlapi.PathConnectorHeartbeat, s.Component(adminapi.KindConnector, s.handleHeartbeat))
	mux.HandleFunc("POST "+controlapi.PathConnectorEvents, s.Component(adminapi.KindConnector, s.handleEvents))
	mux.HandleFunc("POST "+controlapi.PathRelayRegister, s.Component(adminapi.KindRelay, s.handleRelayRegister))
}

// ParsePublicKeyPEM accepts a PKIX Ed25519 or ECDSA public key (the
// public_key_pem of an enrollment or renewal) and returns it and its
// canonical PEM.
func ParsePublicKeyPEM(s string) (any, string, error) {
	b, _ := pem.Decode([]byte(s))
	if b == nil || b.Type != "PUBLIC KEY" {
		return nil, "", errors.New("public_key_pem: not a PEM \"PUBLIC KEY\" block")
	}
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, "", fmt.Errorf("public_key_pem: %w", err)
	}
	switch pub.(type) {
	case ed25519.PublicKey, *ecdsa.PublicKey:
	default:
		return nil, "", fmt.Errorf("public_key_pem: key type %T not allowed (Ed25519 or ECDSA)", pub)
	}
	der, _ := x509.MarshalPKIXPublicKey(pub)
	return pub, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

func validDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func validHostPort(s string) bool {
	host, port, err := net.SplitHostPort(s)
	return err == nil && host != "" && port != ""
}

// checkItems answers 400 unless the list field has lo to hi items (count
// says how many it needs), each of them valid (else: "field[i]: %q is not
// what").
func checkItems(w http.ResponseWriter, field string, items []string, lo, hi int, count string, valid func(string) bool, what string) bool {
	if len(items) < lo || len(items) > hi {
		WriteError(w, http.StatusBadRequest, "%s: %s", field, count)
		return false
	}
	for i, v := range items {
		if !valid(v) {
			WriteError(w, http.StatusBadRequest, "%s[%d]: %q is not %s", field, i, v, what)
			return false
		}
	}
	return true
}

// lowerASCII lower-cases the ASCII letters of a hex digest.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, ch := range b {
		if ch >= 'A' && ch <= 'Z' {
			b[i] = ch + 32
		}
	}
	return string(b)
}

func (s *Server) handleHeartbeat(w http.ResponseWriter, r *http.Request, id string) {
	var hb controlapi.Heartbeat
	if !DecodeJSON(w, r, &hb) {
		return
	}
	if !checkItems(w, "cert_sha256", hb.CertSHA256, 1, 8, "1 to 8 certificate digests required", validDigest, "a hex SHA-256 digest") ||
		!checkItems(w, "addrs", hb.Addrs, 0, 32, "at most 32", validHostPort, "host:port") {
		return
	}
	if len(hb.Version) > 64 {
		WriteError(w, http.StatusBadRequest, "version: too long")
		return
	}
	digests := make([]string, len(hb.CertSHA256))
	for i, d := range hb.CertSHA256 {
		digests[i] = lowerASCII(d)
	}
	hb.CertSHA256 = digests
	resp, err := s.core.ConnectorHeartbeat(r.Context(), id, hb)
	if err != nil {
		WriteError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	WriteJSON(w, http.StatusOK, resp)
}

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request, id string) {
	var fe controlapi.FlowEvents
	if !DecodeJSON(w, r, &fe) {
		return
	}
	if len(fe.Events) > maxEventBatch {
		WriteError(w, http.StatusBadRequest, "events: at most %d per batch, got %d", maxEventBatch, len(fe.Events))
		return
	}
	if err := s.core.StoreFlowEvents(r.Context(), id, fe.Events); err != nil {
		WriteError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleRelayRegister(w http.ResponseWriter, r *http.Request, id string) {
	var req controlapi.RelayRegister
	if !DecodeJSON(w, r, &req) {
		return
	}
	if req.UDPAddr != "" && !validHostPort(req.UDPAddr) {
		WriteError(w, http.StatusBadRequest, "udp_addr: %q is not ip:port", req.UDPAddr)
		return
	}
	if req.TLSAddr != "" && !validHostPort(req.TLSAddr) {
		WriteError(w, http.StatusBadRequest, "tls_addr: %q is not ip:port", req.TLSAddr)
		return
	}
	if req.PublicIP != "" && net.ParseIP(req.PublicIP) == nil {
		WriteError(w, http.StatusBadRequest, "public_ip: %q is not an IP address", req.PublicIP)
		return
	}
	if req.TLSCertSHA256 != "" && !validDigest(req.TLSCertSHA256) {
		WriteError(w, http.StatusBadRequest, "tls_cert_sha256: %q is not a hex SHA-256 digest", req.TLSCertSHA256)
		return
	}
	req.TLSCertSHA256 = lowerASCII(req.TLSCertSHA256)
	if req.UDPAddr == "" && req.TLSAddr == "" {
		WriteError(w, http.StatusBadRequest, "udp_addr or tls_addr: at least one is required")
		return
	}
	resp, err := s.core.RegisterRelay(r.Context(), id, req)
	if err != nil {
		WriteError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	WriteJSON(w, http.StatusOK, resp)
}

// handleEnroll redeems an enrollment token of a connector or relay (kind).
func (s *Server) handleEnroll(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req controlapi.EnrollRequest
		if !DecodeJSON(w, r, &req) {
			return
		}
		if req.Secret == "" {
			WriteError(w, http.StatusBadRequest, "secret: required")
			return
		}
		pub, pubPEM, err := ParsePublicKeyPEM(req.PublicKeyPEM)
		if err != nil {
			WriteError(w, http.StatusBadRequest, "%v", err)
			return
		}
		if len(req.Hostname) > 255 || len(req.Version) > 64 {
			WriteError(w, http.StatusBadRequest, "hostname or version: too long")
			return
		}
		resp, status, err := s.core.Enroll(r.Context(), kind, req, pub, pubPEM)
		if err != nil {
			s.log.Warn("enrollment refused", "kind", kind, "ip", ClientIP(r), "err", err)
			WriteError(w, status, "%v", err)
			return
		}
		s.log.Info("component enrolled", "kind", kind, "id", resp.ID, "name", resp.Name)
		WriteJSON(w, http.StatusOK, resp)
	}
}

func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request) {
	kind, id, err := s.core.ComponentIdentity(r)
	if err != nil {
		WriteError(w, http.StatusUnauthorized, "%v", err)
		return
	}
	var req controlapi.RenewRequest
	if !DecodeJSON(w, r, &req) {
		return
	}
	pub := r.TLS.PeerCertificates[0].PublicKey
	var pubPEM string
	if req.PublicKeyPEM != "" {
		if pub, pubPEM, err = ParsePublicKeyPEM(req.PublicKeyPEM); err != nil {
			WriteError(w, http.StatusBadRequest, "%v", err)
			return
		}
	}
	resp, err := s.core.RenewCredential(r.Context(), kind, id, pub, pubPEM)
	if err != nil {
		WriteError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	WriteJSON(w, http.StatusOK, resp)
}

// handleTURN issues TURN credentials to connectors (mTLS) and to signed-in
// devices whose principal may use some connector (at least one resource on a
// network that has a connector); anyone else has nothing to relay to.
func (s *Server) handleTURN(w http.ResponseWriter, r *http.Request) {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		kind, id, err := s.core.ComponentIdentity(r)
		if err != nil {
			WriteError(w, http.StatusUnauthorized, "%v", err)
			return
		}
		if kind != adminapi.KindConnector {
			WriteError(w, http.StatusForbidden, "TURN credentials are for connectors and client devices, not %s", kind)
			return
		}
		WriteJSON(w, http.StatusOK, s.core.TURNCredentials(kind+":"+id))
		return
	}
	cs, ok := s.session(w, r)
	if !ok {
		return
	}
	creds, err := cs.TURNCredentials()
	switch {
	case errors.Is(err, ErrNothingToRelay):
		WriteError(w, http.StatusForbidden, "%v", err)
	case err != nil:
		WriteError(w, http.StatusInternalServerError, "%v", err)
	default:
		WriteJSON(w, http.StatusOK, creds)
	}
}
