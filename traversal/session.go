package traversal

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pion/stun"
)

// pathEvent reports a validated pair: a check sent on mux m to addr was answered.
type pathEvent struct {
	m    *mux
	addr *net.UDPAddr
}

// Check pacing: fast while a connection is being set up, then slow probing
// for a better path for as long as the session lives.
const (
	checkFast     = 200 * time.Millisecond
	checkMedium   = time.Second
	checkSlow     = 5 * time.Second
	fastPeriod    = 5 * time.Second
	mediumPeriod  = 30 * time.Second
	checkTimeout  = time.Second
	maxTargets    = 32
	maxInflight   = 3 // checks per target awaiting an answer
	eventsBacklog = 32
)

// session is one side of a client-connector check session: local and remote
// short-term credentials, the remote addresses to check on each mux, and the
// pairs that validated.
type session struct {
	lufrag, lpwd string
	log          *slog.Logger
	events       chan pathEvent
	kick         chan struct{}

	mu        sync.Mutex
	rufrag    string
	rpwd      string
	targets   map[*mux]map[string]*net.UDPAddr
	validated map[*mux]map[string]bool
	inflight  map[*mux]map[string]int
	muxes     []*mux
}

func newSession(log *slog.Logger) *session {
	return &session{
		lufrag: randomString(6), lpwd: randomString(18), log: log,
		events: make(chan pathEvent, eventsBacklog), kick: make(chan struct{}, 1),
		targets:   map[*mux]map[string]*net.UDPAddr{},
		validated: map[*mux]map[string]bool{},
		inflight:  map[*mux]map[string]int{},
	}
}

// attach registers the session for incoming checks on m.
func (s *session) attach(m *mux) {
	s.mu.Lock()
	s.muxes = append(s.muxes, m)
	if s.targets[m] == nil {
		s.targets[m] = map[string]*net.UDPAddr{}
		s.validated[m] = map[string]bool{}
		s.inflight[m] = map[string]int{}
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
	delete(s.validated, m)
	delete(s.inflight, m)
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

// addTarget schedules checks to addr on m.
func (s *session) addTarget(m *mux, addr *net.UDPAddr) {
	s.mu.Lock()
	t := s.targets[m]
	if t == nil || len(t) >= maxTargets {
		s.mu.Unlock()
		return
	}
	k := addr.String()
	_, had := t[k]
	t[k] = addr
	s.mu.Unlock()
	if !had {
		s.poke()
	}
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
// target on the same mux (a peer-reflexive candidate, checked right away).
func (s *session) onCheck(m *mux, from net.Addr) {
	ua, ok := from.(*net.UDPAddr)
	if !ok {
		var err error
		if ua, err = net.ResolveUDPAddr("udp", from.String()); err != nil {
			return
		}
	}
	s.addTarget(m, ua)
}

// isValidated reports whether addr validated on m.
func (s *session) isValidated(m *mux, addr string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.validated[m][addr]
}

// run sends checks until ctx ends.
func (s *session) run(ctx context.Context) {
	start := time.Now()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
		s.round(ctx)
		iv := checkSlow
		switch el := time.Since(start); {
		case el < fastPeriod:
			iv = checkFast
		case el < mediumPeriod:
			iv = checkMedium
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(iv)
	}
}

// round sends one check to every unvalidated target that has none in flight.
func (s *session) round(ctx context.Context) {
	s.mu.Lock()
	if s.rpwd == "" {
		s.mu.Unlock()
		return
	}
	rufrag, rpwd := s.rufrag, s.rpwd
	type job struct {
		m    *mux
		addr *net.UDPAddr
	}
	var jobs []job
	for m, ts := range s.targets {
		for k, a := range ts {
			if s.validated[m][k] || s.inflight[m][k] >= maxInflight {
				continue
			}
			s.inflight[m][k]++
			jobs = append(jobs, job{m, a})
		}
	}
	s.mu.Unlock()
	for _, j := range jobs {
		go s.check(ctx, j.m, j.addr, rufrag, rpwd)
	}
}

func (s *session) check(ctx context.Context, m *mux, addr *net.UDPAddr, rufrag, rpwd string) {
	k := addr.String()
	defer func() {
		s.mu.Lock()
		if inf := s.inflight[m]; inf != nil {
			if inf[k]--; inf[k] <= 0 {
				delete(inf, k)
			}
		}
		s.mu.Unlock()
	}()
	req, err := newCheck(rufrag, s.lufrag, rpwd)
	if err != nil {
		return
	}
	r, err := m.transact(ctx, req, addr, checkTimeout)
	if err != nil || r.msg.Type.Class != stun.ClassSuccessResponse {
		return
	}
	if err := stun.NewShortTermIntegrity(rpwd).Check(r.msg); err != nil {
		s.log.Debug("check response with bad integrity", "from", addr.String())
		return
	}
	s.mu.Lock()
	already := s.validated[m][k]
	if s.validated[m] != nil {
		s.validated[m][k] = true
	}
	s.mu.Unlock()
	if already {
		return
	}
	s.log.Debug("pair validated", "via", m.kind, "remote", k)
	select {
	case s.events <- pathEvent{m: m, addr: addr}:
	default:
	}
}
