package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// SQLite is the default Store backend.
type SQLite struct {
	db *sql.DB
	mu sync.Mutex // serializes writers in this process

	revHub
}

// OpenSQLite opens (creating if needed) the database at path and applies
// pending migrations.
func OpenSQLite(path string) (*SQLite, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	s := &SQLite{db: db, revHub: newRevHub(0)}
	if err := s.migrate(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
}

func (s *SQLite) migrate() error {
	ctx := context.Background()
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("create schema_version: %w", err)
	}
	var v int
	err := s.db.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		if _, err := s.db.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return err
		}
	} else if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	migrations, err := loadMigrations("sqlite")
	if err != nil {
		return err
	}
	if v > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this controller (%d)", v, len(migrations))
	}
	for i := v; i < len(migrations); i++ {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE schema_version SET version = ?`, i+1); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	return nil
}

type sqlTx struct {
	ctx     context.Context
	tx      *sql.Tx
	changed bool
	stmts   map[string]*sql.Stmt
}

// stmt prepares q once per transaction (bulk applies put thousands of rows).
func (t *sqlTx) stmt(q string) (*sql.Stmt, error) {
	if st, ok := t.stmts[q]; ok {
		return st, nil
	}
	st, err := t.tx.PrepareContext(t.ctx, q)
	if err != nil {
		return nil, err
	}
	if t.stmts == nil {
		t.stmts = map[string]*sql.Stmt{}
	}
	t.stmts[q] = st
	return st, nil
}

func (t *sqlTx) closeStmts() {
	for _, st := range t.stmts {
		st.Close()
	}
}

func (t *sqlTx) Get(kind, id string) (Object, error) {
	o, err := scanObject(t.tx.QueryRowContext(t.ctx, `SELECT id, name, data, updated FROM objects WHERE kind = ? AND id = ?`, kind, id), kind)
	if err != nil {
		return o, fmt.Errorf("get %s %q: %w", kind, id, err)
	}
	return o, nil
}

func (t *sqlTx) GetByName(kind, name string) (Object, error) {
	o, err := scanObject(t.tx.QueryRowContext(t.ctx, `SELECT id, name, data, updated FROM objects WHERE kind = ? AND name = ?`, kind, name), kind)
	if err != nil {
		return o, fmt.Errorf("get %s named %q: %w", kind, name, err)
	}
	return o, nil
}

func (t *sqlTx) List(kind string) ([]Object, error) {
	out, err := sqlQueryObjects(t.ctx, t.tx, kind, `SELECT id, name, data, updated FROM objects WHERE kind = ? ORDER BY id`, kind)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", kind, err)
	}
	if len(out) == 0 {
		return nil, nil // no objects is a nil slice
	}
	return out, nil
}

func (t *sqlTx) Put(o Object) error {
	if o.Kind == "" || o.ID == "" || o.Name == "" || len(o.Data) == 0 {
		return fmt.Errorf("put %s %q: %w: kind, id, name and data are required", o.Kind, o.ID, ErrBadObject)
	}
	sel, err := t.stmt(`SELECT id FROM objects WHERE kind = ? AND name = ? AND id != ?`)
	if err != nil {
		return fmt.Errorf("put %s %q: %w", o.Kind, o.ID, err)
	}
	ins, err := t.stmt(`INSERT INTO objects (kind, id, name, data, updated) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (kind, id) DO UPDATE SET name = excluded.name, data = excluded.data, updated = excluded.updated`)
	if err != nil {
		return fmt.Errorf("put %s %q: %w", o.Kind, o.ID, err)
	}
	var other string
	err = sel.QueryRowContext(t.ctx, o.Kind, o.Name, o.ID).Scan(&other)
	if err == nil {
		return fmt.Errorf("put %s %q: name %q: %w", o.Kind, o.ID, o.Name, ErrConflict)
	} else if !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("put %s %q: %w", o.Kind, o.ID, err)
	}
	_, err = ins.ExecContext(t.ctx, o.Kind, o.ID, o.Name, string(o.Data), time.Now().UnixMilli())
	if err != nil {
		return fmt.Errorf("put %s %q: %w", o.Kind, o.ID, err)
	}
	t.changed = true
	return nil
}

func (t *sqlTx) Delete(kind, id string) error {
	res, err := t.tx.ExecContext(t.ctx, `DELETE FROM objects WHERE kind = ? AND id = ?`, kind, id)
	if err != nil {
		return fmt.Errorf("delete %s %q: %w", kind, id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("delete %s %q: %w", kind, id, ErrNotFound)
	}
	t.changed = true
	return nil
}

func nullJSON(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}

func (t *sqlTx) Audit(e AuditEntry) error {
	if e.At.IsZero() {
		e.At = time.Now()
	}
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO audit (at, actor, action, kind, object_id, name, before, after, ip, device, actor_via, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.At.UnixMilli(), e.Actor, e.Action, e.Kind, e.ObjectID, e.Name, nullJSON(e.Before), nullJSON(e.After), e.IP, e.Device, e.ActorVia, e.UserAgent)
	if err != nil {
		return fmt.Errorf("audit %s %s: %w", e.Action, e.Kind, err)
	}
	return nil
}

// Update implements Store.
func (s *SQLite) Update(ctx context.Context, fn func(Tx) error) (int64, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, false, fmt.Errorf("begin: %w", err)
	}
	t := &sqlTx{ctx: ctx, tx: tx}
	defer t.closeStmts()
	if err := fn(t); err != nil {
		tx.Rollback()
		return 0, false, err
	}
	var rev int64
	if t.changed {
		if err := tx.QueryRowContext(ctx, `UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value`).Scan(&rev); err != nil {
			tx.Rollback()
			return 0, false, fmt.Errorf("bump revision: %w", err)
		}
	} else if err := tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'revision'`).Scan(&rev); err != nil {
		tx.Rollback()
		return 0, false, fmt.Errorf("read revision: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, false, fmt.Errorf("commit: %w", err)
	}
	if t.changed {
		s.publish(rev)
	}
	return rev, t.changed, nil
}

