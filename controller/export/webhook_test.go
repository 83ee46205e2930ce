package export

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv"
)

// receiver is a webhook endpoint that checks the HMAC like a SIEM would.
type receiver struct {
	secret []byte
	mu     sync.Mutex
	got    []Record
	bad    int
	// loseAck: record the next request's events but answer 500.
	loseAck bool
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if Verify(rc.secret, r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderSignature), body, time.Now(), 5*time.Minute) != nil ||
		r.Header.Get("Content-Type") != "application/x-ndjson" {
		rc.bad++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			rc.bad++
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rc.got = append(rc.got, rec)
	}
	if rc.loseAck {
		rc.loseAck = false
		http.Error(w, "lost", http.StatusInternalServerError)
	}
}

func (rc *receiver) records() []Record {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]Record(nil), rc.got...)
}

// unique returns the first delivery of each id, in arrival order.
func unique(recs []Record) []Record {
	seen := map[string]bool{}
	var out []Record
	for _, r := range recs {
		if !seen[r.ID] {
			seen[r.ID] = true
			out = append(out, r)
		}
	}
	return out
}

func writeSecret(t *testing.T) (string, []byte) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, secret
}

func TestWebhookSignedDelivery(t *testing.T) {
	st := openStore(t)
	secretFile, secret := writeSecret(t)
	rc := &receiver{secret: secret}
	srv := httptest.NewTLSServer(rc)
	defer srv.Close()
	addAudit(t, st, 3, "a")
	addFlows(t, st, 4, "ok")
	addFlows(t, st, 1, "posture")
	run(t, testConfig(fastSink(SinkConfig{Name: "hook", Type: TypeWebhook, URL: srv.URL + "/in",
		SecretFile: secretFile, CAFile: writeCA(t, srv.Certificate().Raw)})), st, t.TempDir())
	testenv.Eventually(t, 10*time.Second, "8 events", func() bool { return len(rc.records()) >= 8 })
	got := rc.records()
	if rc.bad != 0 || len(got) != 8 {
		t.Fatalf("bad requests %d, got %d records", rc.bad, len(got))
	}
	var audits, flows int
	for _, r := range got {
		if r.Redelivery {
			t.Errorf("%s marked redelivery on a first, accepted delivery", r.ID)
		}
		switch r.Type {
		case StreamAudit:
			audits++
			if r.Actor != "admin" || r.Action != "create" || r.IP != "192.0.2.7" || r.ID != "audit-"+strconv.Itoa(audits) {
				t.Errorf("audit record %+v", r)
			}
		case StreamNetwork:
			flows++
			if r.ID != "network-"+strconv.Itoa(flows) || r.User != "alice@example.com" || r.Connector != "con-1" || r.Resource != "res-1" {
				t.Errorf("network record %+v", r)
			}
			want := "allowed"
			if flows == 5 {
				want = "denied"
				if r.Reason != "posture" {
					t.Errorf("denied flow reason %q", r.Reason)
				}
			}
			if r.Status != want {
				t.Errorf("%s status %q, want %q", r.ID, r.Status, want)
			}
		}
	}
	if audits != 3 || flows != 5 {
		t.Fatalf("audits %d flows %d", audits, flows)
	}
}

func TestWebhookWrongSecretIsRetriedNotDropped(t *testing.T) {
	st := openStore(t)
	secretFile, secret := writeSecret(t)
	rc := &receiver{secret: append([]byte("other-"), secret...)}
	srv := httptest.NewTLSServer(rc)
	defer srv.Close()
	addFlows(t, st, 2, "ok")
	dir := t.TempDir()
	e, _ := run(t, testConfig(fastSink(SinkConfig{Name: "hook", Type: TypeWebhook, URL: srv.URL,
		SecretFile: secretFile, CAFile: writeCA(t, srv.Certificate().Raw)})), st, dir)
	testenv.Eventually(t, 10*time.Second, "refusals", func() bool { _, f := e.Stats().Snapshot(); return f["hook"] >= 3 })
	if _, ok := e.Stats().LastOKSnapshot()["hook"]; ok {
		t.Error("a sink that never delivered reports a last OK time")
	}
	if n := len(rc.records()); n != 0 {
		t.Fatalf("receiver accepted %d records signed with another key", n)
	}
	// Fix the receiver's key: the same events arrive, marked as redeliveries.
	rc.mu.Lock()
	rc.secret = secret
	rc.mu.Unlock()
	testenv.Eventually(t, 10*time.Second, "delivery", func() bool { return len(rc.records()) == 2 })
	for _, r := range rc.records() {
		if !r.Redelivery {
			t.Errorf("%s: a retried event must be marked redelivery", r.ID)
		}
	}
}

