package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"gopkg.in/yaml.v3"
)

// recorder is a testing.TB that records Skip and Fatal instead of acting.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Skip(args ...any) {
	r.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func run(f func(tb testing.TB)) *recorder {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r
}

func TestRequireCIRule(t *testing.T) {
	t.Setenv("CI", "")
	r := run(func(tb testing.TB) { Require(tb, false, "needs %s", "a thing") })
	if r.skipped != "needs a thing" || r.failed != "" {
		t.Fatalf("outside CI: skipped %q failed %q, want a skip", r.skipped, r.failed)
	}
	t.Setenv("CI", "true")
	r = run(func(tb testing.TB) { Require(tb, false, "needs %s", "a thing") })
	if r.failed == "" || r.skipped != "" {
		t.Fatalf("under CI=true: skipped %q failed %q, want a failure", r.skipped, r.failed)
	}
	r = run(func(tb testing.TB) { Require(tb, true, "unused") })
	if r.failed != "" || r.skipped != "" {
		t.Fatalf("met requirement: skipped %q failed %q", r.skipped, r.failed)
	}
	r = run(func(tb testing.TB) { RequireTools(tb, "go-testenv-no-such-tool") })
	if r.failed == "" {
		t.Fatal("missing tool under CI=true did not fail")
	}
	r = run(func(tb testing.TB) { RequireNetns(tb, "go-testenv-no-such-tool") })
	if r.failed == "" {
		t.Fatal("RequireNetns with a missing tool under CI=true did not fail")
	}
}

func TestPoll(t *testing.T) {
	n := 0
	Eventually(t, 5*time.Second, "the third look", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Fatalf("looked %d times", n)
	}
	start := time.Now()
	want := errors.New("still down")
	if err := PollErr(60*time.Millisecond, func() error { return want }); err != want {
		t.Fatalf("PollErr: %v, want the last error", err)
	}
	if d := time.Since(start); d < 60*time.Millisecond || d > 5*time.Second {
		t.Fatalf("PollErr returned after %v", d)
	}
	r := run(func(tb testing.TB) { Poll(tb, 30*time.Millisecond, "never", func() error { return want }) })
	if r.failed == "" {
		t.Fatal("Poll did not fail at its deadline")
	}
}

func TestEchoServers(t *testing.T) {
	_, port := EchoTCP(t, "127.0.0.1:0")
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	_ = c.(*net.TCPConn).CloseWrite()
	if b, err := io.ReadAll(c); err != nil || string(b) != "ping" {
		t.Fatalf("TCP echo: %q %v", b, err)
	}

	_, uport := EchoUDP(t, "127.0.0.1:0")
	u, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", uport))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	_ = u.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := u.Write([]byte("dgram")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := u.Read(buf); err != nil || string(buf[:n]) != "dgram" {
		t.Fatalf("UDP echo: %q %v", buf[:n], err)
	}
}

func TestLoggerAfterTestEnds(t *testing.T) {
	if Logger(t).Enabled(context.Background(), slog.LevelError) {
		t.Fatal("logger without POSTERN_TEST_LOG is not silent")
	}
	t.Setenv("POSTERN_TEST_LOG", "1")
	var log interface{ Info(string, ...any) }
	t.Run("inner", func(t *testing.T) {
		l := Logger(t)
		l.Info("during the test", "k", 1)
		log = l
	})
	log.Info("after the test") // must not panic
}

// TestSyncBuffer: concurrent writers (run with -race) all land, and Reset
// empties the buffer.
func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				_, _ = b.Write([]byte("x"))
			}
		}()
	}
	wg.Wait()
	if got := len(b.String()); got != 800 {
		t.Fatalf("%d bytes after 800 writes of one byte", got)
	}
	b.Reset()
	if b.String() != "" {
		t.Fatalf("after Reset: %q", b.String())
	}
}

// TestWaitReady: the helper's output up to READY is returned; what follows
// is drained.
func TestWaitReady(t *testing.T) {
	r, w := io.Pipe()
	go func() {
		fmt.Fprint(w, "ORIGINAL x\nREADY\nmore\nand more\n")
		w.Close()
	}()
	if got := WaitReady(t, "helper", r, 5*time.Second); got != "ORIGINAL x\nREADY" {
		t.Fatalf("WaitReady = %q", got)
	}
}

func TestClock(t *testing.T) {
	var c Clock
	if d := c.Now().Sub(time.Now()); d < -time.Second || d > time.Second {
		t.Fatalf("zero Clock is %v off real time", d)
	}
	c.Advance(time.Hour)
	c.Advance(30 * time.Minute)
	if d := c.Now().Sub(time.Now()); d < 90*time.Minute-time.Second || d > 90*time.Minute+time.Second {
		t.Fatalf("Clock after advancing 1.5 h is %v ahead", d)
	}
}

func TestServeDNS(t *testing.T) {
	addr := ServeDNS(t, dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1}, A: net.IPv4(192, 0, 2, 7)})
		_ = w.WriteMsg(m)
	}))
	m := new(dns.Msg)
	m.SetQuestion("host.example.", dns.TypeA)
	r, err := dns.Exchange(m, addr)
	if err != nil || len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.7" {
		t.Fatalf("query to ServeDNS at %s: %v %v", addr, r, err)
	}
}

