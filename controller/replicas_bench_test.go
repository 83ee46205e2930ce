package controller

import (
	"context"
	"testing"
	"time"

	"postern.dev/postern/controller/store/pgtest"
)

// BenchmarkApply10kPostgres is BenchmarkApply10k on the PostgreSQL backend
// (a local server started for the benchmark), plus how long a second
// replica on the same database takes to have the new revision.
func BenchmarkApply10kPostgres(b *testing.B) {
	pg := pgtest.Start(b)
	doc := []byte(bigYAML(10000, 1000))
	var reapply, follow time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dbURL := pg.NewDatabase(b)
		dir := b.TempDir()
		c, err := Open(Config{DataDir: dir, DatabaseURL: dbURL, PublicURL: "https://127.0.0.1:8443"})
		if err != nil {
			b.Fatal(err)
		}
		c2, err := Open(Config{DataDir: dir, DatabaseURL: dbURL, PublicURL: "https://127.0.0.1:8443"})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		plan, err := c.ApplyYAML(context.Background(), doc, false)
		if err != nil || len(plan.Changes) < 11000 {
			b.Fatalf("apply: %v", err)
		}
		b.StopTimer()
		applied := time.Now()
		for c2.model().Rev < c.model().Rev {
			time.Sleep(time.Millisecond)
		}
		follow = time.Since(applied)
		start := time.Now()
		plan, err = c.ApplyYAML(context.Background(), doc, false)
		if err != nil || !plan.Empty() {
			b.Fatalf("re-apply: %v", err)
		}
		reapply = time.Since(start)
		c2.Close()
		c.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(reapply.Milliseconds()), "reapply-ms")
	b.ReportMetric(float64(follow.Milliseconds()), "replica-follow-ms")
}
