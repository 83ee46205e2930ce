package relay

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v2"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/lograte"
	"postern.dev/postern/internal/srcaddr"
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

// turnIdentity is who a TURN client endpoint authenticated as.
type turnIdentity struct {
	principal string
	device    string // empty for component credentials
}

// turnAuth checks REST-style TURN credentials and per-principal quotas, and
// remembers which identity every client endpoint (transport/ip:port)
// authenticated as, so that permissions and packets can be tied to it.
type turnAuth struct {
	mu        sync.Mutex
	secret    string
	maxPerP   int
	endpoints map[string]map[string]time.Time // principal -> client endpoint -> last seen
	idents    map[string]turnIdentity         // client endpoint -> identity
	pending   map[string]pendingAuth          // client endpoint -> identity its request claims, until pion answers
	now       func() time.Time
	refuse    func(reason string)
	// denied reports whether an identity lost its access (revoked device,
	// deleted connector); nil allows all.
	denied func(turnIdentity) bool
	// blocked holds the endpoints of denied identities; every packet from
	// or to them is dropped. Usually empty, read on every packet.
	blocked atomic.Pointer[map[string]struct{}]
	// warn, if set, receives quota refusals, at most one per source and
	// quotaLogEvery (quotaLines).
	warn       func(msg string, args ...any)
	quotaLines *lograte.Limiter
}

const quotaLogEvery = 10 * time.Second

// quotaLog reports a quota refusal at WARN, one line per source (an IPv4
// address, an IPv6 /64) and quotaLogEvery.
func (a *turnAuth) quotaLog(src net.Addr, err error) {
	if a.warn != nil && a.quotaLines.Allow(srcaddr.String(srcaddr.Key(src)), a.now()) {
		a.warn("TURN allocation refused: quota", "src", src.String(), "err", err)
	}
}

func newTURNAuth(maxPerPrincipal int, refuse func(string)) *turnAuth {
	return &turnAuth{maxPerP: maxPerPrincipal, endpoints: map[string]map[string]time.Time{},
		idents: map[string]turnIdentity{}, now: time.Now, refuse: refuse, quotaLines: lograte.New(quotaLogEvery)}
}

func (a *turnAuth) setSecret(s string) {
	a.mu.Lock()
	a.secret = s
	a.mu.Unlock()
}

func endpointKey(src net.Addr) string { return src.Network() + "/" + src.String() }

// parseUsername splits "<unix expiry>:<principal>[/<device>]".
func parseUsername(username string) (time.Time, turnIdentity, error) {
	exp, principal, device, err := controlapi.ParseTURNUsername(username)
	if err != nil {
		return time.Time{}, turnIdentity{}, fmt.Errorf("%w: %v", ErrBadCredential, err)
	}
	return exp, turnIdentity{principal: principal, device: device}, nil
}

// check validates a username and returns its identity; it does not verify
// the password (pion/turn does that with the key from handler).
func (a *turnAuth) check(username string, src net.Addr) (turnIdentity, error) {
	expiry, id, err := parseUsername(username)
	if err != nil {
		return turnIdentity{}, err
	}
	now := a.now()
	if !expiry.After(now) {
		return turnIdentity{}, fmt.Errorf("%w: %s expired at %s", ErrExpired, username, expiry.UTC().Format(time.RFC3339))
	}
	if expiry.Sub(now) > MaxCredentialLifetime {
		return turnIdentity{}, fmt.Errorf("%w: expiry %s is too far ahead", ErrBadCredential, expiry.UTC().Format(time.RFC3339))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.secret == "" {
		return turnIdentity{}, ErrNotRegistered
	}
	if a.denied != nil && a.denied(id) {
		return turnIdentity{}, fmt.Errorf("%w: %s", ErrRevoked, describe(id))
	}
	eps := a.endpoints[id.principal]
	for k, seen := range eps {
		if now.Sub(seen) > endpointIdle {
			delete(eps, k)
			delete(a.idents, k)
		}
	}
	key := endpointKey(src)
	if _, ok := eps[key]; !ok && a.maxPerP > 0 && len(eps) >= a.maxPerP {
		return turnIdentity{}, fmt.Errorf("%w: principal %s already uses %d relay endpoints", ErrQuota, id.principal, len(eps))
	}
	a.holdLocked(key, id, now)
	return id, nil
}

// Until pion has checked a request's MESSAGE-INTEGRITY (after the
// AuthHandler returned the key), its username is only a claim: anyone can
// write "<expiry>:alice@corp/dev" with a wrong password. So check holds the
// identity as pending for its endpoint, and only pion's answer decides
// (observe): a success response to an authenticated request (Allocate,
// Refresh, CreatePermission, ChannelBind) commits it to the quota and to
// the endpoint's identity, an error response drops it. pion handles one
// request at a time per socket and per TLS connection, so the answer that
// follows a check belongs to it. Before, check committed at once, and
// forged requests from a few source ports could fill a victim principal's
// quota for endpointIdle without any credential.
const (
	pendingAuthTTL = 5 * time.Second // a request pion never answered
	maxPendingAuth = 16384           // past this (a flood), requests are not held
)

type pendingAuth struct {
	id turnIdentity
	at time.Time
}

func (a *turnAuth) holdLocked(key string, id turnIdentity, now time.Time) {
	if a.pending == nil {
		a.pending = map[string]pendingAuth{}
	}
	if len(a.pending) >= maxPendingAuth/2 {
		for k, p := range a.pending {
			if now.Sub(p.at) > pendingAuthTTL {
				delete(a.pending, k)
			}
		}
	}
	if len(a.pending) < maxPendingAuth {
		a.pending[key] = pendingAuth{id: id, at: now}
	}
}

// confirm commits the identity held for endpoint key: pion accepted its
// request.
func (a *turnAuth) confirm(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, ok := a.pending[key]
	if !ok {
		return
	}
	delete(a.pending, key)
	if old, ok := a.idents[key]; ok && old.principal != p.id.principal {
		// The endpoint changed hands (a NAT reused the port): it no longer
		// counts for the previous principal.
		delete(a.endpoints[old.principal], key)
	}
	eps := a.endpoints[p.id.principal]
	if eps == nil {
		eps = map[string]time.Time{}
		a.endpoints[p.id.principal] = eps
	}
	eps[key] = a.now()
	a.idents[key] = p.id
}

// drop forgets the identity held for endpoint key: pion refused its
// request (a wrong password, a stale nonce).
func (a *turnAuth) drop(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.pending, key)
}

