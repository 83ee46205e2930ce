package export

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
)

// closableSyslog is a plain-TCP syslog listener whose open connections can
// be cut, as when the receiver restarts.
type closableSyslog struct {
	*syslogListener
	mu    sync.Mutex
	conns []net.Conn
}

func listenClosable(t *testing.T, addr string) *closableSyslog {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &closableSyslog{syslogListener: &syslogListener{ln: ln}}
	t.Cleanup(func() { s.stop() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			go s.read(c)
		}
	}()
	return s
}

// stop closes the listener and every connection: the receiver is down.
func (s *closableSyslog) stop() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
	s.mu.Unlock()
}

// TestSyslogReceiverDown: the syslog receiver goes down (its connection cut,
// then connections refused) and comes back on the same address. Events
// written around the outage all arrive, in order, and re-sent ones are
// marked.
func TestSyslogReceiverDown(t *testing.T) {
	st := openStore(t)
	first := listenClosable(t, "127.0.0.1:0")
	addr := first.ln.Addr().String()
	e, _ := run(t, testConfig(fastSink(SinkConfig{Name: "siem", Type: TypeSyslog, Address: addr, Hostname: "ctl.example", Facility: "auth"})), st, t.TempDir())
	addFlows(t, st, 10, "ok")
	testenv.Eventually(t, 10*time.Second, "10 messages", func() bool { m, _ := first.messages(); return len(m) >= 10 })
	first.stop()
	addFlows(t, st, 20, "ok")
	testenv.Eventually(t, 10*time.Second, "failed sends while down", func() bool { _, f := e.Stats().Snapshot(); return f["siem"] >= 2 })

	second := listenClosable(t, addr)
	testenv.Eventually(t, 20*time.Second, "the rest after the receiver came back", func() bool {
		m, _ := second.messages()
		return len(m) >= 20
	})
	m1, _ := first.messages()
	m2, errs := second.messages()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	all := append(m1, m2...)
	checkSyslog(t, all, len(all))
	seen := map[string]bool{}
	last := 0
	for _, m := range all {
		g := rfc5424.FindStringSubmatch(m)
		id, redelivery := g[8], g[9] == "true"
		if seen[id] {
			if !redelivery {
				t.Errorf("%s received twice, second time without redelivery", id)
			}
			continue
		}
		seen[id] = true
		n := 0
		for _, c := range strings.TrimPrefix(id, "network-") {
			n = n*10 + int(c-'0')
		}
		if n != last+1 {
			t.Errorf("%s after network-%d: gap or reorder", id, last)
		}
		last = n
	}
	if last != 30 {
		t.Fatalf("last event network-%d, want network-30", last)
	}
}
