package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"postern.dev/postern/controller/store/pgtest"
	"postern.dev/postern/internal/testenv"
)

// TestPostgresReplicas covers what only a shared backend does: several
// stores (replicas) on one database.
func TestPostgresReplicas(t *testing.T) {
	pg := pgtest.Start(t)
	ctx := context.Background()
	baseGoroutines := runtime.NumGoroutine()

	t.Run("ConcurrentOpenMigratesOnce", func(t *testing.T) {
		url := pg.NewDatabase(t)
		var wg sync.WaitGroup
		stores := make([]*Postgres, 4)
		errs := make([]error, 4)
		for i := range stores {
			wg.Add(1)
			go func() { defer wg.Done(); stores[i], errs[i] = OpenPostgres(ctx, url, nil) }()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("open %d: %v", i, err)
			}
			defer stores[i].Close()
		}
		if r, err := stores[3].Revision(ctx); err != nil || r != 0 {
			t.Fatalf("revision %d %v", r, err)
		}
	})

	t.Run("WatchAcrossReplicas", func(t *testing.T) {
		url := pg.NewDatabase(t)
		a, b := openReplicas(t, url)
		ch, cancel := b.Watch()
		defer cancel()
		for i := 1; i <= 3; i++ {
			start := time.Now()
			rev, _, err := a.Update(ctx, func(tx Tx) error {
				return tx.Put(Object{Kind: "k", ID: "x", Name: "x", Data: []byte(`{"i":` + string(rune('0'+i)) + `}`)})
			})
			if err != nil {
				t.Fatal(err)
			}
			watchFor(t, ch, rev, time.Second, "on replica B")
			t.Logf("revision %d reached replica B after %v", rev, time.Since(start))
		}
		// B's reads see A's commit.
		if err := b.View(ctx, func(tx Tx) error {
			o, err := tx.Get("k", "x")
			if err == nil && string(o.Data) != `{"i":3}` {
				err = errors.New("stale data " + string(o.Data))
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("WritersSerializedAcrossReplicas", func(t *testing.T) {
		url := pg.NewDatabase(t)
		a, b := openReplicas(t, url)
		// Both replicas validate "no seat taken yet" and then take one
		// (under different names, so no unique index helps): exactly one
		// may succeed, as with one SQLite writer.
		errTaken := errors.New("seat taken")
		var wg sync.WaitGroup
		results := make([]error, 2)
		for i, s := range []*Postgres{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, results[i] = s.Update(ctx, func(tx Tx) error {
					if l, err := tx.List("seat"); err != nil || len(l) > 0 {
						return errors.Join(errTaken, err)
					}
					time.Sleep(200 * time.Millisecond) // widen the race
					return tx.Put(Object{Kind: "seat", ID: fmt.Sprint(i), Name: fmt.Sprint("by-", i), Data: []byte(`{}`)})
				})
			}()
		}
		wg.Wait()
		ok := 0
		for _, err := range results {
			if err == nil {
				ok++
			} else if !errors.Is(err, errTaken) {
				t.Fatalf("unexpected error: %v", err)
			}
		}
		if ok != 1 {
			t.Fatalf("%d replicas took the seat, want exactly 1 (results %v)", ok, results)
		}
		if r, _ := a.Revision(ctx); r != 1 {
			t.Fatalf("revision %d, want 1", r)
		}
	})

	t.Run("ListenReconnects", func(t *testing.T) {
		url := pg.NewDatabase(t)
		a, b := openReplicas(t, url)
		ch, cancel := b.Watch()
		defer cancel()
		// Kill every LISTEN connection (as a server restart or a network
		// cut would), then commit: B still learns the revision.
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var killed int
		if err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query ILIKE 'LISTEN %' AND pid <> pg_backend_pid()`).Scan(&killed); err != nil || killed < 2 {
			t.Fatalf("terminated %d listeners: %v", killed, err)
		}
		rev, _, err := a.Update(ctx, func(tx Tx) error {
			return tx.Put(Object{Kind: "k", ID: "after", Name: "after", Data: []byte(`{}`)})
		})
		if err != nil {
			t.Fatal(err)
		}
		watchFor(t, ch, rev, 3*time.Second, "after the LISTEN connection was killed")
		// And notifications flow again on the new connection.
		rev, _, err = a.Update(ctx, func(tx Tx) error {
			return tx.Put(Object{Kind: "k", ID: "again", Name: "again", Data: []byte(`{}`)})
		})
		if err != nil {
			t.Fatal(err)
		}
		watchFor(t, ch, rev, time.Second, "on the new LISTEN connection")
	})

	t.Run("IdleListenerKeepsItsConnection", func(t *testing.T) {
		// The LISTEN connection wakes every pollInterval to read the
		// revision; an idle wake-up must not be taken for a broken
		// connection.
		defer func(d time.Duration) { pollInterval = d }(pollInterval)
		pollInterval = 100 * time.Millisecond
		url := pg.NewDatabase(t)
		var logs testenv.SyncBuffer
		a, err := OpenPostgres(ctx, url, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		ch, cancel := a.Watch()
		defer cancel()
		time.Sleep(500 * time.Millisecond)
		// A commit made behind the store's back (another writer that does
		// not NOTIFY) is still picked up by the poll.
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `UPDATE meta SET value = 41 WHERE key = 'revision'`); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-ch:
			if r != 41 {
				t.Fatalf("polled revision %d", r)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("poll did not deliver the revision")
		}
		a.Close()
		if strings.Contains(logs.String(), "LISTEN connection lost") {
			t.Fatalf("idle listener reconnected:\n%s", logs.String())
		}
	})

	t.Run("PresenceAndDeployment", func(t *testing.T) {
		url := pg.NewDatabase(t)
		a, b := openReplicas(t, url)
		now := time.Now().Truncate(time.Millisecond)
		if err := a.Touch(ctx, "connector", "c1", now, []byte(`{"flows":3}`)); err != nil {
			t.Fatal(err)
		}
		// An older report (a slow replica) does not go back in time.
		if err := b.Touch(ctx, "connector", "c1", now.Add(-time.Second), []byte(`{"flows":1}`)); err != nil {
			t.Fatal(err)
		}
		p, err := b.Presence(ctx, "connector")
		if err != nil || !p["c1"].Seen.Equal(now) || string(p["c1"].Data) != `{"flows":3}` {
			t.Fatalf("presence: %+v %v", p, err)
		}
		if p, _ := b.Presence(ctx, "relay"); len(p) != 0 {
			t.Fatalf("relay presence: %+v", p)
		}
		id := map[string]string{"ca_sha256": "aa", "admin_token_sha256": "bb"}
		if err := a.ClaimDeployment(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := b.ClaimDeployment(ctx, map[string]string{"ca_sha256": "aa", "admin_token_sha256": "bb", "new_key": "cc"}); err != nil {
			t.Fatalf("same identity plus a new key: %v", err)
		}
		err = b.ClaimDeployment(ctx, map[string]string{"ca_sha256": "zz", "admin_token_sha256": "bb", "new_key": "dd"})
		if !errors.Is(err, ErrDeploymentMismatch) || !strings.Contains(err.Error(), "ca_sha256, new_key") {
			t.Fatalf("mismatch: %v", err)
		}
	})

	t.Run("BadURL", func(t *testing.T) {
		for _, u := range []string{"mysql://x", "postgres://u:s3cret@127.0.0.1:1/x?pool_max_conns=banana", "::"} {
			_, err := OpenPostgres(ctx, u, nil)
			if err == nil {
				t.Fatalf("%s: opened", u)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("error shows the password: %v", err)
			}
		}
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err := OpenPostgres(cctx, "postgres://postern:wrong-password@"+strings.SplitN(pg.URL("x"), "@", 2)[1], nil)
		if err == nil || strings.Contains(err.Error(), "wrong-password") {
			t.Fatalf("wrong password: %v", err)
		}
	})

	// Every store above is closed: their goroutines are gone.
	testenv.WaitGoroutines(t, baseGoroutines, 5*time.Second)
}

// openReplicas opens two stores (two controller replicas) on the database
// at url; they close when the test ends.
func openReplicas(t *testing.T, url string) (a, b *Postgres) {
	t.Helper()
	for _, s := range []**Postgres{&a, &b} {
		p, err := OpenPostgres(context.Background(), url, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		*s = p
	}
	return a, b
}

// watchFor fails the test unless the next revision on ch is rev and comes
// within d.
func watchFor(t *testing.T, ch <-chan int64, rev int64, d time.Duration, where string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != rev {
			t.Fatalf("watched revision %d %s, want %d", got, where, rev)
		}
	case <-time.After(d):
		t.Fatalf("revision %d not watched %s within %v", rev, where, d)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:secret@h:5432/db":       "postgres://u:xxxxx@h:5432/db",
		"postgres://h/db?password=secret&x=1": "postgres://h/db?password=xxxxx&x=1",
		"postgresql://u@h/db":                 "postgresql://u@h/db",
		"not a url":                           "(unparsable database URL)",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
