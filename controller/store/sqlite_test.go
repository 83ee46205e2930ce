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
	if err := s.db.QueryRowContext(context.Background(), `SELECT version FROM schema_version`).Scan(&v); err != nil || v != 1 {
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
