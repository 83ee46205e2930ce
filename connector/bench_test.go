package connector

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/wire"
)

// BenchmarkStreamOpen measures the time from opening a flow stream to the
// connector's "ok" for a local TCP resource (header, policy check, dial).
func BenchmarkStreamOpen(b *testing.B) {
	e := newEnv(b, nil)
	cc := e.alice.connect()
	h := e.echoFlow(e.resourceID("echo"))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st := cc.mustOpen(h, "flow")
		st.CancelRead(0)
		st.Close()
	}
}

// sinkServer reads and discards; it answers EOF with its own close.
func sinkServer(tb testing.TB) uint16 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	tb.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// BenchmarkThroughputQUICvsTCP sends bulk data one way through one flow over
// loopback QUIC and, for comparison, over a plain TCP connection to the same sink.
func BenchmarkThroughputQUICvsTCP(b *testing.B) {
	const chunk = 64 << 10
	buf := make([]byte, chunk)
	send := func(b *testing.B, w io.WriteCloser, r io.Reader) {
		b.SetBytes(chunk)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := w.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		w.Close()
		io.Copy(io.Discard, r) // the sink closes after reading everything
		b.StopTimer()
	}
	b.Run("quic", func(b *testing.B) {
		e := newEnv(b, nil)
		port := sinkServer(b)
		sinkID := e.addLoopbackResource("sink")
		cc := e.alice.connect()
		st := cc.mustOpen(wire.OpenHeader{Proto: wire.ProtoTCP, Port: port, ResourceID: sinkID, Destination: "127.0.0.1"}, "flow")
		send(b, st, st)
	})
	b.Run("tcp", func(b *testing.B) {
		port := sinkServer(b)
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", itoa(port)))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		send(b, halfCloser{c.(*net.TCPConn)}, c)
	})
}

type halfCloser struct{ *net.TCPConn }

func (h halfCloser) Close() error { return h.CloseWrite() }

func itoa(p uint16) string { return net.JoinHostPort("", "")[:0] + portString(p) }

func portString(p uint16) string {
	var b [5]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + p%10)
		p /= 10
		if p == 0 {
			break
		}
	}
	return string(b[i:])
}

// holdServer runs, in a child process (its own open-file limit), a TCP
// server that accepts connections and holds them open, so that the benchmark
// measures the connector rather than the destination.
func holdServer(tb testing.TB) uint16 {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldServer$")
	cmd.Env = append(os.Environ(), "POSTERN_HOLD_SERVER=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		tb.Fatalf("hold server: %v", err)
	}
	port, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "port ")))
	if err != nil {
		tb.Fatalf("hold server said %q", line)
	}
	return uint16(port)
}

// TestHelperHoldServer is the child process of holdServer.
func TestHelperHoldServer(t *testing.T) {
	if os.Getenv("POSTERN_HOLD_SERVER") != "1" {
		t.Skip("helper process for BenchmarkIdleStreams10k")
	}
	raiseFDLimit(t, 20000)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("port %d\n", ln.Addr().(*net.TCPAddr).Port)
	go func() {
		var conns []net.Conn
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	io.Copy(io.Discard, os.Stdin)
	ln.Close()
	os.Exit(0)
}

func heapAndStacks() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// addLoopbackResource applies the env's policy with a resource name added
// (any TCP port on 127.0.0.1, for engineering), waits until the connector
// has it and returns its id.
func (e *env) addLoopbackResource(name string) string {
	e.apply(e.yaml + "  - name: " + name + "\n    address: 127.0.0.1\n    network: corp\n    ports: [tcp]\n    groups: [engineering]\n")
	e.eventually(5*time.Second, name+" resource", func() bool {
		for _, r := range e.c.policy.Load().raw.Resources {
			if r.Name == name {
				return true
			}
		}
		return false
	})
	return e.resourceID(name)
}

// BenchmarkIdleStreams10k opens 10,000 concurrent idle TCP flows in one
// connection and reports the memory they take (client and connector sides
// together, in this process) per stream.
func BenchmarkIdleStreams10k(b *testing.B) {
	const n = 10000
	raiseFDLimit(b, n+2000)
	e := newEnv(b, nil)
	port := holdServer(b)
	holdID := e.addLoopbackResource("hold")
	h := wire.OpenHeader{Proto: wire.ProtoTCP, Port: port, ResourceID: holdID, Destination: "127.0.0.1"}
	for i := 0; i < b.N; i++ {
		cc := e.alice.connect()
		before := heapAndStacks()
		streams := make([]*quic.Stream, 0, n)
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, 64)
		for j := 0; j < n; j++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				st, status, msg := cc.open(h)
				if status != wire.StatusOK {
					b.Errorf("stream: %v %s", status, msg)
					return
				}
				mu.Lock()
				streams = append(streams, st)
				mu.Unlock()
			}()
		}
		wg.Wait()
		if b.Failed() {
			b.FailNow()
		}
		e.eventually(10*time.Second, "all flows active", func() bool { return e.c.met.activeFlows() >= n })
		after := heapAndStacks()
		per := float64(after-before) / n
		b.ReportMetric(per, "B/stream")
		b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
		for _, st := range streams {
			st.CancelRead(0)
			st.CancelWrite(0)
		}
		cc.conn.CloseWithError(0, "")
		e.eventually(30*time.Second, "flows closed", func() bool { return e.c.met.activeFlows() == 0 })
	}
}
