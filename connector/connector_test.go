package connector

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/wire"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := checkNoLeaks(10 * time.Second); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// checkNoLeaks waits until no goroutine runs connector or quic-go code.
func checkNoLeaks(wait time.Duration) error {
	return testenv.WaitNoGoroutines(wait, func(g string) bool {
		return !strings.Contains(g, "testing.(*M)") &&
			(strings.Contains(g, "postern.dev/postern/connector.") || strings.Contains(g, "quic-go/quic-go."))
	})
}

const labYAML = `
remote_networks:
  - name: corp
    connectors: [corp-a]
groups:
  - name: engineering
    users: [alice@example.com]
  - name: sales
    users: [bob@example.com]
users:
  - email: alice@example.com
    password: "alice-password-1"
  - email: bob@example.com
    password: "bob-password-12"
resources:
  - name: echo
    address: 127.0.0.1
    network: corp
    ports: [tcp/{{ECHO}}, udp/{{UDP}}, icmp]
    groups: [engineering]
  - name: wiki
    address: "*.corp.internal"
    network: corp
    ports: [tcp/{{NAMEPORT}}]
    groups: [engineering]
  - name: lab
    address: 127.0.0.0/29
    network: corp
    ports: [tcp]
    groups: [engineering]
  - name: crm
    address: 127.0.0.1
    network: corp
    ports: [tcp/{{ECHO}}]
    groups: [sales]
`

type env struct {
	*lab
	echoPort, namePort, udpPort uint16
	yaml                        string
	alice                       *device
}

// echoFlow is the header of a TCP flow to the echo server through resource
// id (an ID, as e.resourceID returns).
func (e *env) echoFlow(id string) wire.OpenHeader {
	return wire.OpenHeader{Proto: wire.ProtoTCP, Port: e.echoPort, ResourceID: id, Destination: "127.0.0.1"}
}

func (e *env) render(y string) string {
	r := strings.NewReplacer("{{ECHO}}", fmt.Sprint(e.echoPort), "{{NAMEPORT}}", fmt.Sprint(e.namePort), "{{UDP}}", fmt.Sprint(e.udpPort))
	return r.Replace(y)
}

func newEnv(t testing.TB, tune func(*Config)) *env {
	e := &env{}
	_, e.echoPort = testenv.EchoTCP(t, "127.0.0.1:0")
	_, e.udpPort = testenv.EchoUDP(t, "127.0.0.1:0")
	e.namePort = e.echoPort
	if ip := hostIPOrEmpty(); ip != "" {
		_, e.namePort = testenv.EchoTCP(t, ip+":0")
		setName("db.corp.internal", ip)
		setName("a.b.corp.internal", ip)
		setName("corp.internal", ip)
		setName("corp.internal.evil.test", ip)
		setName("xcorp.internal", ip)
		setName("loop.corp.internal", "127.0.0.1")
	}
	e.yaml = e.render(labYAML)
	e.lab = newLab(t, e.yaml, tune)
	e.alice = e.login("alice@example.com", "alice-password-1")
	return e
}

func hostIPOrEmpty() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() && !ipn.IP.IsLinkLocalUnicast() {
			return ipn.IP.String()
		}
	}
	return ""
}

func echoRoundTrip(t testing.TB, st io.ReadWriter, msg string) {
	t.Helper()
	if _, err := st.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(st, buf); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(buf) != msg {
		t.Fatalf("echo: got %q want %q", buf, msg)
	}
}