// View implements Store.
func (s *SQLite) View(ctx context.Context, fn func(Tx) error) error {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	t := &sqlTx{ctx: ctx, tx: tx}
	defer t.closeStmts()
	return fn(t)
}

// LoadAll implements Store.
func (s *SQLite) LoadAll(ctx context.Context) (int64, []Object, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return 0, nil, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback()
	var rev int64
	if err := tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'revision'`).Scan(&rev); err != nil {
		return 0, nil, fmt.Errorf("read revision: %w", err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT kind, id, name, data, updated FROM objects`)
	if err != nil {
		return 0, nil, fmt.Errorf("load objects: %w", err)
	}
	defer rows.Close()
	out, err := scanKindedObjects(rows, "load objects")
	return rev, out, err
}

// Revision implements Store.
func (s *SQLite) Revision(ctx context.Context) (int64, error) {
	var rev int64
	err := s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'revision'`).Scan(&rev)
	if err != nil {
		return 0, fmt.Errorf("read revision: %w", err)
	}
	return rev, nil
}

// Page implements Store.
func (s *SQLite) Page(ctx context.Context, kind, after string, limit int) ([]Object, error) {
	out, err := sqlQueryObjects(ctx, s.db, kind, `SELECT id, name, data, updated FROM objects WHERE kind = ? AND id > ? ORDER BY id LIMIT ?`, kind, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", kind, err)
	}
	return out, nil
}

// sqlQueryObjects runs a query for objects rows of one kind, on the
// database or in a transaction (queryObjects does the same on PostgreSQL).
func sqlQueryObjects(ctx context.Context, q interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}, kind, query string, args ...any) ([]Object, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return scanObjects(rows, kind)
}

// AuditLog implements Store.
func (s *SQLite) AuditLog(ctx context.Context, after int64, limit int) ([]AuditEntry, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, at, actor, action, kind, object_id, name, before, after, ip, device, actor_via, user_agent FROM audit WHERE id > ? ORDER BY id LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	defer rows.Close()
	return scanAuditLog(rows)
}

// AddEvents implements Store.
func (s *SQLite) AddEvents(ctx context.Context, events []Event, max int) error {
	if len(events) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store events: %w", err)
	}
	defer tx.Rollback()
	for chunk := range slices.Chunk(events, sqliteEventsPerInsert) {
		insert, args := insertEvents(chunk, func(int) string { return "?" })
		if _, err := tx.ExecContext(ctx, insert, args...); err != nil {
			return fmt.Errorf("store events: %w", err)
		}
	}
	if max > 0 {
		if _, err := tx.ExecContext(ctx, `DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?`, max); err != nil {
			return fmt.Errorf("trim events: %w", err)
		}
	}
	return tx.Commit()
}

// sqliteEventsPerInsert keeps one INSERT within SQLite's 32,766 bound
// variables (SQLITE_MAX_VARIABLE_NUMBER), two a row.
const sqliteEventsPerInsert = 32766 / 2

// Events implements Store.
func (s *SQLite) Events(ctx context.Context, after int64, limit int) ([]Event, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, at, data FROM events WHERE id > ? ORDER BY id LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	defer rows.Close()
	return scanEvents(rows)
}

// Close implements Store.
func (s *SQLite) Close() error {
	s.closeWatchers()
	return s.db.Close()
}

var _ Store = (*SQLite)(nil)
