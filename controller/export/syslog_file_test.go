package export

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
)

// syslogListener accepts TCP (or TLS) connections and parses octet-counted
// RFC 5424 frames.
type syslogListener struct {
	ln   net.Listener
	mu   sync.Mutex
	msgs []string
	errs []string
}

func listenSyslog(t *testing.T, tlsCfg *tls.Config) *syslogListener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	s := &syslogListener{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.read(c)
		}
	}()
	return s
}

func (s *syslogListener) read(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		lenStr, err := br.ReadString(' ')
		if err != nil {
			return
		}
		n, err := strconv.Atoi(strings.TrimSuffix(lenStr, " "))
		if err != nil || n <= 0 || n > 1<<20 {
			s.fail(fmt.Sprintf("bad frame length %q", lenStr))
			return
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(br, msg); err != nil {
			s.fail("short frame: " + err.Error())
			return
		}
		s.mu.Lock()
		s.msgs = append(s.msgs, string(msg))
		s.mu.Unlock()
	}
}

func (s *syslogListener) fail(e string) {
	s.mu.Lock()
	s.errs = append(s.errs, e)
	s.mu.Unlock()
}

func (s *syslogListener) messages() ([]string, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs...), append([]string(nil), s.errs...)
}

// rfc5424 is PRI VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG.
var rfc5424 = regexp.MustCompile(`^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\d+|-) (\S+) (\[postern@32473 id="([a-z]+-\d+)" redelivery="(true|false)"\]) (.*)$`)

func checkSyslog(t *testing.T, msgs []string, wantN int) {
	t.Helper()
	if len(msgs) != wantN {
		t.Fatalf("got %d messages, want %d", len(msgs), wantN)
	}
	for i, m := range msgs {
		g := rfc5424.FindStringSubmatch(m)
		if g == nil {
			t.Fatalf("message %d is not RFC 5424 as expected: %q", i, m)
		}
		pri, _ := strconv.Atoi(g[1])
		if _, err := time.Parse(time.RFC3339Nano, g[2]); err != nil {
			t.Errorf("timestamp %q: %v", g[2], err)
		}
		if g[3] != "ctl.example" || g[4] != "postern-controller" {
			t.Errorf("hostname/app %q %q", g[3], g[4])
		}
		var r Record
		if err := json.Unmarshal([]byte(g[10]), &r); err != nil {
			t.Fatalf("MSG is not a JSON record: %v", err)
		}
		if r.ID != g[8] || r.Type != g[6] {
			t.Errorf("SD id %q / MSGID %q disagree with record %s/%s", g[8], g[6], r.ID, r.Type)
		}
		sev := 6
		if r.Type == StreamNetwork && r.Status != "allowed" {
			sev = 4
		}
		if pri != 4*8+sev { // facility auth
			t.Errorf("%s: PRI %d, want %d", r.ID, pri, 4*8+sev)
		}
	}
}

func TestSyslogTCP(t *testing.T) {
	st := openStore(t)
	l := listenSyslog(t, nil)
	addAudit(t, st, 2, "s")
	addFlows(t, st, 3, "ok")
	addFlows(t, st, 2, "unreachable")
	run(t, testConfig(fastSink(SinkConfig{Name: "siem", Type: TypeSyslog, Address: l.ln.Addr().String(), Facility: "auth", Hostname: "ctl.example"})), st, t.TempDir())
	testenv.Eventually(t, 10*time.Second, "7 syslog messages", func() bool { m, _ := l.messages(); return len(m) >= 7 })
	msgs, errs := l.messages()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	checkSyslog(t, msgs, 7)
}

func TestSyslogTLSReconnects(t *testing.T) {
	st := openStore(t)
	srv := httptest.NewUnstartedServer(nil) // only for its certificate
	srv.StartTLS()
	cert, ca := srv.TLS.Certificates[0], writeCA(t, srv.Certificate().Raw)
	srv.Close()
	l := listenSyslog(t, serverTLS(t, cert))
	dir := t.TempDir()
	sc := fastSink(SinkConfig{Name: "siem", Type: TypeSyslog, Address: l.ln.Addr().String(), TLS: true, CAFile: ca,
		ServerName: "example.com", Facility: "auth", Hostname: "ctl.example"})
	_, stop := run(t, testConfig(sc), st, dir)
	addFlows(t, st, 4, "ok")
	testenv.Eventually(t, 10*time.Second, "4 messages over TLS", func() bool { m, _ := l.messages(); return len(m) >= 4 })
	stop()

	// The receiver restarts on another port; a new exporter (a controller
	// restart) resumes from its cursor: no event twice, none lost.
	l2 := listenSyslog(t, serverTLS(t, cert))
	sc.Address = l2.ln.Addr().String()
	addAudit(t, st, 3, "after")
	run(t, testConfig(sc), st, dir)
	testenv.Eventually(t, 10*time.Second, "3 more messages", func() bool { m, _ := l2.messages(); return len(m) >= 3 })
	msgs, errs := l2.messages()
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	checkSyslog(t, msgs, 3)
	for i, m := range msgs {
		if want := fmt.Sprintf(`id="audit-%d" redelivery="false"`, i+1); !strings.Contains(m, want) {
			t.Errorf("message %d: want %s in %q", i, want, m)
		}
	}
}