// TestWebhookReceiverDown: the receiver refuses connections for a while, then
// comes back on the same address, and later loses one acknowledgement.
// Nothing is lost, order is kept and every duplicate is marked.
func TestWebhookReceiverDown(t *testing.T) {
	st := openStore(t)
	secretFile, secret := writeSecret(t)
	rc := &receiver{secret: secret}
	srv := httptest.NewUnstartedServer(rc)
	srv.StartTLS()
	addr := srv.Listener.Addr().String()
	url, ca := srv.URL, writeCA(t, srv.Certificate().Raw)
	cert := srv.TLS.Certificates[0]
	srv.Close() // down: connections to addr are refused

	dir := t.TempDir()
	e, _ := run(t, testConfig(fastSink(SinkConfig{Name: "hook", Type: TypeWebhook, URL: url, SecretFile: secretFile, CAFile: ca})), st, dir)
	addAudit(t, st, 5, "down")
	addFlows(t, st, 120, "ok")
	testenv.Eventually(t, 10*time.Second, "failed attempts while down", func() bool { _, f := e.Stats().Snapshot(); return f["hook"] >= 3 })

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("re-listen on %s: %v", addr, err)
	}
	srv2 := &httptest.Server{Listener: ln, Config: &http.Server{Handler: rc}, TLS: serverTLS(t, cert)}
	srv2.StartTLS()
	defer srv2.Close()
	testenv.Eventually(t, 20*time.Second, "all 125 after the receiver came back", func() bool { return len(unique(rc.records())) == 125 })

	rc.mu.Lock()
	rc.loseAck = true
	rc.mu.Unlock()
	addFlows(t, st, 10, "denied")
	testenv.Eventually(t, 20*time.Second, "the batch whose ack was lost, twice", func() bool {
		return len(unique(rc.records())) == 135 && len(rc.records()) >= 145
	})

	all := rc.records()
	seen := map[string]bool{}
	lastAudit, lastNet := 0, 0
	for _, r := range all {
		if seen[r.ID] && !r.Redelivery {
			t.Errorf("%s delivered again without redelivery: true", r.ID)
		}
		if !seen[r.ID] {
			n, _ := strconv.Atoi(r.ID[len(r.Type)+1:])
			last := &lastAudit
			if r.Type == StreamNetwork {
				last = &lastNet
			}
			if n != *last+1 {
				t.Errorf("%s arrived after %s-%d: order or completeness broken", r.ID, r.Type, *last)
			}
			*last = n
		}
		seen[r.ID] = true
	}
	if lastAudit != 5 || lastNet != 130 {
		t.Fatalf("last audit %d, last network %d", lastAudit, lastNet)
	}
	// The cursor is saved after the receiver's answer arrives.
	testenv.Eventually(t, 10*time.Second, "the cursor to record the last acknowledgement", func() bool {
		cur, err := LoadCursor(dir, "hook")
		return err == nil && cur.AuditAcked == 5 && cur.NetworkAcked == 130
	})
}

func TestVerify(t *testing.T) {
	secret := []byte("0123456789abcdef")
	now := time.Unix(1_800_000_000, 0)
	ts := strconv.FormatInt(now.Unix(), 10)
	body := []byte(`{"id":"audit-1"}` + "\n")
	sig := Sign(secret, ts, body)
	// Independent computation of the documented scheme.
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts + "."))
	m.Write(body)
	if want := "sha256=" + hex.EncodeToString(m.Sum(nil)); sig != want {
		t.Fatalf("Sign = %s, want %s", sig, want)
	}
	if err := Verify(secret, ts, sig, body, now.Add(time.Minute), 5*time.Minute); err != nil {
		t.Fatalf("good signature: %v", err)
	}
	for name, err := range map[string]error{
		"other body":     Verify(secret, ts, sig, append(body, ' '), now, 5*time.Minute),
		"other secret":   Verify([]byte("fedcba9876543210"), ts, sig, body, now, 5*time.Minute),
		"other time":     Verify(secret, strconv.FormatInt(now.Unix()+1, 10), sig, body, now, 5*time.Minute),
		"replayed later": Verify(secret, ts, sig, body, now.Add(10*time.Minute), 5*time.Minute),
		"not a number":   Verify(secret, "yesterday", sig, body, now, 5*time.Minute),
	} {
		if !errors.Is(err, ErrSignature) {
			t.Errorf("%s: %v, want ErrSignature", name, err)
		}
	}
}