func TestAllowedFlowHalfCloseAndEvent(t *testing.T) {
	e := newEnv(t, nil)
	cc := e.alice.connect()
	id := e.resourceID("echo")
	st, status, msg := cc.open(e.echoFlow(id))
	if status != wire.StatusOK {
		t.Fatalf("status %v %s", status, msg)
	}
	echoRoundTrip(t, st, "hello through the postern")
	// Half-close: our FIN reaches the server, which then closes its side.
	big := bytes.Repeat([]byte("x"), 1<<20)
	go func() { st.Write(big); st.Close() }()
	got, err := io.ReadAll(st)
	if err != nil {
		t.Fatalf("read after half-close: %v", err)
	}
	if !bytes.Equal(got, big) {
		t.Fatalf("got %d bytes back, want %d", len(got), len(big))
	}
	// The flow is reported as a network event.
	e.eventually(10*time.Second, "flow event", func() bool {
		var out struct {
			Items []struct {
				controlapi.FlowEvent
			} `json:"items"`
		}
		if e.adminGet("/api/v1/events", &out) != nil {
			return false
		}
		for _, ev := range out.Items {
			if ev.ResourceID == id && ev.Result == "ok" && ev.Principal == e.alice.pid && ev.Device == e.alice.id &&
				ev.BytesUp == int64(len(big))+25 && ev.BytesDown == int64(len(big))+25 && ev.Protocol == "tcp" {
				return true
			}
		}
		return false
	})
}

func TestRefusals(t *testing.T) {
	e := newEnv(t, nil)
	cc := e.alice.connect()
	echo, crm := e.resourceID("echo"), e.resourceID("crm")
	cases := []struct {
		name string
		h    wire.OpenHeader
		want wire.Status
	}{
		{"unauthorized resource", e.echoFlow(crm), wire.StatusDenied},
		{"unknown resource", e.echoFlow("nope"), wire.StatusDenied},
		{"port not allowed", wire.OpenHeader{Proto: wire.ProtoTCP, Port: 22, ResourceID: echo, Destination: "127.0.0.1"}, wire.StatusDenied},
		{"protocol not allowed", wire.OpenHeader{Proto: wire.ProtoUDP, Port: e.echoPort, ResourceID: echo, Destination: "127.0.0.1"}, wire.StatusDenied},
		{"address outside an IP resource", wire.OpenHeader{Proto: wire.ProtoTCP, Port: e.echoPort, ResourceID: echo, Destination: "127.0.0.2"}, wire.StatusDenied},
		{"address outside the CIDR", wire.OpenHeader{Proto: wire.ProtoTCP, Port: e.echoPort, ResourceID: e.resourceID("lab"), Destination: "127.0.0.9"}, wire.StatusDenied},
		{"name for an address resource", wire.OpenHeader{Proto: wire.ProtoTCP, Port: e.echoPort, ResourceID: echo, Destination: "localhost"}, wire.StatusDenied},
	}
	for _, tc := range cases {
		_, got, msg := cc.open(tc.h)
		if got != tc.want {
			t.Errorf("%s: status %v (%s), want %v", tc.name, got, msg, tc.want)
		}
	}
	// Inside the CIDR, allowed; a closed port is refused.
	st, got, msg := cc.open(e.echoFlow(e.resourceID("lab")))
	if got != wire.StatusOK {
		t.Fatalf("inside CIDR: %v %s", got, msg)
	}
	echoRoundTrip(t, st, "cidr")
	st.Close()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	if _, got, msg := cc.open(wire.OpenHeader{Proto: wire.ProtoTCP, Port: closed, ResourceID: e.resourceID("lab"), Destination: "127.0.0.1"}); got != wire.StatusRefused {
		t.Fatalf("closed port: %v %s, want refused", got, msg)
	}
	// The connection still works after every refusal.
	st, got, _ = cc.open(e.echoFlow(echo))
	if got != wire.StatusOK {
		t.Fatalf("after refusals: %v", got)
	}
	echoRoundTrip(t, st, "still fine")
}