func readLines(t *testing.T, path string) []Record {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, r)
	}
	return out
}

func TestFileRotation(t *testing.T) {
	st := openStore(t)
	out := filepath.Join(t.TempDir(), "events.jsonl")
	cfg := testConfig(fastSink(SinkConfig{Name: "file", Type: TypeFile, Path: out, MaxSizeMB: 1, MaxBackups: 2}))
	cfg.Batch = 2000
	const n = 12000 // about 3.5 MB of JSON lines: three rotations, the oldest dropped
	for i := 0; i < n; i += 3000 {
		addFlows(t, st, 3000, "ok")
	}
	e, _ := run(t, cfg, st, t.TempDir())
	testenv.Eventually(t, 30*time.Second, "all events written", func() bool { d, _ := e.Stats().Snapshot(); return d["file"] == n })
	if _, err := os.Stat(out + ".3"); !os.IsNotExist(err) {
		t.Errorf("%s.3 exists; max_backups is 2", out)
	}
	var all []Record
	for _, p := range []string{out + ".2", out + ".1", out} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 1<<20 {
			t.Errorf("%s is %d bytes, over max_size_mb", p, st.Size())
		}
		all = append(all, readLines(t, p)...)
	}
	if len(all) < n/3 || all[len(all)-1].ID != fmt.Sprintf("network-%d", n) {
		t.Fatalf("%d lines kept, last %v", len(all), all[len(all)-1].ID)
	}
	first, _ := strconv.Atoi(strings.TrimPrefix(all[0].ID, "network-"))
	for i, r := range all {
		if r.ID != fmt.Sprintf("network-%d", first+i) {
			t.Fatalf("line %d: %s, want network-%d (gap or reorder across rotated files)", i, r.ID, first+i)
		}
	}
}

// TestFileRestartMarksUnackedRedelivery: a crash between handing a batch to
// the sink and saving the cursor shows as Sent > Acked; on restart that batch
// is re-sent marked as redelivery, the rest is not.
func TestFileRestartMarksUnackedRedelivery(t *testing.T) {
	st := openStore(t)
	out := filepath.Join(t.TempDir(), "events.jsonl")
	dir := t.TempDir()
	addFlows(t, st, 6, "ok")
	if err := os.MkdirAll(filepath.Join(dir, "export"), 0o700); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(Cursor{NetworkAcked: 2, NetworkSent: 4})
	if err := os.WriteFile(filepath.Join(dir, "export", "file.cursor"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	e, _ := run(t, testConfig(fastSink(SinkConfig{Name: "file", Type: TypeFile, Path: out})), st, dir)
	testenv.Eventually(t, 10*time.Second, "4 lines", func() bool { d, _ := e.Stats().Snapshot(); return d["file"] == 4 })
	got := readLines(t, out)
	want := []struct {
		id    string
		redel bool
	}{{"network-3", true}, {"network-4", true}, {"network-5", false}, {"network-6", false}}
	if len(got) != len(want) {
		t.Fatalf("got %d lines", len(got))
	}
	for i, w := range want {
		if got[i].ID != w.id || got[i].Redelivery != w.redel {
			t.Errorf("line %d: %s redelivery=%t, want %s %t", i, got[i].ID, got[i].Redelivery, w.id, w.redel)
		}
	}
}

func TestDamagedCursorStopsTheStart(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "export"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "export", "file.cursor"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(testConfig(SinkConfig{Name: "file", Type: TypeFile, Path: filepath.Join(dir, "out.jsonl")}), openStore(t), dir, nil)
	if err == nil || !strings.Contains(err.Error(), "file.cursor") || !strings.Contains(err.Error(), "export sink file") {
		t.Fatalf("damaged cursor: %v", err)
	}
}
