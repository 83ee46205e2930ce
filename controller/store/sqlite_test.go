package store

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
)

// The behaviour shared with PostgreSQL is in TestStoreConformance; these
// are SQLite's own.

func TestMigrationsBothDialects(t *testing.T) {
	lite, err := loadMigrations("sqlite")
	if err != nil {
		t.Fatal(err)
	}
	pg, err := loadMigrations("postgres")
	if err != nil {
		t.Fatal(err)
	}
	if len(lite) == 0 || len(lite) != len(pg) {
		t.Fatalf("sqlite has %d migrations, postgres %d: every schema change needs both", len(lite), len(pg))
	}
	if _, err := loadMigrations("oracle"); err == nil {
		t.Fatal("unknown dialect accepted")
	}
}

func TestSQLiteSchemaVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	var v int
	want, _ := loadMigrations("sqlite")
	if err := s.db.QueryRowContext(context.Background(), `SELECT version FROM schema_version`).Scan(&v); err != nil || v != len(want) {
		t.Fatalf("schema version %d, %v", v, err)
	}
	s.Close()
	// A database from a newer controller is refused, untouched.
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE schema_version SET version = 99`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := OpenSQLite(path); err == nil || !strings.Contains(err.Error(), "newer than this controller") {
		t.Fatalf("newer schema: %v", err)
	}
}

// TestSQLiteUpgradeKeepsAudit opens a database made at schema version 1 (an
// audit row without source columns) and checks that migration 2 adds ip and
// device, keeping the old row.
func TestSQLiteUpgradeKeepsAudit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	migs, err := loadMigrations("sqlite")
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{migs[0], `CREATE TABLE schema_version (version INTEGER NOT NULL)`, `INSERT INTO schema_version VALUES (1)`,
		`INSERT INTO audit (at, actor, action, kind, object_id, name) VALUES (1, 'admin', 'create', 'user', 'usr_1', 'a@example.com')`} {
		if _, err := db.Exec(q); err != nil {
			db.Close()
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, _, err := s.Update(ctx, func(tx Tx) error {
		return tx.Audit(AuditEntry{Actor: "user:a@example.com", Action: "sign-in", Kind: "session", ObjectID: "ses_1", IP: "203.0.113.7", Device: "dev_1"})
	}); err != nil {
		t.Fatal(err)
	}
	a, err := s.AuditLog(ctx, 0, 10)
	if err != nil || len(a) != 2 {
		t.Fatalf("audit after upgrade: %+v %v", a, err)
	}
	if a[0].Name != "a@example.com" || a[0].IP != "" || a[1].IP != "203.0.113.7" || a[1].Device != "dev_1" {
		t.Fatalf("audit after upgrade: %+v", a)
	}
}
