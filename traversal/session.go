package traversal

import (
	"context"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/pion/stun"

	"postern.dev/postern/traversal/sigwire"
)

// pathEvent reports a validated pair: a check sent on mux m to addr was answered.
type pathEvent struct {
	m    *mux
	addr *net.UDPAddr
}

// Check pacing, per target: fast while a connection is being set up, then
// slower, then with a doubling backoff that ends above conntrack's 30 s
// timeout for unanswered UDP. A target keeps being checked for as long as
// its session lives, so a mapping that opens late (a NAT that forgot a stale
// entry, a firewall rule lifted) is still found; pauses longer than 30 s let
// a stale entry that our own checks would otherwise refresh expire, and every
// retry after such a pause is preceded by a new low-TTL primer.
const (
	checkFast     = 200 * time.Millisecond
	checkMedium   = time.Second
	checkSlow     = 5 * time.Second // maintain's wake-up while relayed
	fastPeriod    = 5 * time.Second
	mediumPeriod  = 30 * time.Second
	backoffStart  = 2 * time.Second
	backoffMax    = 35 * time.Second
	checkTimeout  = time.Second
	maxTargets    = 32
	maxInflight   = 3 // checks per target awaiting an answer
	eventsBacklog = 32
	// primeAgain: a target whose last primer is older than this gets a
	// new one before its next check (its own NAT's mapping may be gone).
	primeAgain = 25 * time.Second
)

// candPrflx marks a target learned from an incoming check.
const candPrflx = sigwire.CandPrflx

// target is one remote address checked on one mux.
type target struct {
	addr      *net.UDPAddr
	kind      string // sigwire candidate type
	added     time.Time
	next      time.Time // next check due
	primedAt  time.Time
	sent      int
	answered  int
	inflight  int
	validated time.Time
	lastErr   string
	mapped    string // our address as the peer saw it (its answer's XOR-MAPPED-ADDRESS)
}

// interval is the pause after a check to a target added at t.added.
func (t *target) interval(now time.Time) time.Duration {
	el := now.Sub(t.added)
	switch {
	case el < fastPeriod:
		return checkFast
	case el < mediumPeriod:
		return checkMedium
	}
	n := int((el - mediumPeriod) / backoffMax) // roughly one doubling per period
	iv := backoffStart << min(n, 5)
	return min(iv, backoffMax)
}

// session is one side of a client-connector check session: local and remote
// short-term credentials, the remote addresses to check on each mux, and the
// pairs that validated.
type session struct {
	lufrag, lpwd string
	log          *slog.Logger
	events       chan pathEvent
	kick         chan struct{}

	mu      sync.Mutex
	rufrag  string
	rpwd    string
	targets map[*mux]map[string]*target
	muxes   []*mux
	// holdUntil holds checks to punchable targets (not relayed addresses)
	// on muxes that prime: the connector waits, after priming its own NAT
	// and answering, for the client's first check (or this deadline) so that
	// its checks never reach the client's NAT before the client has opened
	// its own mapping there.
	holdUntil time.Time
	heard     bool
}

func newSession(log *slog.Logger) *session {
	return &session{
		lufrag: randomString(6), lpwd: randomString(18), log: log,
		events: make(chan pathEvent, eventsBacklog), kick: make(chan struct{}, 1),
		targets: map[*mux]map[string]*target{},
	}
}

// attach registers the session for incoming checks on m.
func (s *session) attach(m *mux) {
	s.mu.Lock()
	s.muxes = append(s.muxes, m)
	if s.targets[m] == nil {
		s.targets[m] = map[string]*target{}
	}
	s.mu.Unlock()
	m.register(s.lufrag, s)
}

// detachFrom unregisters the session from one mux and forgets its targets.
func (s *session) detachFrom(m *mux) {
	s.mu.Lock()
	for i, x := range s.muxes {
		if x == m {
			s.muxes = append(s.muxes[:i], s.muxes[i+1:]...)
			break
		}
	}
	delete(s.targets, m)
	s.mu.Unlock()
	m.unregister(s.lufrag)
}