// observe looks at a message pion sends to client endpoint to: a STUN
// response settles the identity held for that endpoint.
func (a *turnAuth) observe(b []byte, to net.Addr) {
	switch stunResponse(b) {
	case responseSuccess:
		a.confirm(endpointKey(to))
	case responseError:
		a.drop(endpointKey(to))
	}
}

type responseKind int

const (
	notAResponse responseKind = iota
	responseSuccess
	responseError
)

// stunResponse classifies b: a success response to one of the TURN methods
// that need credentials, an error response to any, or neither.
func stunResponse(b []byte) responseKind {
	if len(b) < 20 || b[0]&0xC0 != 0 || b[4] != 0x21 || b[5] != 0x12 || b[6] != 0xA4 || b[7] != 0x42 {
		return notAResponse
	}
	t := uint16(b[0])<<8 | uint16(b[1])
	method := t&0x000F | (t&0x00E0)>>1 | (t&0x3E00)>>2
	switch t & 0x0110 {
	case 0x0100: // success response
		switch method {
		case 0x003, 0x004, 0x008, 0x009: // Allocate, Refresh, CreatePermission, ChannelBind
			return responseSuccess
		}
	case 0x0110: // error response
		return responseError
	}
	return notAResponse
}

func describe(id turnIdentity) string {
	if id.device != "" {
		return "device " + id.device + " of " + id.principal
	}
	return id.principal
}

// release forgets endpoint key (a TURN-over-TLS connection that closed, a
// deleted UDP allocation): it no longer counts against its principal's
// quota.
func (a *turnAuth) release(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	// A Refresh with lifetime 0 releases before pion answers it: its
	// success must not count the endpoint again.
	delete(a.pending, key)
	if id, ok := a.idents[key]; ok {
		delete(a.endpoints[id.principal], key)
		delete(a.idents, key)
	}
}

// lookup returns the identity client endpoint src authenticated as.
func (a *turnAuth) lookup(src net.Addr) (turnIdentity, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id, ok := a.idents[endpointKey(src)]
	return id, ok
}

// reblock recomputes the blocked endpoints after the denied set changed and
// returns them.
func (a *turnAuth) reblock() map[string]struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]struct{}{}
	if a.denied != nil {
		for k, id := range a.idents {
			if a.denied(id) {
				out[k] = struct{}{}
			}
		}
	}
	a.blocked.Store(&out)
	return out
}

// isBlocked reports whether packets from or to client endpoint src must be
// dropped.
func (a *turnAuth) isBlocked(src net.Addr) bool {
	b := a.blocked.Load()
	if b == nil || len(*b) == 0 {
		return false
	}
	_, ok := (*b)[endpointKey(src)]
	return ok
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
			case isErr(err, ErrRevoked):
				reason = "revoked"
			}
			a.refuse(reason)
			if reason == "quota" {
				// An operator needs to see this one (a user who cannot
				// get relayed); the others are attacks or stale clients.
				a.quotaLog(src, err)
			} else {
				log("TURN request refused", "src", src.String(), "username", username, "err", err)
			}
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
