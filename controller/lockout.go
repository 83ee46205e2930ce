package controller

import (
	"math"
	"sync"
	"time"
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

	mu sync.Mutex
	m  map[string]*failEntry
}

type failEntry struct {
	fails int
	until time.Time
	last  time.Time
}

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
	return &loginThrottle{now: now, m: map[string]*failEntry{}}
}

// entry returns the live entry of k (nil when none or forgotten).
func (t *loginThrottle) entry(k string, now time.Time) *failEntry {
	e, ok := t.m[k]
	if !ok {
		return nil
	}
	if now.Sub(e.last) > failMemory {
		delete(t.m, k)
		return nil
	}
	return e
}

// check returns how long attempt a must wait before it is tried (zero: go).
func (t *loginThrottle) check(a loginAttempt) throttleVerdict {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	pair, ip, acct := a.keys()
	var v throttleVerdict
	for _, k := range []string{pair, ip} {
		if k == "" {
			continue
		}
		if e := t.entry(k, now); e != nil {
			v.wait = max(v.wait, e.until.Sub(now))
		}
	}
	if acct != "" {
		if e := t.entry(acct, now); e != nil && e.fails >= accountCapFailures {
			v.newDevices = true
			v.wait = max(v.wait, e.last.Add(failMemory).Sub(now))
		}
	}
	return v
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
func (t *loginThrottle) fail(a loginAttempt) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if len(t.m) > throttleMaxEntries {
		for k, e := range t.m {
			if now.Sub(e.last) > failMemory || (e.until.Before(now) && e.fails < accountCapFailures) {
				delete(t.m, k)
			}
		}
	}
	pair, ip, acct := a.keys()
	if a.Known {
		acct = "acct:" + a.Account // a wrong password from a known device still counts towards the cap
	}
	for _, kv := range []struct {
		k    string
		free int
	}{{pair, pairFreeFailures}, {ip, ipFreeFailures}, {acct, math.MaxInt}} {
		if kv.k == "" {
			continue
		}
		e := t.entry(kv.k, now)
		if e == nil {
			e = &failEntry{}
			t.m[kv.k] = e
		}
		e.fails++
		e.last = now
		if d := delay(e.fails, kv.free); d > 0 {
			e.until = now.Add(d)
		}
	}
}

// success clears the delay of the attempt's (account, IP) or (account,
// device, IP); the account's failure count stays until it is forgotten.
func (t *loginThrottle) success(a loginAttempt) {
	pair, _, _ := a.keys()
	t.mu.Lock()
	delete(t.m, pair)
	t.mu.Unlock()
}