// detach unregisters the session from every mux.
func (s *session) detach() {
	s.mu.Lock()
	ms := s.muxes
	s.muxes = nil
	s.mu.Unlock()
	for _, m := range ms {
		m.unregister(s.lufrag)
	}
}

func (s *session) setRemote(ufrag, pwd string) {
	s.mu.Lock()
	s.rufrag, s.rpwd = ufrag, pwd
	s.mu.Unlock()
	s.poke()
}

// hold delays checks to punchable targets by d, or until a check from the
// peer arrives (see holdUntil).
func (s *session) hold(d time.Duration) {
	s.mu.Lock()
	s.holdUntil = time.Now().Add(d)
	s.mu.Unlock()
	time.AfterFunc(d, s.poke)
}

// addTarget schedules checks to addr on m; kind is its candidate type.
func (s *session) addTarget(m *mux, addr *net.UDPAddr, kind string) {
	s.mu.Lock()
	ts := s.targets[m]
	if ts == nil || len(ts) >= maxTargets {
		s.mu.Unlock()
		return
	}
	k := addr.String()
	if _, had := ts[k]; had {
		s.mu.Unlock()
		return
	}
	now := time.Now()
	ts[k] = &target{addr: addr, kind: kind, added: now, next: now}
	s.mu.Unlock()
	s.poke()
}

func (s *session) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *session) localPwd() string { return s.lpwd }

func (s *session) remoteUfragOK(u string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Before the answer arrives the remote ufrag is unknown; the integrity
	// check with our pwd (known only to the peer) still authenticates.
	return s.rufrag == "" || s.rufrag == u
}

// onCheck handles a verified incoming check: the sender's address becomes a
// target on the same mux (a peer-reflexive candidate, checked right away:
// our answer and our check both go back through the mapping the peer's
// check proved open), and checks held for the peer's first check start.
func (s *session) onCheck(m *mux, from net.Addr) {
	ua, ok := from.(*net.UDPAddr)
	if !ok {
		var err error
		if ua, err = net.ResolveUDPAddr("udp", from.String()); err != nil {
			return
		}
	}
	s.mu.Lock()
	first := !s.heard && m.primer != nil
	if m.primer != nil {
		s.heard = true
	}
	s.mu.Unlock()
	s.addTarget(m, ua, candPrflx)
	if first {
		s.poke()
	}
}

// isValidated reports whether addr validated on m.
func (s *session) isValidated(m *mux, addr string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.targets[m][addr]
	return t != nil && !t.validated.IsZero()
}

// run sends checks until ctx ends.
func (s *session) run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
		iv := s.round(ctx)
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(iv)
	}
}

// kindRank orders checks: server- and peer-reflexive first (the pairs that
// punch through NATs and that the peer checks at the same moment), then
// relayed addresses, then host addresses.
func kindRank(k string) int {
	switch k {
	case sigwire.CandSrflx, candPrflx:
		return 0
	case sigwire.CandRelay:
		return 1
	}
	return 2
}

// punchable reports whether checks to t on m open a NAT mapping that must
// exist before the peer's packets arrive (everything but relayed addresses,
// on a plain socket).
func punchable(m *mux, t *target) bool { return m.primer != nil && t.kind != sigwire.CandRelay }