func TestWildcardNames(t *testing.T) {
	if hostIPOrEmpty() == "" {
		t.Skip("no non-loopback IPv4 address on this host")
	}
	e := newEnv(t, nil)
	cc := e.alice.connect()
	wiki := e.resourceID("wiki")
	for _, name := range []string{"db.corp.internal", "a.b.corp.internal", "DB.Corp.Internal."} {
		st, got, msg := cc.open(wire.OpenHeader{Proto: wire.ProtoTCP, Port: e.namePort, ResourceID: wiki, Destination: name})
		if got != wire.StatusOK {
			t.Fatalf("%s: %v %s", name, got, msg)
		}
		echoRoundTrip(t, st, "name "+name)
		st.Close()
	}
	for _, name := range []string{"corp.internal", "corp.internal.evil.test", "xcorp.internal", "db.corp.internal.evil.test"} {
		if _, got, msg := cc.open(wire.OpenHeader{Proto: wire.ProtoTCP, Port: e.namePort, ResourceID: wiki, Destination: name}); got != wire.StatusDenied {
			t.Errorf("%s: %v %s, want denied", name, got, msg)
		}
	}
	// A matching name that resolves to loopback is never dialed.
	if _, got, msg := cc.open(wire.OpenHeader{Proto: wire.ProtoTCP, Port: e.echoPort, ResourceID: wiki, Destination: "loop.corp.internal"}); got != wire.StatusDenied {
		t.Errorf("loopback name: %v %s, want denied", got, msg)
	}
	// An IP address for a name resource is not accepted either.
	if _, got, _ := cc.open(wire.OpenHeader{Proto: wire.ProtoTCP, Port: e.namePort, ResourceID: wiki, Destination: hostIPOrEmpty()}); got != wire.StatusDenied {
		t.Errorf("IP for a name resource: %v, want denied", got)
	}
	// A name that does not resolve is unreachable.
	if _, got, _ := cc.open(wire.OpenHeader{Proto: wire.ProtoTCP, Port: e.namePort, ResourceID: wiki, Destination: "missing.corp.internal"}); got != wire.StatusUnreachable {
		t.Errorf("unresolvable name: %v, want unreachable", got)
	}
}

