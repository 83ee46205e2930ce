package client

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/internal/testenv/netnstest"
	"postern.dev/postern/localapi"
)

// netLab is three network namespaces: the employee device (cli), the
// private network's connector host (conn, also running the controller) and
// a private server (srv) that only conn can reach.
//
//	cli 198.18.0.1 --- 198.18.0.2 conn 198.19.0.1 --- 198.19.0.10 srv
type netLab struct {
	t              testing.TB
	cli, conn, srv string
	bin            string
	dir            string
	procs          []*exec.Cmd
	daemons        []*exec.Cmd
	ctlURL, caFile string
	adminTok       string
}

func requireRoot(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t, "network namespaces, TUN")
	testenv.RequireTools(t, "ip", "curl", "dig", "ping")
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func newNetLab(t testing.TB) *netLab {
	requireRoot(t)
	sfx := netnstest.Unique("")
	l := &netLab{t: t, cli: "pstc" + sfx, conn: "pstk" + sfx, srv: "psts" + sfx, dir: t.TempDir()}
	// Resolvers that exist only inside the lab; the private server's name,
	// known only inside the connector's network.
	const resolv = "nameserver 198.18.0.2\n"
	netnstest.Add(t, l.cli, resolv, "")
	netnstest.Add(t, l.conn, resolv, "127.0.0.1 localhost\n198.19.0.10 app.corp.internal\n")
	netnstest.Add(t, l.srv, resolv, "")
	netnstest.Link(t, l.cli, "pcli0", "198.18.0.1/24", l.conn, "pcon0", "198.18.0.2/24")
	netnstest.Link(t, l.conn, "pcon1", "198.19.0.1/24", l.srv, "psrv0", "198.19.0.10/24")
	return l
}

// runningNetLab is a netLab with the programs built, the private server up
// and the controller and connector running; -short skips the test.
func runningNetLab(t *testing.T) *netLab {
	t.Helper()
	if testing.Short() {
		t.Skip("network-namespace test")
	}
	l := newNetLab(t)
	l.build()
	l.startServer()
	l.startControlPlane()
	return l
}

// build compiles the programs the lab runs.
func (l *netLab) build() {
	t := l.t
	l.bin = filepath.Join(l.dir, "bin")
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", l.bin+"/", "./cmd/posternd", "./cmd/postern", "./cmd/postern-controller", "./cmd/postern-connector")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build programs: %v\n%s", err, out)
	}
}

// start runs a program inside a namespace; it is killed (by pid) at cleanup.
func (l *netLab) start(ns, logName string, stdin io.Reader, prog string, args ...string) *exec.Cmd {
	t := l.t
	t.Helper()
	path := prog
	if !filepath.IsAbs(prog) {
		path = filepath.Join(l.bin, prog)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, path}, args...)...)
	logf, err := os.Create(filepath.Join(l.dir, logName+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr, cmd.Stdin = logf, logf, stdin
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", prog, err)
	}
	l.procs = append(l.procs, cmd)
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("--- %s log:\n%s", logName, tail(string(b), 4000))
		}
	})
	return cmd
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// exec runs a program inside a namespace and returns its output.
func (l *netLab) exec(ns string, stdin string, prog string, args ...string) (string, error) {
	path := prog
	if !strings.Contains(prog, "/") {
		if _, err := os.Stat(filepath.Join(l.bin, prog)); err == nil {
			path = filepath.Join(l.bin, prog)
		}
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, path}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// blob is the deterministic content the private server serves.
type blobReader struct{ r *mrand.ChaCha8 }

func newBlob() io.Reader {
	var seed [32]byte
	copy(seed[:], "postern netns transfer test seed")
	return blobReader{mrand.NewChaCha8(seed)}
}

func (b blobReader) Read(p []byte) (int, error) { return b.r.Read(p) }

const blobSize = 100 << 20

// startServer runs the private HTTP server inside srv.
func (l *netLab) startServer() {
	t := l.t
	var ln net.Listener
	netnstest.In(t, l.srv, func() {
		var err error
		ln, err = net.Listen("tcp", "198.19.0.10:8080")
		if err != nil {
			t.Errorf("listen in %s: %v", l.srv, err)
		}
	})
	if ln == nil {
		t.FailNow()
	}
	// A DNS server of the private network (udp/53 resource).
	var pc net.PacketConn
	netnstest.In(t, l.srv, func() {
		var err error
		pc, err = net.ListenPacket("udp", "198.19.0.10:53")
		if err != nil {
			t.Errorf("listen udp in %s: %v", l.srv, err)
		}
	})
	if pc == nil {
		t.FailNow()
	}
	ds := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if len(r.Question) == 1 && r.Question[0].Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(198, 19, 0, 77)})
		}
		_ = w.WriteMsg(m)
	})}
	go ds.ActivateAndServe()
	t.Cleanup(func() { _ = ds.Shutdown() })
	mux := http.NewServeMux()
	mux.HandleFunc("/blob", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(blobSize))
		_, _ = io.CopyN(w, newBlob(), blobSize)
	})
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "hello from the private network\n")
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