// round sends one check to every unvalidated target that is due, in kindRank
// order, each punchable one preceded by a low-TTL primer when it has none
// recent, and returns the time until the next target is due.
func (s *session) round(ctx context.Context) time.Duration {
	now := time.Now()
	s.mu.Lock()
	if s.rpwd == "" {
		s.mu.Unlock()
		return checkSlow
	}
	rufrag, rpwd := s.rufrag, s.rpwd
	held := !s.heard && now.Before(s.holdUntil)
	type job struct {
		m     *mux
		t     *target
		prime bool
	}
	var jobs []job
	wake := checkSlow
	for m, ts := range s.targets {
		for _, t := range ts {
			if !t.validated.IsZero() {
				continue
			}
			if held && punchable(m, t) {
				wake = min(wake, s.holdUntil.Sub(now))
				continue
			}
			if now.Before(t.next) || t.inflight >= maxInflight {
				if d := t.next.Sub(now); d > 0 {
					wake = min(wake, d)
				}
				continue
			}
			prime := punchable(m, t) && now.Sub(t.primedAt) > primeAgain
			if prime {
				t.primedAt = now
			}
			t.inflight++
			t.sent++
			iv := t.interval(now)
			t.next = now.Add(iv)
			wake = min(wake, iv)
			jobs = append(jobs, job{m, t, prime})
		}
	}
	s.mu.Unlock()
	sort.SliceStable(jobs, func(a, b int) bool { return kindRank(jobs[a].t.kind) < kindRank(jobs[b].t.kind) })
	for _, j := range jobs {
		if j.prime {
			if err := j.m.prime(j.t.addr); err != nil {
				s.log.Debug("primer", "to", j.t.addr.String(), "err", err)
			}
		}
	}
	for _, j := range jobs {
		req, err := newCheck(rufrag, s.lufrag, rpwd)
		if err != nil {
			continue
		}
		// The request leaves now, in order; the wait for its answer runs
		// in the background.
		wait, err := j.m.send(req, j.t.addr)
		go s.finish(ctx, j.m, j.t, rpwd, wait, err)
	}
	return max(wake, 20*time.Millisecond)
}

// finish waits for the answer to one check and records the outcome.
func (s *session) finish(ctx context.Context, m *mux, t *target, rpwd string, wait func(context.Context, time.Duration) (response, error), sendErr error) {
	k := t.addr.String()
	var r response
	err := sendErr
	if err == nil {
		r, err = wait(ctx, checkTimeout)
	}
	ok := false
	if err == nil {
		switch {
		case r.msg.Type.Class != stun.ClassSuccessResponse:
			err = errRefused
		case stun.NewShortTermIntegrity(rpwd).Check(r.msg) != nil:
			err = errBadIntegrity
		default:
			ok = true
		}
	}
	s.mu.Lock()
	t.inflight--
	first := false
	if ok {
		t.answered++
		t.lastErr = ""
		if a, err := mappedAddr(r.msg); err == nil {
			t.mapped = a.String()
		}
		if t.validated.IsZero() {
			t.validated = time.Now()
			first = s.targets[m][k] == t
		}
	} else if err != nil && ctx.Err() == nil {
		t.lastErr = err.Error()
	}
	s.mu.Unlock()
	if !first {
		return
	}
	s.log.Debug("pair validated", "via", m.kind, "remote", k, "kind", t.kind)
	select {
	case s.events <- pathEvent{m: m, addr: t.addr}:
	default:
	}
}

// PairInfo describes one candidate pair a session checked.
type PairInfo struct {
	Local     string    `json:"local"`  // "udp" (plain socket) or "relay-udp"/"relay-tls"
	Remote    string    `json:"remote"` // the peer's address
	Kind      string    `json:"kind"`   // the remote candidate's type
	Checks    int       `json:"checks"`
	Answers   int       `json:"answers"`
	Validated bool      `json:"validated"`
	Since     time.Time `json:"since,omitzero"` // when it validated
	LastError string    `json:"last_error,omitempty"`
	// Mapped is our address as the peer saw it in its answer.
	Mapped string `json:"mapped,omitempty"`
}

// pairs returns the session's pairs, validated first.
func (s *session) pairs() []PairInfo {
	s.mu.Lock()
	var out []PairInfo
	for m, ts := range s.targets {
		for k, t := range ts {
			out = append(out, PairInfo{Local: m.kind, Remote: k, Kind: t.kind, Checks: t.sent, Answers: t.answered,
				Validated: !t.validated.IsZero(), Since: t.validated, LastError: t.lastErr, Mapped: t.mapped})
		}
	}
	s.mu.Unlock()
	sort.Slice(out, func(a, b int) bool {
		if out[a].Validated != out[b].Validated {
			return out[a].Validated
		}
		if ra, rb := kindRank(out[a].Kind), kindRank(out[b].Kind); ra != rb {
			return ra < rb
		}
		return out[a].Local+out[a].Remote < out[b].Local+out[b].Remote
	})
	return out
}
