package export

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"postern.dev/postern/controller/store"
	"postern.dev/postern/controller/store/pgtest"
	"postern.dev/postern/internal/testenv"
)

// TestExportFromPostgres: the same cursor logic over the PostgreSQL store
// (several replicas' shared backend); a second exporter on the same data
// directory resumes where the first stopped.
func TestExportFromPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	st, err := store.OpenPostgres(context.Background(), pg.NewDatabase(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	dir := t.TempDir()
	out := filepath.Join(t.TempDir(), "events.jsonl")
	cfg := testConfig(fastSink(SinkConfig{Name: "file", Type: TypeFile, Path: out}))
	addAudit(t, st, 4, "pg")
	addFlows(t, st, 6, "timeout")
	e, stop := run(t, cfg, st, dir)
	testenv.Eventually(t, 10*time.Second, "10 records", func() bool { d, _ := e.Stats().Snapshot(); return d["file"] == 10 })
	stop()
	addFlows(t, st, 2, "ok")
	e2, _ := run(t, cfg, st, dir)
	testenv.Eventually(t, 10*time.Second, "2 more", func() bool { d, _ := e2.Stats().Snapshot(); return d["file"] == 2 })
	recs := readLines(t, out)
	if len(recs) != 12 {
		t.Fatalf("%d lines, want 12 (each event once)", len(recs))
	}
	seen := map[string]bool{}
	for _, r := range recs {
		if seen[r.ID] || r.Redelivery {
			t.Errorf("%s repeated or marked redelivery", r.ID)
		}
		seen[r.ID] = true
		if r.Type == StreamNetwork && r.Result == "timeout" && r.Status != "failed" {
			t.Errorf("%s: status %q for a timeout, want failed", r.ID, r.Status)
		}
	}
	if !seen["audit-4"] || !seen["network-8"] {
		t.Errorf("missing events: %v", seen)
	}
}
