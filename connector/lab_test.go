package connector

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller"
	"postern.dev/postern/internal/testenv"
	"postern.dev/postern/pki"
	"postern.dev/postern/wire"
)

// lab is an in-process controller plus one enrolled, running connector.
type lab struct {
	t        testing.TB
	ctx      context.Context
	ctl      *controller.Controller
	ctlDir   string
	ctlLn    net.Listener
	url      string
	hc       *http.Client
	c        *Connector
	stateDir string
	stopCtl  func()
	stopC    func()
	resolver *net.Resolver
	now      func() time.Time // the controller's clock (nil: time.Now)
}

// newLab starts a controller, applies yaml, enrolls connector "corp-a" and runs it.
func newLab(t testing.TB, yaml string, tune func(*Config)) *lab {
	t.Helper()
	return newLabAt(t, yaml, nil, tune)
}

// newLabAt is newLab with the controller judging time by now (nil: time.Now).
func newLabAt(t testing.TB, yaml string, now func() time.Time, tune func(*Config)) *lab {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	l := &lab{t: t, ctx: ctx, ctlDir: t.TempDir(), stateDir: t.TempDir(), now: now}
	l.startController()
	if _, err := l.ctl.ApplyYAML(ctx, []byte(yaml), false); err != nil {
		t.Fatalf("apply: %v", err)
	}
	tok, err := l.ctl.EnrollmentToken("connector", "corp-a", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Enroll(ctx, l.stateDir, tok, EnrollOptions{}); err != nil {
		t.Fatalf("enroll: %v", err)
	}
	l.resolver = startDNS(t, map[string]string{})
	l.startConnector(tune)
	return l
}

func (l *lab) startController() {
	t := l.t
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if l.ctlLn != nil {
		// Restart on the same port.
		ln.Close()
		ln, err = net.Listen("tcp", l.ctlLn.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
	}
	l.ctlLn = ln
	l.url = "https://" + ln.Addr().String()
	ctl, err := controller.Open(controller.Config{DataDir: l.ctlDir, PublicURL: l.url, Logger: testenv.Logger(t), Now: l.now})
	if err != nil {
		t.Fatal(err)
	}
	l.ctl = ctl
	ctx, cancel := context.WithCancel(l.ctx)
	done := make(chan struct{})
	go func() { defer close(done); ctl.Serve(ctx, ln) }()
	l.stopCtl = func() { cancel(); <-done; ctl.Close() }
	t.Cleanup(func() { l.stopCtl(); l.stopCtl = func() {} })
	ca, _ := pki.ParseCertPEM(ctl.CACertPEM())
	l.hc = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.CAPool(ca)}}}
}

