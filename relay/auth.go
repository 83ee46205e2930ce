package relay

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/turn/v2"

	"postern.dev/postern/controlapi"
)

// MaxCredentialLifetime bounds how far in the future a TURN username may
// expire: the controller issues short-lived credentials, so a username valid
// for longer was not issued by it.
const MaxCredentialLifetime = 48 * time.Hour

// endpointIdle is how long a TURN client endpoint counts against its
// principal's quota after its last authenticated request. A live endpoint
// that relays anything holds permissions, which TURN clients refresh with an
// authenticated CreatePermission at least every 2 minutes (RFC 8656 permissions
// last 5 minutes; pion/turn refreshes every 120 s), so an endpoint silent for
// longer is gone (the client roamed, reconnected or quit) or cannot relay, and
// must not keep a roaming user from allocating again.
const endpointIdle = 3 * time.Minute

// turnAuth checks REST-style TURN credentials and per-principal quotas.
type turnAuth struct {
	mu        sync.Mutex
	secret    string
	maxPerP   int
	endpoints map[string]map[string]time.Time // principal -> client endpoint -> last seen
	now       func() time.Time
	refuse    func(reason string)
}

func newTURNAuth(maxPerPrincipal int, refuse func(string)) *turnAuth {
	return &turnAuth{maxPerP: maxPerPrincipal, endpoints: map[string]map[string]time.Time{}, now: time.Now, refuse: refuse}
}

func (a *turnAuth) setSecret(s string) {
	a.mu.Lock()
	a.secret = s
	a.mu.Unlock()
}

// parseUsername splits "<unix expiry>:<principal>".
func parseUsername(username string) (time.Time, string, error) {
	exp, principal, ok := strings.Cut(username, ":")
	if !ok || principal == "" {
		return time.Time{}, "", fmt.Errorf("%w: username %q is not <expiry>:<principal>", ErrBadCredential, username)
	}
	sec, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || sec <= 0 {
		return time.Time{}, "", fmt.Errorf("%w: username expiry %q", ErrBadCredential, exp)
	}
	return time.Unix(sec, 0), principal, nil
}

// check validates a username and returns the principal; it does not verify
// the password (pion/turn does that with the key from handler).
func (a *turnAuth) check(username string, src net.Addr) (string, error) {
	expiry, principal, err := parseUsername(username)
	if err != nil {
		return "", err
	}
	now := a.now()
	if !expiry.After(now) {
		return "", fmt.Errorf("%w: %s expired at %s", ErrExpired, username, expiry.UTC().Format(time.RFC3339))
	}
	if expiry.Sub(now) > MaxCredentialLifetime {
		return "", fmt.Errorf("%w: expiry %s is too far ahead", ErrBadCredential, expiry.UTC().Format(time.RFC3339))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.secret == "" {
		return "", ErrNotRegistered
	}
	eps := a.endpoints[principal]
	if eps == nil {
		eps = map[string]time.Time{}
		a.endpoints[principal] = eps
	}
	for k, seen := range eps {
		if now.Sub(seen) > endpointIdle {
			delete(eps, k)
		}
	}
	key := src.Network() + "/" + src.String()
	if _, ok := eps[key]; !ok && a.maxPerP > 0 && len(eps) >= a.maxPerP {
		return "", fmt.Errorf("%w: principal %s already uses %d relay endpoints", ErrQuota, principal, len(eps))
	}
	eps[key] = now
	return principal, nil
}

// handler is the pion/turn AuthHandler.
func (a *turnAuth) handler(log func(msg string, args ...any)) turn.AuthHandler {
	return func(username, realm string, src net.Addr) ([]byte, bool) {
		if _, err := a.check(username, src); err != nil {
			reason := "credential"
			switch {
			case isErr(err, ErrExpired):
				reason = "expired"
			case isErr(err, ErrQuota):
				reason = "quota"
			case isErr(err, ErrNotRegistered):
				reason = "unregistered"
			}
			a.refuse(reason)
			log("TURN request refused", "src", src.String(), "username", username, "err", err)
			return nil, false
		}
		a.mu.Lock()
		secret := a.secret
		a.mu.Unlock()
		return turn.GenerateAuthKey(username, realm, controlapi.TURNPassword(secret, username)), true
	}
}

// endpointsOf reports how many endpoints count against principal (tests, metrics).
func (a *turnAuth) endpointsOf(principal string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.endpoints[principal])
}