var netnsYAML = testenv.CorpPolicy(testenv.AlicePassword, "corp-a") + `resources:
  - name: app
    address: app.corp.internal
    network: corp
    ports: [tcp/8080]
    groups: [engineering]
  - name: srv
    address: 198.19.0.10
    network: corp
    ports: [tcp/8080, tcp/9090, tcp/7000-7009, udp/53, icmp]
    groups: [engineering]
`

// startControlPlane runs the controller and one connector in conn.
func (l *netLab) startControlPlane() {
	t := l.t
	data := filepath.Join(l.dir, "controller")
	l.ctlURL = "https://198.18.0.2:8443"
	l.start(l.conn, "controller", nil, "postern-controller", "serve", "--data", data, "--listen", "198.18.0.2:8443", "--public-url", l.ctlURL)
	l.caFile = filepath.Join(data, "ca.pem")
	tokFile := filepath.Join(data, "admin-token")
	testenv.Eventually(t, 20*time.Second, "controller up", func() bool {
		_, err := l.exec(l.conn, "", "curl", "-sf", "--cacert", l.caFile, l.ctlURL+"/healthz")
		return err == nil
	})
	yamlFile := filepath.Join(l.dir, "network.yaml")
	if err := os.WriteFile(yamlFile, []byte(netnsYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := l.exec(l.conn, "", "postern-controller", "apply", "--url", l.ctlURL, "--ca", l.caFile, "--token-file", tokFile, "-f", yamlFile); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	out, err := l.exec(l.conn, "", "postern-controller", "connector-token", "--url", l.ctlURL, "--ca", l.caFile, "--token-file", tokFile, "corp-a")
	if err != nil {
		t.Fatalf("connector-token: %v\n%s", err, out)
	}
	tok := strings.TrimSpace(out)
	if i := strings.LastIndex(tok, "\n"); i >= 0 {
		tok = strings.TrimSpace(tok[i+1:])
	}
	l.start(l.conn, "connector", nil, "postern-connector", "--token", tok, "--state", filepath.Join(l.dir, "connector"), "--listen-udp", "198.18.0.2:4433", "--metrics", "198.18.0.2:9464")
}

// startDaemon runs posternd in cli and signs it in with the CLI.
func (l *netLab) startDaemon(name string, extra ...string) string {
	t := l.t
	state := filepath.Join(l.dir, name)
	sock := filepath.Join(state, localapi.SocketName)
	l.daemons = append(l.daemons, l.start(l.cli, name, nil, "posternd", append([]string{"--state", state}, extra...)...))
	testenv.Eventually(t, 10*time.Second, name+" socket", func() bool {
		_, err := os.Stat(sock)
		return err == nil
	})
	out, err := l.exec(l.cli, "alice-password-1\n", "postern", "--socket", sock, "login", "--controller", l.ctlURL, "--ca", l.caFile, "--user", "alice@example.com", "--password-stdin")
	if err != nil {
		t.Fatalf("postern login: %v\n%s", err, out)
	}
	return sock
}

func (l *netLab) status(sock string) localapi.Status {
	out, err := l.exec(l.cli, "", "postern", "--socket", sock, "status", "--json")
	var st localapi.Status
	if err != nil || json.Unmarshal([]byte(out), &st) != nil {
		l.t.Fatalf("postern status --json: %v\n%s", err, out)
	}
	return st
}

// TestTUNThroughConnector drives a real TUN daemon in front of a real
// connector: names through the DNS proxy, 100 MB with matching SHA-256, a
// refused port answered with RST within 100 ms, and SOCKS5 mode with
// curl --socks5-hostname.
func TestTUNThroughConnector(t *testing.T) {
	l := runningNetLab(t)
	sock := l.startDaemon("tun", "--tun", "pst0", "--metrics", "127.0.0.1:9465")

	// By name: the OS resolver in cli points at the DNS proxy.
	var out string
	var err error
	testenv.Eventually(t, 30*time.Second, "curl by name through the TUN", func() bool {
		out, err = l.exec(l.cli, "", "curl", "-sS", "--max-time", "5", "http://app.corp.internal:8080/hello")
		return err == nil
	})
	if !strings.Contains(out, "hello from the private network") {
		t.Fatalf("curl by name: %q", out)
	}

	// 100 MB by address, SHA-256 compared.
	h := sha256.New()
	_, _ = io.CopyN(h, newBlob(), blobSize)
	want := hex.EncodeToString(h.Sum(nil))
	start := time.Now()
	out, err = l.exec(l.cli, "", "/bin/sh", "-c", "curl -sS --max-time 300 http://198.19.0.10:8080/blob | sha256sum")
	el := time.Since(start)
	if err != nil || !strings.HasPrefix(out, want) {
		t.Fatalf("100 MB transfer: %v\n%s\nwant %s", err, out, want)
	}
	t.Logf("100 MB through TUN, netstack, QUIC and connector in %v (%.0f Mbit/s)", el, float64(blobSize*8)/el.Seconds()/1e6)

	// Upload with half-close: the server hashes what it gets until our FIN,
	// then answers with the hash.
	var sink net.Listener
	netnstest.In(t, l.srv, func() { sink, _ = net.Listen("tcp", "198.19.0.10:7000") })
	if sink == nil {
		t.Fatal("listen for the upload sink")
	}
	defer sink.Close()
	go func() {
		c, err := sink.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		h := sha256.New()
		_, _ = io.Copy(h, c)
		_, _ = io.WriteString(c, hex.EncodeToString(h.Sum(nil)))
	}()
	up, err := dialIn(t, l.cli, "198.19.0.10:7000")
	if err != nil {
		t.Fatalf("dial upload sink: %v", err)
	}
	payload := make([]byte, 20<<20)
	_, _ = rand.Read(payload)
	sum := sha256.Sum256(payload)
	if _, err := up.Write(payload); err != nil {
		t.Fatalf("upload: %v", err)
	}
	_ = up.(*net.TCPConn).CloseWrite()
	_ = up.SetReadDeadline(time.Now().Add(60 * time.Second))
	got, err := io.ReadAll(up)
	up.Close()
	if err != nil || string(got) != hex.EncodeToString(sum[:]) {
		t.Errorf("upload of 20 MiB with half-close: hash %q err %v", got, err)
	}

	// Refusals: a port outside the policy and a closed port inside it.
	for _, port := range []string{"9999", "9090"} {
		var derr error
		var took time.Duration
		netnstest.In(t, l.cli, func() {
			s := time.Now()
			c, err := net.DialTimeout("tcp", "198.19.0.10:"+port, 3*time.Second)
			took = time.Since(s)
			if c != nil {
				c.Close()
			}
			derr = err
		})
		if !errors.Is(derr, syscall.ECONNREFUSED) {
			t.Errorf("port %s: %v, want connection refused", port, derr)
		}
		if took > 100*time.Millisecond {
			t.Errorf("port %s refused after %v, want within 100 ms", port, took)
		}
	}

	// UDP: the private network's DNS server as a udp/53 resource.
	out, err = l.exec(l.cli, "", "dig", "+short", "+time=3", "+tries=2", "@198.19.0.10", "intranet.example")
	if err != nil || strings.TrimSpace(out) != "198.19.0.77" {
		t.Errorf("dig through the tunnel: %v %q", err, out)
	}
	// ICMP: the connector's real ping answers.
	out, err = l.exec(l.cli, "", "ping", "-c", "2", "-W", "3", "198.19.0.10")
	if err != nil || !strings.Contains(out, "2 received") {
		t.Errorf("ping through the tunnel: %v\n%s", err, out)
	}

	// posternd --metrics: the name lookups above went through the DNS proxy
	// and the flows through one connector.
	out, err = l.exec(l.cli, "", "curl", "-sS", "--max-time", "5", "http://127.0.0.1:9465/metrics")
	if err != nil {
		t.Fatalf("posternd metrics: %v %s", err, out)
	}
	for _, re := range []string{
		`(?m)^postern_client_dns_queries_total\{rcode="NOERROR"\} [1-9]`,
		`(?m)^postern_client_dns_query_duration_seconds_count [1-9]`,
		`(?m)^postern_client_connector_path\{connector="[^"]+",path="direct",transport="udp"\} 1$`,
		`(?m)^postern_client_flows_total [1-9]`,
		`(?m)^postern_client_bytes_total\{direction="down"\} [1-9]`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("posternd metrics lack %s", re)
		}
	}

	st := l.status(sock)
	if st.State != localapi.StateConnected || st.Principal == nil || st.Principal.Name != "alice@example.com" {
		t.Errorf("status: state %s principal %+v", st.State, st.Principal)
	}
	if len(st.Connectors) != 1 || st.Connectors[0].Path != "direct" || st.Connectors[0].RTTMillis <= 0 {
		t.Errorf("status connectors: %+v", st.Connectors)
	}
	if st.BytesDown < blobSize {
		t.Errorf("status bytes down %d", st.BytesDown)
	}

	// Split tunnel: only resource ranges go to the TUN.
	routes, _ := l.exec(l.cli, "", "ip", "route", "show", "table", "all")
	if !strings.Contains(routes, "198.19.0.10 dev pst0") || !strings.Contains(routes, "100.96.0.0/12 dev pst0") {
		t.Errorf("routes in cli:\n%s", routes)
	}
	if strings.Contains(routes, "default dev pst0") {
		t.Errorf("TUN took the default route:\n%s", routes)
	}

	// SOCKS5 mode: a second daemon, no TUN.
	// Clients sign in with the credentials the daemon wrote (0600).
	ssock := l.startDaemon("socks", "--socks5", "127.0.0.1:1080")
	secretFile := filepath.Join(l.dir, "socks", SOCKS5SecretName)
	var creds string
	testenv.Eventually(t, 20*time.Second, "curl --socks5-hostname --proxy-user", func() bool {
		b, err := os.ReadFile(secretFile)
		if err != nil {
			return false
		}
		creds = strings.TrimSpace(string(b))
		out, err = l.exec(l.cli, "", "curl", "-sS", "--max-time", "5", "--socks5-hostname", "127.0.0.1:1080", "--proxy-user", creds, "http://app.corp.internal:8080/hello")
		return err == nil
	})
	if !strings.Contains(out, "hello from the private network") {
		t.Errorf("socks5: %q", out)
	}
	if fi, err := os.Stat(secretFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v, want mode 0600", secretFile, err)
	}
	if st := l.status(ssock); st.SOCKS5 == "" || st.TUN != "" || st.SOCKS5Secret != secretFile {
		t.Errorf("socks daemon status: %+v, want the secret file %s", st, secretFile)
	}
	// Without credentials, or with a wrong password, curl gets nothing.
	user, _, _ := strings.Cut(creds, ":")
	for _, args := range [][]string{{}, {"--proxy-user", user + ":wrong-password-123"}} {
		cmd := append([]string{"-sS", "--max-time", "5", "--socks5-hostname", "127.0.0.1:1080"}, args...)
		if out, err := l.exec(l.cli, "", "curl", append(cmd, "http://app.corp.internal:8080/hello")...); err == nil || strings.Contains(out, "hello") {
			t.Errorf("curl %v through SOCKS5 succeeded: %q", args, out)
		}
	}

	// postern down removes the routes; up restores them.
	if out, err := l.exec(l.cli, "", "postern", "--socket", sock, "down"); err != nil {
		t.Fatalf("postern down: %v\n%s", err, out)
	}
	routes, _ = l.exec(l.cli, "", "ip", "route", "show", "table", "all")
	if strings.Contains(routes, "pst0") {
		t.Errorf("routes left after down:\n%s", routes)
	}
	resolv, _ := os.ReadFile("/etc/netns/" + l.cli + "/resolv.conf")
	if !strings.Contains(string(resolv), "198.18.0.2") || strings.Contains(string(resolv), "100.96.0.53") {
		t.Errorf("resolv.conf not restored after down:\n%s", resolv)
	}
}