func TestPolicyChangeClosesLiveFlow(t *testing.T) {
	e := newEnv(t, nil)
	cc := e.alice.connect()
	echo := e.resourceID("echo")
	st := cc.mustOpen(e.echoFlow(echo), "flow")
	echoRoundTrip(t, st, "before")
	// A flow to another resource that stays allowed.
	keep := cc.mustOpen(e.echoFlow(e.resourceID("lab")), "flow")
	ended := make(chan time.Time, 1)
	go func() {
		io.Copy(io.Discard, st)
		ended <- time.Now()
	}()
	// Remove the echo port from the resource.
	rev0 := e.c.policy.Load().rev
	applied := make(chan time.Time, 1)
	go func() {
		for e.c.policy.Load().rev == rev0 {
			time.Sleep(2 * time.Millisecond)
		}
		applied <- time.Now()
	}()
	start := time.Now()
	e.apply(strings.Replace(e.yaml, fmt.Sprintf("ports: [tcp/%d, udp/%d, icmp]", e.echoPort, e.udpPort), "ports: [tcp/1]", 1))
	select {
	case at := <-ended:
		got := <-applied
		total, own := at.Sub(start), at.Sub(got)
		t.Logf("flow closed %v after the change was committed; %v after the connector received the new policy", total, own)
		// The connector's part: close within 1 s of receiving the policy.
		// End to end it also includes the controller's push (at most 1 s by
		// the controlapi contract).
		if own > time.Second || total > 2*time.Second {
			t.Errorf("flow closed %v after the commit (%v after receipt), want within 1 s of receipt", total, own)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("flow not closed after the policy change")
	}
	echoRoundTrip(t, keep, "unaffected")
	if _, status, _ := cc.open(e.echoFlow(echo)); status != wire.StatusDenied {
		t.Fatalf("new flow after the change: %v, want denied", status)
	}
}

func TestFailStatic(t *testing.T) {
	e := newEnv(t, nil)
	cc := e.alice.connect()
	echo := e.resourceID("echo")
	st := cc.mustOpen(e.echoFlow(echo), "flow")
	tr := e.alice.token() // a valid token for later
	e.stopCtl()
	e.stopCtl = func() {}
	e.eventually(15*time.Second, "connector to notice the controller is gone", func() bool { return !e.c.controllerOK.Load() })
	echoRoundTrip(t, st, "established flow keeps running")
	st2 := cc.mustOpen(e.echoFlow(echo), "new flow with the controller down")
	echoRoundTrip(t, st2, "new flow on the same connection")
	if _, status, _ := cc.open(e.echoFlow(e.resourceID("crm"))); status != wire.StatusDenied {
		t.Fatalf("nothing new granted: %v", status)
	}
	if h := e.c.Health(); h.Status != "degraded" {
		t.Fatalf("health %+v, want degraded", h)
	}
	// A restarted connector enforces the stored policy without the controller.
	e.stopC()
	e.stopC = func() {}
	c2, err := Open(Config{StateDir: e.stateDir, ListenUDP: "127.0.0.1:0", Logger: testenv.Logger(t), Resolver: e.resolver})
	if err != nil {
		t.Fatal(err)
	}
	if !c2.Ready() {
		t.Fatal("restarted connector has no stored policy")
	}
	c2.Close()
	_ = tr
}

func TestMalformedHeadersDoNotHarmOtherStreams(t *testing.T) {
	e := newEnv(t, nil)
	cc := e.alice.connect()
	echo := e.resourceID("echo")
	good := cc.mustOpen(e.echoFlow(echo), "flow")
	oversized := []byte{wire.Version, wire.KindOpen, 0xff, 0xff}
	badVersion := []byte{9, wire.KindOpen, 0, 1, 0}
	badKind := []byte{wire.Version, 77, 0, 0}
	tokenKind := append([]byte{wire.Version, wire.KindToken, 0, 3}, "abc"...)
	badProto := append([]byte{wire.Version, wire.KindOpen, 0, 7}, 99, 0, 22, 0, 1, 'x', 0)
	emptyDst := append([]byte{wire.Version, wire.KindOpen, 0, 5}, wire.ProtoTCP, 0, 22, 0, 0)
	lenMismatch := append([]byte{wire.Version, wire.KindOpen, 0, 8}, wire.ProtoTCP, 0, 22, 200, 'a', 'b', 1, 'c')
	for name, raw := range map[string][]byte{
		"oversized": oversized, "bad version": badVersion, "unknown kind": badKind, "token kind": tokenKind,
		"bad protocol": badProto, "empty destination": emptyDst, "length mismatch": lenMismatch,
	} {
		st, err := cc.conn.OpenStreamSync(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		st.Write(raw)
		if name == "oversized" {
			st.Write(bytes.Repeat([]byte("A"), 4096))
		}
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, msg, err := wire.ReadStatus(st)
		if err != nil || got != wire.StatusBadRequest {
			t.Errorf("%s: %v %v %s, want bad request", name, err, got, msg)
		}
		st.CancelWrite(0)
	}
	// A truncated header (the client gives up) resets only that stream.
	st, _ := cc.conn.OpenStreamSync(context.Background())
	st.Write([]byte{wire.Version, wire.KindOpen, 0, 20, wire.ProtoTCP})
	st.Close()
	st.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, _, err := wire.ReadStatus(st); err == nil && got != wire.StatusBadRequest {
		t.Errorf("truncated header: %v", got)
	}
	echoRoundTrip(t, good, "the good stream survives")
	st3 := cc.mustOpen(e.echoFlow(echo), "new flow after malformed ones")
	echoRoundTrip(t, st3, "and new ones work")
}

func TestUDPFlowAndIdleTimeout(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.UDPIdleTimeout = 500 * time.Millisecond })
	cc := e.alice.connect()
	st, status, msg := cc.open(wire.OpenHeader{Proto: wire.ProtoUDP, Port: e.udpPort, ResourceID: e.resourceID("echo"), Destination: "127.0.0.1"})
	if status != wire.StatusOK {
		t.Fatalf("%v %s", status, msg)
	}
	buf := make([]byte, wire.MaxDatagram)
	for _, m := range []string{"one", "two", strings.Repeat("z", 1400)} {
		if err := wire.WriteDatagram(st, []byte(m)); err != nil {
			t.Fatal(err)
		}
		d, err := wire.ReadDatagram(st, buf)
		if err != nil || string(d) != m {
			t.Fatalf("datagram echo: %v %q", err, d)
		}
	}
	start := time.Now()
	if _, err := wire.ReadDatagram(st, buf); err == nil {
		t.Fatal("flow not ended by the idle timeout")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("idle flow ended after %v", d)
	}
}

