package oidcauth

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"golang.org/x/oauth2"

	"postern.dev/postern/controlapi"
)

// Flow kinds.
const (
	kindCode   = "code"
	kindDevice = "device"
)

// flowState is what a sealed Flow handle carries.
type flowState struct {
	Kind          string `json:"k"`
	State         string `json:"s,omitempty"`
	Nonce         string `json:"n,omitempty"`
	RedirectURI   string `json:"r,omitempty"`
	CodeChallenge string `json:"c,omitempty"`
	DeviceCode    string `json:"d,omitempty"`
	Interval      int    `json:"i,omitempty"`
	Expires       int64  `json:"e"`
}

// sealer encrypts and authenticates flow handles (AES-256-GCM).
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	k := sha256.Sum256(append([]byte("postern oidc flow v1\x00"), key...))
	block, err := aes.NewCipher(k[:])
	if err != nil {
		return nil, fmt.Errorf("flow cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("flow cipher: %w", err)
	}
	return &sealer{aead: aead}, nil
}

func (s *sealer) seal(f flowState) (string, error) {
	plain, err := json.Marshal(f)
	if err != nil {
		return "", fmt.Errorf("encode flow: %w", err)
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("flow nonce: %w", err)
	}
	out := s.aead.Seal(nonce, nonce, plain, []byte(f.Kind))
	return f.Kind + "." + base64.RawURLEncoding.EncodeToString(out), nil
}

func (s *sealer) open(handle, kind string, now time.Time) (*flowState, error) {
	prefix := kind + "."
	if len(handle) <= len(prefix) || handle[:len(prefix)] != prefix || len(handle) > 8192 {
		return nil, fmt.Errorf("%w: flow handle is not a %s sign-in from this controller", ErrBadRequest, kind)
	}
	raw, err := base64.RawURLEncoding.DecodeString(handle[len(prefix):])
	if err != nil || len(raw) < s.aead.NonceSize() {
		return nil, fmt.Errorf("%w: flow handle is malformed", ErrBadRequest)
	}
	plain, err := s.aead.Open(nil, raw[:s.aead.NonceSize()], raw[s.aead.NonceSize():], []byte(kind))
	if err != nil {
		return nil, fmt.Errorf("%w: flow handle was not issued by this deployment (or its flow key changed)", ErrBadRequest)
	}
	var f flowState
	if err := json.Unmarshal(plain, &f); err != nil || f.Kind != kind {
		return nil, fmt.Errorf("%w: flow handle is malformed", ErrBadRequest)
	}
	if now.Unix() > f.Expires {
		return nil, fmt.Errorf("%w: the sign-in was started more than its lifetime ago; start again", ErrExpired)
	}
	return &f, nil
}

func randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func constantEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// S256 returns the PKCE S256 challenge of a verifier (RFC 7636).
func S256(verifier string) string {
	h := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// validVerifier checks RFC 7636 section 4.1: 43-128 unreserved characters.
func validVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for _, c := range v {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

// Start begins a browser sign-in for a client that listens on redirectURI
// and holds the PKCE verifier whose S256 challenge is given.
func (p *Provider) Start(req controlapi.OIDCStartRequest) (*controlapi.OIDCStartResponse, error) {
	if err := p.redirectAllowed(req.RedirectURI); err != nil {
		return nil, err
	}
	if req.CodeChallengeMethod != "S256" {
		return nil, fmt.Errorf("%w: code_challenge_method must be S256, got %q", ErrBadRequest, req.CodeChallengeMethod)
	}
	if len(req.CodeChallenge) != 43 {
		return nil, fmt.Errorf("%w: code_challenge must be the 43-character base64url SHA-256 of the verifier", ErrBadRequest)
	}
	if _, err := base64.RawURLEncoding.DecodeString(req.CodeChallenge); err != nil {
		return nil, fmt.Errorf("%w: code_challenge is not base64url: %v", ErrBadRequest, err)
	}
	state, err := randomString(24)
	if err != nil {
		return nil, err
	}
	nonce, err := randomString(24)
	if err != nil {
		return nil, err
	}
	exp := p.now().Add(p.cfg.FlowTTL)
	flow, err := p.flows.seal(flowState{
		Kind: kindCode, State: state, Nonce: nonce, RedirectURI: req.RedirectURI,
		CodeChallenge: req.CodeChallenge, Expires: exp.Unix(),
	})
	if err != nil {
		return nil, err
	}
	conf := p.oauth
	conf.RedirectURL = req.RedirectURI
	authURL := conf.AuthCodeURL(state,
		oauth2.SetAuthURLParam("nonce", nonce),
		oauth2.SetAuthURLParam("code_challenge", req.CodeChallenge),
		oauth2.SetAuthURLParam("code_challenge_method", "S256"),
	)
	return &controlapi.OIDCStartResponse{AuthURL: authURL, State: state, Flow: flow, ExpiresAt: exp}, nil
}

// Exchange finishes a browser sign-in: it checks the grant against the flow,
// redeems the code at the identity provider and verifies the ID token.
func (p *Provider) Exchange(ctx context.Context, g controlapi.OIDCCodeGrant) (*Grant, error) {
	f, err := p.flows.open(g.Flow, kindCode, p.now())
	if err != nil {
		return nil, err
	}
	if !constantEqual(g.State, f.State) {
		return nil, fmt.Errorf("%w: state does not match the sign-in (a response for another sign-in?)", ErrBadRequest)
	}
	if g.RedirectURI != f.RedirectURI {
		return nil, fmt.Errorf("%w: redirect URI %q differs from the one the sign-in started with", ErrBadRequest, g.RedirectURI)
	}
	if g.Code == "" {
		return nil, fmt.Errorf("%w: authorization code is empty", ErrBadRequest)
	}
	if !validVerifier(g.CodeVerifier) {
		return nil, fmt.Errorf("%w: code_verifier must be 43 to 128 unreserved characters (RFC 7636)", ErrBadRequest)
	}
	if !constantEqual(S256(g.CodeVerifier), f.CodeChallenge) {
		return nil, fmt.Errorf("%w: code_verifier does not match the challenge of the sign-in", ErrBadRequest)
	}
	conf := p.oauth
	conf.RedirectURL = f.RedirectURI
	tok, err := conf.Exchange(p.ctx(ctx), g.Code, oauth2.VerifierOption(g.CodeVerifier))
	if err != nil {
		return nil, oauthError("redeem authorization code", err)
	}
	return p.grant(ctx, tok, f.Nonce)
}