func TestApproverPolicy(t *testing.T) {
	var p struct {
		RemoteNetworks []struct {
			Name       string
			Connectors []string
		} `yaml:"remote_networks"`
		Groups []struct {
			Name  string
			Users []string
		}
		Users []struct {
			Email    string
			Password string
		}
	}
	if err := yaml.Unmarshal([]byte(ApproverPolicy("corp-a", "corp-b")), &p); err != nil {
		t.Fatalf("ApproverPolicy is not YAML: %v", err)
	}
	got := fmt.Sprint(p.RemoteNetworks, p.Groups, p.Users)
	want := "[{corp [corp-a corp-b]}] [{engineering [alice@example.com bob@example.com]} {sre-leads [bob@example.com]}] [{alice@example.com " + AlicePassword + "} {bob@example.com " + BobPassword + "}]"
	if got != want {
		t.Fatalf("ApproverPolicy holds %s, want %s", got, want)
	}
}

// TestGet returns the status, the headers and the whole body, and fails
// the test on a request that cannot be made.
func TestGet(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, "short and stout "+r.URL.Path)
	}))
	defer srv.Close()
	resp, body := Get(t, srv.URL+"/pot")
	if resp.StatusCode != http.StatusTeapot || resp.Header.Get("Content-Type") != "text/plain" || body != "short and stout /pot" {
		t.Fatalf("GET: %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	srv.Close()
	if r := run(func(tb testing.TB) { Get(tb, srv.URL) }); r.failed == "" {
		t.Fatal("GET from a closed server did not fail the test")
	}
}

// TestFreeAddr: the address names the host asked for and a port that can
// be listened on at once, for either network; another network fails.
func TestFreeAddr(t *testing.T) {
	for _, network := range []string{"tcp", "udp"} {
		addr := FreeAddr(t, network, "127.0.0.1")
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host != "127.0.0.1" || port == "0" {
			t.Fatalf("%s: %q (%v)", network, addr, err)
		}
		var c io.Closer
		if network == "tcp" {
			c, err = net.Listen(network, addr)
		} else {
			c, err = net.ListenPacket(network, addr)
		}
		if err != nil {
			t.Fatalf("%s %s was not free: %v", network, addr, err)
		}
		c.Close()
	}
	if r := run(func(tb testing.TB) { FreeAddr(tb, "sctp", "127.0.0.1") }); r.failed == "" {
		t.Fatal("FreeAddr with an unknown network did not fail")
	}
}

// alone runs the calling test again in a process of its own and reports
// whether it did (the caller returns): goroutines that other tests of this
// package leave behind for a moment would move the count these tests judge.
func alone(t *testing.T) bool {
	t.Helper()
	const env = "POSTERN_TESTENV_ALONE"
	if os.Getenv(env) == t.Name() {
		return false
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), env+"="+t.Name())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s in a process of its own: %v\n%s", t.Name(), err, out)
	}
	return true
}

func TestWaitGoroutinesWaitsForEnd(t *testing.T) {
	if alone(t) {
		return
	}
	before := runtime.NumGoroutine()
	stop := make(chan struct{})
	go func() { <-stop }()
	time.AfterFunc(50*time.Millisecond, func() { close(stop) })
	WaitGoroutines(t, before, 5*time.Second)
	select {
	case <-stop:
	default:
		t.Fatal("WaitGoroutines returned while the goroutine still ran")
	}
}

func TestWaitGoroutinesFailsOnLeak(t *testing.T) {
	if alone(t) {
		return
	}
	stop := make(chan struct{})
	defer close(stop)
	before := runtime.NumGoroutine()
	go func() { <-stop }()
	ft := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		WaitGoroutines(ft, before, 100*time.Millisecond)
	}()
	<-done
	if !strings.Contains(ft.msg, "goroutines leaked") {
		t.Fatalf("a leaked goroutine was not reported: %q", ft.msg)
	}
}

// leakMarkerBlocked is a function name that only the goroutine of
// TestWaitNoGoroutines runs in.
func leakMarkerBlocked(stop <-chan struct{}) { <-stop }

func TestWaitNoGoroutines(t *testing.T) {
	isMarked := func(g string) bool { return strings.Contains(g, "testenv.leakMarkerBlocked") }
	if err := WaitNoGoroutines(time.Second, isMarked); err != nil {
		t.Fatalf("no marked goroutine runs, yet: %v", err)
	}
	// The caller's own goroutine never counts.
	if err := WaitNoGoroutines(time.Second, func(g string) bool { return strings.Contains(g, "TestWaitNoGoroutines") }); err != nil {
		t.Fatalf("the caller's goroutine was counted: %v", err)
	}
	stop := make(chan struct{})
	go leakMarkerBlocked(stop)
	err := WaitNoGoroutines(100*time.Millisecond, isMarked)
	if err == nil || !strings.Contains(err.Error(), "1 goroutines still running") || !strings.Contains(err.Error(), "leakMarkerBlocked") {
		t.Fatalf("a running goroutine was not reported with its stack: %v", err)
	}
	time.AfterFunc(50*time.Millisecond, func() { close(stop) })
	if err := WaitNoGoroutines(5*time.Second, isMarked); err != nil {
		t.Fatalf("the goroutine ended, yet: %v", err)
	}
}

// fatalTB records a Fatalf and ends its goroutine, as testing.T does, without
// failing the test that runs it.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