func (l *lab) startConnector(tune func(*Config)) {
	t := l.t
	cfg := Config{StateDir: l.stateDir, ListenUDP: "127.0.0.1:0", Logger: testenv.Logger(t), Resolver: l.resolver}
	if tune != nil {
		tune(&cfg)
	}
	c, err := Open(cfg)
	if err != nil {
		t.Fatalf("open connector: %v", err)
	}
	l.c = c
	ctx, cancel := context.WithCancel(l.ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	l.stopC = func() { cancel(); <-done }
	t.Cleanup(func() { l.stopC(); l.stopC = func() {} })
	// Wait until the connector has its policy and the controller its digest.
	l.eventually(10*time.Second, "connector ready", func() bool {
		return c.Ready() && l.controllerDigest() == c.certs.current()
	})
}

func (l *lab) controllerDigest() string {
	var out struct {
		Items []struct {
			ID         string   `json:"id"`
			CertSHA256 []string `json:"cert_sha256"`
		} `json:"items"`
	}
	if err := l.adminGet("/api/v1/connectors", &out); err != nil {
		return ""
	}
	for _, it := range out.Items {
		if it.ID == l.c.ID() && len(it.CertSHA256) > 0 {
			return it.CertSHA256[0]
		}
	}
	return ""
}

func (l *lab) adminGet(path string, out any) error {
	return l.get(path, l.ctl.AdminToken(), out)
}

func (l *lab) apply(yaml string) {
	l.t.Helper()
	if _, err := l.ctl.ApplyYAML(l.ctx, []byte(yaml), false); err != nil {
		l.t.Fatalf("apply: %v", err)
	}
}

func (l *lab) eventually(d time.Duration, what string, f func() bool) {
	l.t.Helper()
	testenv.Eventually(l.t, d, what, f)
}

// resourceID finds a resource's id in the connector's policy by name.
func (l *lab) resourceID(name string) string {
	l.t.Helper()
	for _, r := range l.c.policy.Load().raw.Resources {
		if r.Name == name {
			return r.ID
		}
	}
	l.t.Fatalf("no resource %q in the connector's policy", name)
	return ""
}

// device is a signed-in test device.
type device struct {
	l       *lab
	key     ed25519.PrivateKey
	cert    tls.Certificate
	session string
	id      string
	pid     string
}

func (l *lab) login(email, password string) *device {
	l.t.Helper()
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	cert, err := pki.SelfSigned(key, "device", 24*time.Hour)
	if err != nil {
		l.t.Fatal(err)
	}
	var resp controlapi.LoginResponse
	err = l.post(controlapi.PathLogin, "", controlapi.LoginRequest{
		Email: email, Password: password, DevicePublicKey: base64.StdEncoding.EncodeToString(pub), DeviceName: "test",
	}, &resp)
	if err != nil {
		l.t.Fatalf("login %s: %v", email, err)
	}
	return &device{l: l, key: key, cert: cert, session: resp.SessionToken, id: resp.DeviceID, pid: resp.Principal.ID}
}

func (l *lab) post(path, bearer string, in, out any) error {
	b, _ := json.Marshal(in)
	req, _ := http.NewRequestWithContext(l.ctx, http.MethodPost, l.url+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := l.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %d %s", path, resp.StatusCode, data)
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

func (d *device) token() controlapi.TokenResponse {
	d.l.t.Helper()
	var tr controlapi.TokenResponse
	if err := d.l.post(controlapi.PathConnectionToken, d.session, controlapi.TokenRequest{ConnectorID: d.l.c.ID()}, &tr); err != nil {
		d.l.t.Fatalf("connection token: %v", err)
	}
	return tr
}

// dial opens QUIC to the connector, pinning digest, with the device cert.
func (d *device) dial(digest string) (*quic.Conn, error) {
	return d.dialOn(nil, digest)
}

// dialOn is dial from transport tr (nil: a socket of its own).
func (d *device) dialOn(tr *quic.Transport, digest string) (*quic.Conn, error) {
	tc := pki.PinnedPeerConfig(func() []string { return []string{digest} }, wire.ServerName(digest), []string{wire.ALPN})
	tc.Certificates = []tls.Certificate{d.cert}
	ctx, cancel := context.WithTimeout(d.l.ctx, 5*time.Second)
	defer cancel()
	qc := &quic.Config{MaxIdleTimeout: 30 * time.Second, KeepAlivePeriod: 10 * time.Second}
	var conn *quic.Conn
	var err error
	if tr == nil {
		conn, err = quic.DialAddr(ctx, d.l.c.LocalAddr().String(), tc, qc)
	} else {
		conn, err = tr.Dial(ctx, d.l.c.LocalAddr(), tc, qc)
	}
	if err == nil {
		// Close it even if the connector's CONNECTION_CLOSE was lost.
		d.l.t.Cleanup(func() { conn.CloseWithError(0, "") })
	}
	return conn, err
}

// session is an authenticated client connection.
type clientConn struct {
	t    testing.TB
	conn *quic.Conn
	ctrl *quic.Stream
}

// authenticate opens the control stream and presents tok; it returns the status.
func authenticate(conn *quic.Conn, tok string) (*quic.Stream, wire.Status, string, error) {
	ctrl, err := conn.OpenStreamSync(context.Background())
	if err != nil {
		return nil, 0, "", err
	}
	if err := wire.WriteFrame(ctrl, wire.KindToken, []byte(tok)); err != nil {
		return nil, 0, "", err
	}
	st, msg, err := wire.ReadStatus(ctrl)
	return ctrl, st, msg, err
}

// connect dials and authenticates with a fresh token.
func (d *device) connect() *clientConn {
	d.l.t.Helper()
	tr := d.token()
	conn, err := d.dial(tr.CertSHA256)
	if err != nil {
		d.l.t.Fatalf("dial connector: %v", err)
	}
	d.l.t.Cleanup(func() { conn.CloseWithError(0, "") })
	ctrl, st, msg, err := authenticate(conn, tr.Token)
	if err != nil || st != wire.StatusOK {
		d.l.t.Fatalf("authenticate: %v %v %s", err, st, msg)
	}
	return &clientConn{t: d.l.t, conn: conn, ctrl: ctrl}
}

// mustOpen opens a flow stream and fails the test unless the connector
// accepts it; what names the flow in the failure.
func (cc *clientConn) mustOpen(h wire.OpenHeader, what string) *quic.Stream {
	cc.t.Helper()
	st, status, msg := cc.open(h)
	if status != wire.StatusOK {
		cc.t.Fatalf("%s: status %v %s, want OK", what, status, msg)
	}
	return st
}

// open opens a flow stream and returns its status.
func (cc *clientConn) open(h wire.OpenHeader) (*quic.Stream, wire.Status, string) {
	cc.t.Helper()
	st, err := cc.conn.OpenStreamSync(context.Background())
	if err != nil {
		cc.t.Fatalf("open stream: %v", err)
	}
	if err := wire.WriteOpen(st, h); err != nil {
		cc.t.Fatalf("write header: %v", err)
	}
	_ = st.SetReadDeadline(time.Now().Add(15 * time.Second))
	s, msg, err := wire.ReadStatus(st)
	if err != nil {
		cc.t.Fatalf("read status for %+v: %v", h, err)
	}
	_ = st.SetReadDeadline(time.Time{})
	return st, s, msg
}

// hostIP is a non-loopback IPv4 address of this host, for name resources
// (names never resolve to loopback through a connector).
func hostIP(t testing.TB) string {
	t.Helper()
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err == nil && p.Addr().Is4() && !isSpecial(p.Addr()) {
			return p.Addr().String()
		}
	}
	t.Skip("no non-loopback IPv4 address on this host for name-resource tests")
	return ""
}

// dnsZone is a real DNS server (miekg/dns) for the connector's resolver.
type dnsZone struct {
	mu    sync.Mutex
	names map[string]string
}

func (z *dnsZone) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, q := range r.Question {
		ip, ok := z.names[strings.ToLower(q.Name)]
		if !ok {
			m.Rcode = dns.RcodeNameError
			continue
		}
		if q.Qtype == dns.TypeA && net.ParseIP(ip).To4() != nil {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.ParseIP(ip)})
		}
	}
	w.WriteMsg(m)
}

var testZone = &dnsZone{names: map[string]string{}}

func startDNS(t testing.TB, names map[string]string) *net.Resolver {
	t.Helper()
	addr := testenv.ServeDNS(t, testZone)
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

func setName(name, ip string) {
	testZone.mu.Lock()
	testZone.names[dns.Fqdn(strings.ToLower(name))] = ip
	testZone.mu.Unlock()
}

func (l *lab) get(path, bearer string, out any) error {
	req, _ := http.NewRequestWithContext(l.ctx, http.MethodGet, l.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+bearer)
	resp, err := l.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return json.Unmarshal(b, out)
}

func (l *lab) adminPost(path string, in, out any) error {
	return l.post(path, l.ctl.AdminToken(), in, out)
}
