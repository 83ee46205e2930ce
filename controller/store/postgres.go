package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// NotifyChannel is the PostgreSQL channel every commit notifies with its new
// revision (decimal text) as the payload.
const NotifyChannel = "postern_rev"

// migrationLockID is the pg_advisory_xact_lock key held while migrating, so
// replicas starting together migrate once.
const migrationLockID = 0x706f737465726e // "postern"

// pollInterval is how often a replica also reads the revision, in case a
// notification was lost with a broken LISTEN connection (a variable for
// tests).
var pollInterval = 5 * time.Second

// Postgres is the Store backend for several controller replicas sharing one
// PostgreSQL database. Writers are serialized across replicas by a row lock
// on the revision, taken first in every Update, so "validate, then write" in
// one transaction holds exactly as with SQLite; each commit NOTIFYs the new
// revision on NotifyChannel and every replica's Watch delivers it.
type Postgres struct {
	pool *pgxpool.Pool
	cfg  *pgx.ConnConfig // for the LISTEN connection
	log  *slog.Logger

	stop context.CancelFunc
	done chan struct{}

	revHub
}

// RedactURL returns dsn with any password replaced, for messages and logs.
func RedactURL(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		return "(unparsable database URL)"
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}

// OpenPostgres connects to the database at dsn (postgres:// or
// postgresql:// URL; pgx pool settings such as pool_max_conns may be added
// as query parameters), applies pending migrations and starts listening for
// other replicas' commits. log may be nil.
func OpenPostgres(ctx context.Context, dsn string, log *slog.Logger) (*Postgres, error) {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, fmt.Errorf("%w: %s: want postgres://user:password@host:port/database", ErrBadURL, RedactURL(dsn))
	}
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadURL, RedactURL(dsn), redactErr(err, dsn))
	}
	where := RedactURL(dsn)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", where, err)
	}
	s := &Postgres{pool: pool, cfg: pcfg.ConnConfig.Copy(), log: log, revHub: newRevHub(0), done: make(chan struct{})}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open store %s: %w", where, err)
	}
	rev, err := s.Revision(ctx)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("open store %s: %w", where, err)
	}
	s.revHub.maxRev = rev // nothing can watch yet
	// The first LISTEN is set up before Open returns, so no commit made
	// after Open can be missed.
	lctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	conn, err := s.listenConn(ctx)
	if err != nil {
		stop()
		pool.Close()
		return nil, fmt.Errorf("open store %s: listen: %w", where, err)
	}
	go s.listen(lctx, conn)
	return s, nil
}

// redactErr keeps a parse error from echoing the password.
func redactErr(err error, dsn string) string {
	msg := err.Error()
	if u, perr := url.Parse(dsn); perr == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return msg
}

