package sigwire

import (
	"errors"
	"net"
	"strings"
	"testing"
)

func TestRoundTripAndLimits(t *testing.T) {
	a, b := net.Pipe()
	ca, cb := NewConn(a), NewConn(b)
	defer ca.Close()
	defer cb.Close()
	go func() {
		_ = ca.Write(&Message{Type: TypeOffer, Ufrag: "u", Pwd: "p", Candidates: []Candidate{{Type: CandHost, Addr: "198.18.0.1:4000"}}})
		_, _ = a.Write([]byte(strings.Repeat("x", MaxMessageSize+10) + "\n"))
	}()
	m, err := cb.Read()
	if err != nil || m.Type != TypeOffer || m.Candidates[0].Addr != "198.18.0.1:4000" {
		t.Fatalf("read: %+v %v", m, err)
	}
	if _, err := cb.Read(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized line: %v", err)
	}
}

func TestCandidateValidate(t *testing.T) {
	for _, c := range []Candidate{
		{Type: CandHost, Addr: "198.18.0.1:1"},
		{Type: CandRelay, Addr: "[2001:db8::1]:3478"},
	} {
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	for _, c := range []Candidate{
		{Type: "bogus", Addr: "198.18.0.1:1"},
		{Type: CandHost, Addr: "db.corp:1"},
		{Type: CandHost, Addr: "198.18.0.1:0"},
		{Type: CandHost, Addr: "198.18.0.1"},
	} {
		if err := c.Validate(); !errors.Is(err, ErrBadMessage) {
			t.Errorf("%+v accepted: %v", c, err)
		}
	}
}
