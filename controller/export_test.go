package controller

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
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

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/export"
	"postern.dev/postern/internal/testenv"
)

// TestExportSurvivesRestartWithReceiverDown: the webhook receiver is down
// while the controller records events and restarts; when the receiver comes
// back, the restarted controller delivers every event once acknowledged,
// each stream in order.
func TestExportSurvivesRestartWithReceiverDown(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	tmp := t.TempDir()
	secretFile := filepath.Join(tmp, "hook-secret")
	os.WriteFile(secretFile, secret, 0o600)

	var mu sync.Mutex
	var got []export.Record
	recv := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ts := r.Header.Get(export.HeaderTimestamp)
		if !hmac.Equal([]byte(r.Header.Get(export.HeaderSignature)), []byte(export.Sign(secret, ts, body))) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		sc := bufio.NewScanner(bytes.NewReader(body))
		sc.Buffer(nil, 1<<20)
		mu.Lock()
		defer mu.Unlock()
		for sc.Scan() {
			var rec export.Record
			json.Unmarshal(sc.Bytes(), &rec)
			got = append(got, rec)
		}
	})
	srv := httptest.NewTLSServer(recv)
	addr, url := srv.Listener.Addr().String(), srv.URL
	cert := srv.TLS.Certificates[0]
	caFile := filepath.Join(tmp, "hook-ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	srv.Close() // the receiver is down from the start

	cfgYAML := "poll: 20ms\nsinks:\n  - {name: hook, type: webhook, url: " + url + ", secret_file: " + secretFile +
		", ca_file: " + caFile + ", retry_min: 10ms, retry_max: 50ms}\n"
	withExport := func(c *Config) {
		cfg, err := export.ParseConfig([]byte(cfgYAML))
		if err != nil {
			t.Fatal(err)
		}
		c.Export = cfg
	}
	dir := t.TempDir()
	e := newTestController(t, dir, withExport)
	e.apply(testYAML)
	con := e.enroll(KindConnector, "corp-a")
	for i := 0; i < 3; i++ {
		if st, data := e.call(con.http, "POST", controlapi.PathConnectorEvents, "", controlapi.FlowEvents{Events: []controlapi.FlowEvent{
			{Principal: "u" + strconv.Itoa(i), Device: "d", ResourceID: "r", Destination: "198.51.100.5", Port: 22, Protocol: "tcp", Result: "ok"},
		}}); st != 204 {
			t.Fatalf("events: %d %s", st, data)
		}
	}
	audit, _ := e.c.store.AuditLog(t.Context(), 0, 10000)
	events, _ := e.c.store.Events(t.Context(), 0, 10000)
	want := len(audit) + len(events)
	testenv.Eventually(t, 10*time.Second, "failed attempts while the receiver is down", func() bool {
		_, f := e.c.exporter.Stats().Snapshot()
		return f["hook"] >= 2
	})
	e.stop() // controller restart with nothing delivered
	cur, err := export.LoadCursor(dir, "hook")
	if err != nil || cur.AuditAcked != 0 || cur.NetworkAcked != 0 || cur.AuditSent == 0 {
		t.Fatalf("cursor before the restart: %+v, %v", cur, err)
	}
	sent := map[string]int64{"audit": cur.AuditSent, "network": cur.NetworkSent}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("re-listen on %s: %v", addr, err)
	}
	srv2 := &httptest.Server{Listener: ln, Config: &http.Server{Handler: recv}, TLS: httpsConfig(cert)}
	srv2.StartTLS()
	defer srv2.Close()
	e2 := newTestController(t, dir, withExport)
	testenv.Poll(t, 20*time.Second, "every event delivered after the restart", func() error {
		mu.Lock()
		defer mu.Unlock()
		if n := len(got); n < want {
			return fmt.Errorf("delivered %d of %d events after the restart", n, want)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if len(got) != want {
		t.Fatalf("delivered %d, want exactly %d (each once)", len(got), want)
	}
	next := map[string]int64{"audit": audit[0].ID, "network": events[0].ID}
	for _, r := range got {
		if r.ID != r.Type+"-"+strconv.FormatInt(next[r.Type], 10) {
			t.Fatalf("got %s, want %s-%d (order or completeness)", r.ID, r.Type, next[r.Type])
		}
		if wantRe := next[r.Type] <= sent[r.Type]; r.Redelivery != wantRe {
			t.Errorf("%s: redelivery %t, want %t (attempted before the restart up to %s-%d)", r.ID, r.Redelivery, wantRe, r.Type, sent[r.Type])
		}
		next[r.Type]++
	}
	_ = e2
}

func httpsConfig(c tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c}}
}
