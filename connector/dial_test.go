package connector

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"

	"postern.dev/postern/wire"
)

// inProcess is a Config.Dial that serves every flow in the test process
// over net.Pipe: TCP answers the first write upper-cased and closes, UDP
// answers every datagram prefixed with "udp:".
type inProcess struct {
	mu     sync.Mutex
	dialed []string
}

func (p *inProcess) dial(_ context.Context, network, address string) (net.Conn, error) {
	p.mu.Lock()
	p.dialed = append(p.dialed, network+" "+address)
	p.mu.Unlock()
	ours, theirs := net.Pipe()
	go func() {
		defer theirs.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := theirs.Read(buf)
			if err != nil {
				return
			}
			if network == "tcp" {
				_, _ = theirs.Write(bytes.ToUpper(buf[:n]))
				return
			}
			if _, err := theirs.Write(append([]byte("udp:"), buf[:n]...)); err != nil {
				return
			}
		}
	}()
	return ours, nil
}

// TestDialHookReachesInProcessServers: with Config.Dial, TCP and UDP flows
// go to the servers it returns, not to the host's network (where plain
// echo servers listen on the same ports and would answer unchanged).
func TestDialHookReachesInProcessServers(t *testing.T) {
	p := &inProcess{}
	e := newEnv(t, func(c *Config) { c.Dial = p.dial })
	cc := e.alice.connect()
	id := e.resourceID("echo")

	st, status, msg := cc.open(e.echoFlow(id))
	if status != wire.StatusOK {
		t.Fatalf("TCP flow: %v %s", status, msg)
	}
	if _, err := st.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(st)
	if err != nil || string(got) != "HELLO" {
		t.Fatalf("TCP flow answered %q (%v), want the in-process server's HELLO", got, err)
	}

	us, status, msg := cc.open(wire.OpenHeader{Proto: wire.ProtoUDP, Port: e.udpPort, ResourceID: id, Destination: "127.0.0.1"})
	if status != wire.StatusOK {
		t.Fatalf("UDP flow: %v %s", status, msg)
	}
	buf := make([]byte, wire.MaxDatagram)
	for _, m := range []string{"one", "two"} {
		if err := wire.WriteDatagram(us, []byte(m)); err != nil {
			t.Fatal(err)
		}
		d, err := wire.ReadDatagram(us, buf)
		if err != nil || string(d) != "udp:"+m {
			t.Fatalf("UDP flow answered %q (%v), want udp:%s", d, err, m)
		}
	}
	us.Close()

	p.mu.Lock()
	defer p.mu.Unlock()
	want := []string{fmt.Sprintf("tcp 127.0.0.1:%d", e.echoPort), fmt.Sprintf("udp 127.0.0.1:%d", e.udpPort)}
	if !slices.Equal(p.dialed, want) {
		t.Fatalf("dialed %q, want %q", p.dialed, want)
	}
}
