// Single sign-on (OIDC) for devices: the public configuration (GET
// controlapi.PathOIDCConfig), the authorization-code flow (POST
// controlapi.PathOIDCStart, controlapi.PathOIDCExchange) and the device flow
// (POST controlapi.PathOIDCDeviceStart, controlapi.PathOIDCDevicePoll).

package api

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/oidcauth"
)

// SSO is the controller's single sign-on.
type SSO interface {
	// OIDCConfig is the single sign-on setup clients may know.
	OIDCConfig() controlapi.OIDCConfig
	// OIDCProvider is the identity provider for a sign-in request from
	// ip. Its errors: ErrSSOOff (501), ErrSSORate (429), anything else:
	// the provider is not ready (503).
	OIDCProvider(ip string) (OIDCProvider, error)
	// SSOThrottle refuses a sign-in from ip after too many failed ones
	// (429); its error has a RetryAfter method.
	SSOThrottle(ctx context.Context, ip string) error
	// SSOSignInFailed counts a failed sign-in against ip (and audits it)
	// when err is the caller's fault.
	SSOSignInFailed(ctx context.Context, ip string, err error)
	// SignInGrant turns a verified grant into a session for the device;
	// on failure it returns the status to answer with.
	SignInGrant(ctx context.Context, g *oidcauth.Grant, dev controlapi.OIDCDevice) (*controlapi.LoginResponse, int, error)
}

// OIDCProvider runs the flows with the identity provider
// (*oidcauth.Provider). Its errors have an oidcauth.StatusCode.
type OIDCProvider interface {
	Start(req controlapi.OIDCStartRequest) (*controlapi.OIDCStartResponse, error)
	Exchange(ctx context.Context, g controlapi.OIDCCodeGrant) (*oidcauth.Grant, error)
	DeviceStart(ctx context.Context) (*controlapi.OIDCDeviceStartResponse, error)
	DevicePoll(ctx context.Context, flow string) (*oidcauth.Grant, error)
}

// Errors of OIDCProvider.
var (
	ErrSSOOff  = errors.New("single sign-on (OIDC) is not configured on this controller")
	ErrSSORate = errors.New("too many sign-in requests")
)

func (s *Server) ssoRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+controlapi.PathOIDCConfig, func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, s.core.OIDCConfig())
	})
	mux.HandleFunc("POST "+controlapi.PathOIDCStart, s.ssoEndpoint(s.handleOIDCStart))
	mux.HandleFunc("POST "+controlapi.PathOIDCExchange, s.ssoEndpoint(s.handleOIDCExchange))
	mux.HandleFunc("POST "+controlapi.PathOIDCDeviceStart, s.ssoEndpoint(s.handleOIDCDeviceStart))
	mux.HandleFunc("POST "+controlapi.PathOIDCDevicePoll, s.ssoEndpoint(s.handleOIDCDevicePoll))
}

// ssoEndpoint hands h the identity provider: single sign-on must be
// configured (501) and ready (503), and the IP within its rate (429).
func (s *Server) ssoEndpoint(h func(http.ResponseWriter, *http.Request, OIDCProvider)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, err := s.core.OIDCProvider(ClientIP(r))
		switch {
		case errors.Is(err, ErrSSOOff):
			WriteError(w, http.StatusNotImplemented, "%v", err)
		case errors.Is(err, ErrSSORate):
			w.Header().Set("Retry-After", "1")
			WriteError(w, http.StatusTooManyRequests, "too many sign-in requests from %s; slow down", ClientIP(r))
		case err != nil:
			w.Header().Set("Retry-After", "10")
			WriteError(w, http.StatusServiceUnavailable, "%v", err)
		default:
			h(w, r, p)
		}
	}
}

// writeOIDCError answers an oidcauth error with its status.
func (s *Server) writeOIDCError(w http.ResponseWriter, r *http.Request, err error) {
	status := oidcauth.StatusCode(err)
	if status == http.StatusBadGateway {
		s.log.Warn("single sign-on: identity provider error", "path", r.URL.Path, "err", err)
	}
	WriteError(w, status, "%v", err)
}