func (s *Postgres) migrate(ctx context.Context) error {
	migrations, err := loadMigrations("postgres")
	if err != nil {
		return err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLockID)); err != nil {
		return fmt.Errorf("migrate: lock: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("create schema_version: %w", err)
	}
	var v int
	err = tx.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		if _, err := tx.Exec(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
			return fmt.Errorf("init schema_version: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this controller (%d)", v, len(migrations))
	}
	for i := v; i < len(migrations); i++ {
		// Simple protocol: a migration file holds several statements.
		if _, err := tx.Exec(ctx, migrations[i], pgx.QueryExecModeSimpleProtocol); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE schema_version SET version = $1`, i+1); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	return nil
}

// pgTx implements Tx on a pgx transaction.
type pgTx struct {
	ctx     context.Context
	tx      pgx.Tx
	rev     int64 // the revision this transaction commits (writes only)
	changed bool
	audit   []AuditEntry // written at commit
}

func (t *pgTx) Get(kind, id string) (Object, error) {
	o, err := scanObject(t.tx.QueryRow(t.ctx, `SELECT id, name, data, updated FROM objects WHERE kind = $1 AND id = $2`, kind, id), kind)
	if err != nil {
		return o, fmt.Errorf("get %s %q: %w", kind, id, err)
	}
	return o, nil
}

func (t *pgTx) GetByName(kind, name string) (Object, error) {
	o, err := scanObject(t.tx.QueryRow(t.ctx, `SELECT id, name, data, updated FROM objects WHERE kind = $1 AND name = $2`, kind, name), kind)
	if err != nil {
		return o, fmt.Errorf("get %s named %q: %w", kind, name, err)
	}
	return o, nil
}

func (t *pgTx) List(kind string) ([]Object, error) {
	out, err := queryObjects(t.ctx, t.tx, kind, `SELECT id, name, data, updated FROM objects WHERE kind = $1 ORDER BY id`, kind)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", kind, err)
	}
	if len(out) == 0 {
		return nil, nil // as SQLite: no objects is a nil slice
	}
	return out, nil
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func queryObjects(ctx context.Context, q querier, kind, sql string, args ...any) ([]Object, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return scanObjects(rows, kind)
}

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// Put is one statement (one round trip: bulk applies write thousands of
// objects): the row is written only when no other object of the kind has
// the name.
func (t *pgTx) Put(o Object) error {
	if o.Kind == "" || o.ID == "" || o.Name == "" || len(o.Data) == 0 {
		return fmt.Errorf("put %s %q: %w: kind, id, name and data are required", o.Kind, o.ID, ErrBadObject)
	}
	tag, err := t.tx.Exec(t.ctx, `INSERT INTO objects (kind, id, name, data, updated, rev)
		SELECT $1, $2, $3, $4, $5, $6
		WHERE NOT EXISTS (SELECT 1 FROM objects WHERE kind = $1 AND name = $3 AND id <> $2)
		ON CONFLICT (kind, id) DO UPDATE SET name = excluded.name, data = excluded.data, updated = excluded.updated, rev = excluded.rev`,
		o.Kind, o.ID, o.Name, string(o.Data), time.Now().UnixMilli(), t.rev)
	if err != nil {
		if isUniqueViolation(err) {
			return fmt.Errorf("put %s %q: name %q: %w", o.Kind, o.ID, o.Name, ErrConflict)
		}
		return fmt.Errorf("put %s %q: %w", o.Kind, o.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("put %s %q: name %q: %w", o.Kind, o.ID, o.Name, ErrConflict)
	}
	if _, err := t.tx.Exec(t.ctx, `DELETE FROM tombstones WHERE kind = $1 AND id = $2`, o.Kind, o.ID); err != nil {
		return fmt.Errorf("put %s %q: %w", o.Kind, o.ID, err)
	}
	t.changed = true
	return nil
}

func (t *pgTx) Delete(kind, id string) error {
	tag, err := t.tx.Exec(t.ctx, `DELETE FROM objects WHERE kind = $1 AND id = $2`, kind, id)
	if err != nil {
		return fmt.Errorf("delete %s %q: %w", kind, id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete %s %q: %w", kind, id, ErrNotFound)
	}
	if _, err := t.tx.Exec(t.ctx, `INSERT INTO tombstones (kind, id, rev) VALUES ($1, $2, $3)
		ON CONFLICT (kind, id) DO UPDATE SET rev = excluded.rev`, kind, id, t.rev); err != nil {
		return fmt.Errorf("delete %s %q: %w", kind, id, err)
	}
	t.changed = true
	return nil
}

// Audit queues e; the queue is written with the transaction's other
// changes just before it commits (a failure there fails the commit).
func (t *pgTx) Audit(e AuditEntry) error {
	if e.At.IsZero() {
		e.At = time.Now()
	}
	t.audit = append(t.audit, e)
	return nil
}

// pgMaxParams is the most bind parameters one PostgreSQL statement takes:
// the extended query protocol counts them in 16 bits.
const pgMaxParams = 65535

// auditColumns is the number of values per audit row; auditPerInsert keeps
// one INSERT within pgMaxParams. (It was a fixed 6,000 rows, which held for
// 10 columns and broke when the audit row grew to 12: applying 10,000
// resources on PostgreSQL failed with "extended protocol limited to 65535
// parameters".)
const (
	auditColumns   = 12
	auditPerInsert = pgMaxParams / auditColumns
)

func (t *pgTx) flushAudit() error {
	for chunk := range slices.Chunk(t.audit, auditPerInsert) {
		var b strings.Builder
		args := make([]any, 0, auditColumns*len(chunk))
		b.WriteString(`INSERT INTO audit (at, actor, action, kind, object_id, name, before, after, ip, device, actor_via, user_agent) VALUES `)
		for i, e := range chunk {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString("(")
			for j := range auditColumns {
				if j > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "$%d", auditColumns*i+j+1)
			}
			b.WriteString(")")
			args = append(args, e.At.UnixMilli(), e.Actor, e.Action, e.Kind, e.ObjectID, e.Name, nullJSON(e.Before), nullJSON(e.After), e.IP, e.Device, e.ActorVia, e.UserAgent)
		}
		if _, err := t.tx.Exec(t.ctx, b.String(), args...); err != nil {
			return fmt.Errorf("write audit log: %w", err)
		}
	}
	t.audit = nil
	return nil
}

// Update implements Store. The revision row is locked first, so writers of
// every replica run one at a time and fn reads the latest committed state.
func (s *Postgres) Update(ctx context.Context, fn func(Tx) error) (int64, bool, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("begin: %w", err)
	}
	rollback := func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }
	var rev int64
	if err := tx.QueryRow(ctx, `SELECT value FROM meta WHERE key = 'revision' FOR UPDATE`).Scan(&rev); err != nil {
		rollback()
		return 0, false, fmt.Errorf("lock revision: %w", err)
	}
	t := &pgTx{ctx: ctx, tx: tx, rev: rev + 1}
	if err := fn(t); err != nil {
		rollback()
		return 0, false, err
	}
	if err := t.flushAudit(); err != nil {
		rollback()
		return 0, false, err
	}
	if t.changed {
		if err := tx.QueryRow(ctx, `UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value`).Scan(&rev); err != nil {
			rollback()
			return 0, false, fmt.Errorf("bump revision: %w", err)
		}
		// Delivered to every listener when (and only if) the commit succeeds.
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, NotifyChannel, strconv.FormatInt(rev, 10)); err != nil {
			rollback()
			return 0, false, fmt.Errorf("notify revision: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, false, fmt.Errorf("commit: %w", err)
	}
	if t.changed {
		s.publishNewer(rev)
	}
	return rev, t.changed, nil
}

// readTx runs fn in a read-only REPEATABLE READ transaction: one snapshot.
func (s *Postgres) readTx(ctx context.Context, fn func(pgx.Tx) error) error {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// View implements Store.
func (s *Postgres) View(ctx context.Context, fn func(Tx) error) error {
	return s.readTx(ctx, func(tx pgx.Tx) error {
		t := &pgTx{ctx: ctx, tx: tx}
		if err := fn(t); err != nil {
			return err
		}
		if len(t.audit) > 0 {
			return errors.New("audit entries in a read-only transaction")
		}
		return nil
	})
}

// LoadAll implements Store.
func (s *Postgres) LoadAll(ctx context.Context) (int64, []Object, error) {
	var rev int64
	var out []Object
	err := s.readTx(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT value FROM meta WHERE key = 'revision'`).Scan(&rev); err != nil {
			return fmt.Errorf("read revision: %w", err)
		}
		var err error
		out, err = queryKindedObjects(ctx, tx, "load objects", `SELECT kind, id, name, data, updated FROM objects`)
		return err
	})
	if err != nil {
		return 0, nil, err
	}
	return rev, out, nil
}

