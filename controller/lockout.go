package controller

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"time"

	"postern.dev/postern/controller/store"
)

// loginThrottle slows password and key guessing without letting anyone who
// knows an e-mail address lock its owner out:
//
//   - per (account, IP): after pairFreeFailures failures, each further
//     attempt from that IP for that account waits a delay that doubles with
//     every failure (1 s, 2 s, 4 s, ... at most maxDelay). Another IP is not
//     affected.
//   - per IP, across accounts: after ipFreeFailures failures the same
//     doubling delay, against one address spraying many accounts.
//   - per account, from everywhere: after accountCapFailures failures within
//     failMemory, the account takes sign-ins only from its known devices (a
//     device key already registered to it and not revoked), so a distributed
//     guesser gains nothing new while the user keeps signing in.
//
// A sign-in from a known device is judged only by its own (account, device,
// IP) delay: an attacker failing from other addresses or devices, or from
// the same address with another device key, never delays it.
type loginThrottle struct {
	now func() time.Time
	log *slog.Logger

	// The failure counts live in memory (one SQLite controller) or, with
	// several replicas, in the shared database, so that spreading guesses
	// over replicas gains nothing.
	mu     sync.Mutex
	m      map[string]failEntry
	shared store.Throttle
}

type failEntry = store.ThrottleEntry

const (
	pairFreeFailures   = 3
	ipFreeFailures     = 20
	accountCapFailures = 30
	maxDelay           = 15 * time.Minute
	failMemory         = time.Hour
	throttleMaxEntries = 100000
)

// loginAttempt is one sign-in attempt as the throttle sees it. Account is
// empty when the attempt names none (an ID token that did not verify).
type loginAttempt struct {
	Account string // "user:<email>" or "sa:<id>"
	IP      string
	Device  string // key thumbprint of the device presented
	Known   bool   // Device is registered to Account and not revoked
}

func (a loginAttempt) keys() (pair, ip, acct string) {
	if a.Known {
		return "dev:" + a.Account + "|" + a.Device + "|" + a.IP, "", ""
	}
	if a.Account != "" {
		pair, acct = "pair:"+a.Account+"|"+a.IP, "acct:"+a.Account
	}
	return pair, "ip:" + a.IP, acct
}

// throttleVerdict is why an attempt must wait.
type throttleVerdict struct {
	wait time.Duration
	// newDevices: the account takes sign-ins only from known devices.
	newDevices bool
}

func newLoginThrottle(now func() time.Time) *loginThrottle {
	if now == nil {
		now = time.Now
	}
	return &loginThrottle{now: now, log: slog.New(slog.DiscardHandler), m: map[string]failEntry{}}
}

// share keeps the failure counts in st from now on (replicas on PostgreSQL).
func (t *loginThrottle) share(st store.Throttle, log *slog.Logger) {
	t.shared, t.log = st, log
}

// view returns the live entries of keys.
func (t *loginThrottle) view(ctx context.Context, keys []string, now time.Time) (map[string]failEntry, error) {
	if t.shared != nil {
		return t.shared.ThrottleView(ctx, keys, now.Add(-failMemory))
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]failEntry{}
	for _, k := range keys {
		if e, ok := t.m[k]; ok && now.Sub(e.Last) <= failMemory {
			out[k] = e
		}
	}
	return out, nil
}

// update applies fn to the live entries of keys, atomically (across
// replicas when shared).
func (t *loginThrottle) update(ctx context.Context, keys []string, now time.Time, fn func(map[string]failEntry)) error {
	if t.shared != nil {
		return t.shared.ThrottleUpdate(ctx, keys, now.Add(-failMemory), fn)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) > throttleMaxEntries {
		for k, e := range t.m {
			if now.Sub(e.Last) > failMemory || (e.Until.Before(now) && e.Fails < accountCapFailures) {
				delete(t.m, k)
			}
		}
	}
	live := map[string]failEntry{}
	for _, k := range keys {
		if e, ok := t.m[k]; ok && now.Sub(e.Last) <= failMemory {
			live[k] = e
		}
	}
	fn(live)
	for _, k := range keys {
		if e, ok := live[k]; ok {
			t.m[k] = e
		} else {
			delete(t.m, k)
		}
	}
	return nil
}

// sweep forgets entries past the throttle's memory (the shared table; the
// in-memory map is swept as it grows).
func (t *loginThrottle) sweep(ctx context.Context) error {
	if t.shared == nil {
		return nil
	}
	return t.shared.ThrottleSweep(ctx, t.now().Add(-failMemory))
}

// check returns how long attempt a must wait before it is tried (zero: go).
// When the shared counts cannot be read the attempt waits (a second): the
// throttle fails closed.
func (t *loginThrottle) check(ctx context.Context, a loginAttempt) throttleVerdict {
	now := t.now()
	pair, ip, acct := a.keys()
	keys := nonEmpty(pair, ip, acct)
	es, err := t.view(ctx, keys, now)
	if err != nil {
		t.log.Error("sign-in throttle unavailable; refusing sign-ins for now", "err", err)
		return throttleVerdict{wait: time.Second}
	}
	var v throttleVerdict
	for _, k := range []string{pair, ip} {
		if e, ok := es[k]; ok && k != "" {
			v.wait = max(v.wait, e.Until.Sub(now))
		}
	}
	if e, ok := es[acct]; ok && acct != "" && e.Fails >= accountCapFailures {
		v.newDevices = true
		v.wait = max(v.wait, e.Last.Add(failMemory).Sub(now))
	}
	return v
}

func nonEmpty(ks ...string) []string {
	out := ks[:0:0]
	for _, k := range ks {
		if k != "" {
			out = append(out, k)
		}
	}
	return out
}

// delay is the wait after fails failures when free are allowed.
func delay(fails, free int) time.Duration {
	over := fails - free
	if over < 0 {
		return 0
	}
	return time.Duration(math.Min(float64(maxDelay), float64(time.Second)*math.Pow(2, float64(min(over, 30)))))
}

// fail records a failed attempt.
func (t *loginThrottle) fail(ctx context.Context, a loginAttempt) {
	now := t.now()
	pair, ip, acct := a.keys()
	if a.Known {
		acct = "acct:" + a.Account // a wrong password from a known device still counts towards the cap
	}
	free := map[string]int{pair: pairFreeFailures, ip: ipFreeFailures, acct: math.MaxInt}
	err := t.update(ctx, nonEmpty(pair, ip, acct), now, func(es map[string]failEntry) {
		for k, f := range free {
			if k == "" {
				continue
			}
			e := es[k]
			e.Fails++
			e.Last = now
			if d := delay(e.Fails, f); d > 0 {
				e.Until = now.Add(d)
			}
			es[k] = e
		}
	})
	if err != nil {
		t.log.Error("sign-in throttle: record a failure", "err", err)
	}
}

// success clears the delay of the attempt's (account, IP) or (account,
// device, IP); the account's failure count stays until it is forgotten.
func (t *loginThrottle) success(ctx context.Context, a loginAttempt) {
	pair, _, _ := a.keys()
	if err := t.update(ctx, nonEmpty(pair), t.now(), func(es map[string]failEntry) { delete(es, pair) }); err != nil {
		t.log.Error("sign-in throttle: clear after a sign-in", "err", err)
	}
}