// writeThrottled answers 429, with Retry-After when err says how long.
func writeThrottled(w http.ResponseWriter, err error) {
	var ra interface{ RetryAfter() time.Duration }
	if errors.As(err, &ra) {
		w.Header().Set("Retry-After", strconv.Itoa(int(ra.RetryAfter()/time.Second)+1))
	}
	WriteError(w, http.StatusTooManyRequests, "%v", err)
}

func (s *Server) handleOIDCStart(w http.ResponseWriter, r *http.Request, p OIDCProvider) {
	var req controlapi.OIDCStartRequest
	if !DecodeJSON(w, r, &req) {
		return
	}
	st, err := p.Start(req)
	if err != nil {
		s.writeOIDCError(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, st)
}

// checkDevice validates the device fields before a code is redeemed, so a
// malformed request does not burn the user's sign-in.
func checkDevice(d controlapi.OIDCDevice) error {
	raw, err := base64.StdEncoding.DecodeString(d.DevicePublicKey)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return errors.New("device_public_key: base64 of a 32-byte Ed25519 public key is required")
	}
	if len(d.DeviceName) > 128 || len(d.OS) > 64 {
		return errors.New("device_name or os: too long")
	}
	return nil
}

// grantRequest reads the body of a code exchange or a device poll into
// req, checks its device dev and the IP's sign-in throttle; otherwise it has
// answered (400, 413, 429).
func (s *Server) grantRequest(w http.ResponseWriter, r *http.Request, req any, dev *controlapi.OIDCDevice) bool {
	if !DecodeJSON(w, r, req) {
		return false
	}
	if err := checkDevice(*dev); err != nil {
		WriteError(w, http.StatusBadRequest, "%v", err)
		return false
	}
	if err := s.core.SSOThrottle(r.Context(), ClientIP(r)); err != nil {
		writeThrottled(w, err)
		return false
	}
	return true
}

// signIn makes the session of a grant the identity provider answered (g,
// err); otherwise it has answered.
func (s *Server) signIn(w http.ResponseWriter, r *http.Request, g *oidcauth.Grant, err error, dev controlapi.OIDCDevice) (*controlapi.LoginResponse, bool) {
	if err != nil {
		s.core.SSOSignInFailed(r.Context(), ClientIP(r), err)
		s.writeOIDCError(w, r, err)
		return nil, false
	}
	resp, status, err := s.core.SignInGrant(r.Context(), g, dev)
	if err != nil {
		WriteError(w, status, "%v", err)
		return nil, false
	}
	return resp, true
}

func (s *Server) handleOIDCExchange(w http.ResponseWriter, r *http.Request, p OIDCProvider) {
	var req controlapi.OIDCExchangeRequest
	if !s.grantRequest(w, r, &req, &req.OIDCDevice) {
		return
	}
	g, err := p.Exchange(r.Context(), req.OIDCCodeGrant)
	if resp, ok := s.signIn(w, r, g, err, req.OIDCDevice); ok {
		WriteJSON(w, http.StatusOK, resp)
	}
}

func (s *Server) handleOIDCDeviceStart(w http.ResponseWriter, r *http.Request, p OIDCProvider) {
	// The body is empty or "{}": nothing in it is used.
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		WriteError(w, http.StatusRequestEntityTooLarge, "request body: %v", err)
		return
	}
	ds, err := p.DeviceStart(r.Context())
	if err != nil {
		s.writeOIDCError(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, ds)
}

func (s *Server) handleOIDCDevicePoll(w http.ResponseWriter, r *http.Request, p OIDCProvider) {
	var req controlapi.OIDCDevicePollRequest
	if !s.grantRequest(w, r, &req, &req.OIDCDevice) {
		return
	}
	g, err := p.DevicePoll(r.Context(), req.Flow)
	switch {
	case errors.Is(err, oidcauth.ErrPending):
		WriteJSON(w, http.StatusOK, controlapi.OIDCDevicePollResponse{Status: controlapi.OIDCPending})
	case errors.Is(err, oidcauth.ErrSlowDown):
		WriteJSON(w, http.StatusOK, controlapi.OIDCDevicePollResponse{Status: controlapi.OIDCSlowDown})
	default:
		if resp, ok := s.signIn(w, r, g, err, req.OIDCDevice); ok {
			WriteJSON(w, http.StatusOK, controlapi.OIDCDevicePollResponse{Status: controlapi.OIDCOK, Login: resp})
		}
	}
}