// queryKindedObjects runs an objects query of any kind (columns kind, id,
// name, data, updated) in tx; what names the step in errors.
func queryKindedObjects(ctx context.Context, tx pgx.Tx, what, query string, args ...any) ([]Object, error) {
	rows, err := tx.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	return scanKindedObjects(rows, what)
}

// Revision implements Store.
func (s *Postgres) Revision(ctx context.Context) (int64, error) {
	var rev int64
	if err := s.pool.QueryRow(ctx, `SELECT value FROM meta WHERE key = 'revision'`).Scan(&rev); err != nil {
		return 0, fmt.Errorf("read revision: %w", err)
	}
	return rev, nil
}

// Page implements Store.
func (s *Postgres) Page(ctx context.Context, kind, after string, limit int) ([]Object, error) {
	out, err := queryObjects(ctx, s.pool, kind, `SELECT id, name, data, updated FROM objects WHERE kind = $1 AND id > $2 ORDER BY id LIMIT $3`, kind, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", kind, err)
	}
	return out, nil
}

// AuditLog implements Store.
func (s *Postgres) AuditLog(ctx context.Context, after int64, limit int) ([]AuditEntry, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, at, actor, action, kind, object_id, name, before, after, ip, device, actor_via, user_agent FROM audit WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	defer rows.Close()
	return scanAuditLog(rows)
}

// eventsPerInsert keeps one INSERT within pgMaxParams (two values a row).
const eventsPerInsert = pgMaxParams / 2

// AddEvents implements Store.
func (s *Postgres) AddEvents(ctx context.Context, events []Event, max int) error {
	if len(events) == 0 {
		return nil
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("store events: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	for chunk := range slices.Chunk(events, eventsPerInsert) {
		insert, args := insertEvents(chunk, func(i int) string { return "$" + strconv.Itoa(i+1) })
		if _, err := tx.Exec(ctx, insert, args...); err != nil {
			return fmt.Errorf("store events: %w", err)
		}
	}
	if max > 0 {
		if _, err := tx.Exec(ctx, `DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - $1`, max); err != nil {
			return fmt.Errorf("trim events: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("store events: %w", err)
	}
	return nil
}

// Events implements Store.
func (s *Postgres) Events(ctx context.Context, after int64, limit int) ([]Event, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, at, data FROM events WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	defer rows.Close()
	return scanEvents(rows)
}

// Close implements Store.
func (s *Postgres) Close() error {
	if already := s.closeWatchers(); already {
		return nil
	}
	s.stop()
	<-s.done
	s.pool.Close()
	return nil
}

var (
	_ Store  = (*Postgres)(nil)
	_ Shared = (*Postgres)(nil)
)
