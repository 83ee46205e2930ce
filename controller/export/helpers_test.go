package export

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/store"
)

func openStore(t *testing.T) *store.SQLite {
	t.Helper()
	st, err := store.OpenSQLite(filepath.Join(t.TempDir(), "postern.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func addAudit(t *testing.T, st store.Store, n int, tag string) {
	t.Helper()
	_, _, err := st.Update(context.Background(), func(tx store.Tx) error {
		for i := 0; i < n; i++ {
			if err := tx.Audit(store.AuditEntry{At: time.Now(), Actor: "admin", Action: "create", Kind: "resource",
				ObjectID: fmt.Sprintf("%s-%d", tag, i), Name: fmt.Sprintf("%s-%d", tag, i), IP: "192.0.2.7"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func addFlows(t *testing.T, st store.Store, n int, result string) {
	t.Helper()
	evs := make([]store.Event, n)
	for i := range evs {
		b, _ := json.Marshal(controlapi.FlowEvent{ConnectorID: "con-1", Principal: "alice@example.com", Device: "dev-1",
			ResourceID: "res-1", Destination: "198.51.100.10", Port: 443, Protocol: "tcp", Start: time.Now(),
			BytesUp: int64(i), BytesDown: 2 * int64(i), Result: result})
		evs[i] = store.Event{At: time.Now(), Data: b}
	}
	if err := st.AddEvents(context.Background(), evs, 0); err != nil {
		t.Fatal(err)
	}
}

// run starts an exporter and returns a stop function that waits for it.
func run(t *testing.T, cfg Config, st Source, dataDir string) (*Exporter, func()) {
	t.Helper()
	e, err := New(cfg, st, dataDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	stop := func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("exporter did not stop")
		}
	}
	t.Cleanup(func() { cancel(); <-done })
	return e, stop
}

func writeCA(t *testing.T, cert []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func serverTLS(t *testing.T, c tls.Certificate) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c}}
}

func fastSink(s SinkConfig) SinkConfig {
	s.RetryMin, s.RetryMax = Duration(10*time.Millisecond), Duration(50*time.Millisecond)
	return s
}

func testConfig(sinks ...SinkConfig) Config {
	return Config{Poll: Duration(10 * time.Millisecond), Batch: 50, Sinks: sinks}
}