func TestICMPEcho(t *testing.T) {
	if os.Geteuid() != 0 {
		b, _ := os.ReadFile("/proc/sys/net/ipv4/ping_group_range")
		testenv.Require(t, !strings.HasPrefix(string(b), "1\t0"), "ICMP test needs root or net.ipv4.ping_group_range")
	}
	e := newEnv(t, nil)
	cc := e.alice.connect()
	st, status, msg := cc.open(wire.OpenHeader{Proto: wire.ProtoICMP, ResourceID: e.resourceID("echo"), Destination: "127.0.0.1"})
	if status != wire.StatusOK {
		t.Fatalf("%v %s", status, msg)
	}
	buf := make([]byte, wire.MaxDatagram)
	for seq := uint16(1); seq <= 3; seq++ {
		body := binary.BigEndian.AppendUint16(nil, 0x4242)
		body = binary.BigEndian.AppendUint16(body, seq)
		body = append(body, "ping payload"...)
		if err := wire.WriteDatagram(st, body); err != nil {
			t.Fatal(err)
		}
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		d, err := wire.ReadDatagram(st, buf)
		if err != nil {
			t.Fatalf("echo reply: %v", err)
		}
		if !bytes.Equal(d, body) {
			t.Fatalf("echo reply body %x, want %x", d, body)
		}
	}
	// ICMP to a port-bearing header is a bad request.
	if _, status, _ := cc.open(wire.OpenHeader{Proto: wire.ProtoICMP, Port: 5, ResourceID: e.resourceID("echo"), Destination: "127.0.0.1"}); status != wire.StatusBadRequest {
		t.Fatalf("icmp with a port: %v", status)
	}
}

func TestFlowsPipelinedWithTheToken(t *testing.T) {
	e := newEnv(t, nil)
	h := e.echoFlow(e.resourceID("echo"))
	openNow := func(conn *quic.Conn) *quic.Stream {
		st, err := conn.OpenStreamSync(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := wire.WriteOpen(st, h); err != nil {
			t.Fatal(err)
		}
		return st
	}
	// A flow sent right behind the token (without waiting for its status) is served.
	tr := e.alice.token()
	conn, err := e.alice.dial(tr.CertSHA256)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	ctrl, _ := conn.OpenStreamSync(context.Background())
	wire.WriteFrame(ctrl, wire.KindToken, []byte(tr.Token))
	st := openNow(conn)
	if s, msg, err := wire.ReadStatus(st); err != nil || s != wire.StatusOK {
		t.Fatalf("pipelined flow: %v %v %s", err, s, msg)
	}
	echoRoundTrip(t, st, "pipelined")
	// Behind a refused token, flows are unauthenticated.
	conn2, err := e.alice.dial(tr.CertSHA256)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.CloseWithError(0, "")
	ctrl2, _ := conn2.OpenStreamSync(context.Background())
	wire.WriteFrame(ctrl2, wire.KindToken, []byte("eyJhbGciOiJFZERTQSJ9.e30.AAAA"))
	st2 := openNow(conn2)
	if s, _, err := wire.ReadStatus(st2); err == nil && s != wire.StatusUnauthenticated {
		t.Fatalf("flow behind a bad token: %v", s)
	}
}
