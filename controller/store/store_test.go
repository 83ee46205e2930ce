package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"postern.dev/postern/controller/store/pgtest"
)

// backend starts what a backend needs (once per test) and returns a
// function opening a fresh, empty store; reopen opens the same database.
type backend struct {
	name  string
	start func(t *testing.T) func(t *testing.T) (s Store, reopen func() (Store, error))
}

func backends() []backend {
	return []backend{
		{"sqlite", func(*testing.T) func(t *testing.T) (Store, func() (Store, error)) {
			return func(t *testing.T) (Store, func() (Store, error)) {
				path := filepath.Join(t.TempDir(), "t.db")
				s, err := OpenSQLite(path)
				if err != nil {
					t.Fatal(err)
				}
				return s, func() (Store, error) { return OpenSQLite(path) }
			}
		}},
		{"postgres", func(t *testing.T) func(t *testing.T) (Store, func() (Store, error)) {
			pg := pgtest.Start(t)
			return func(t *testing.T) (Store, func() (Store, error)) {
				url := pg.NewDatabase(t)
				s, err := OpenPostgres(context.Background(), url, nil)
				if err != nil {
					t.Fatal(err)
				}
				return s, func() (Store, error) { return OpenPostgres(context.Background(), url, nil) }
			}
		}},
	}
}

// TestStoreConformance runs the same behaviour checks on every backend.
func TestStoreConformance(t *testing.T) {
	cases := []struct {
		name string
		fn   func(t *testing.T, s Store, reopen func() (Store, error))
	}{
		{"ObjectsRevisionAndWatch", testObjectsRevisionAndWatch},
		{"Bytes", testBytes},
		{"Ordering", testOrdering},
		{"FailedTransactionLeavesNothing", testFailedTransaction},
		{"AuditLog", testAuditLog},
		{"LargeWrites", testLargeWrites},
		{"ConcurrentWriters", testConcurrentWriters},
		{"WatchClose", testWatchClose},
	}
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			open := b.start(t)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					s, reopen := open(t)
					defer s.Close()
					c.fn(t, s, reopen)
				})
			}
		})
	}
}

func testObjectsRevisionAndWatch(t *testing.T, s Store, reopen func() (Store, error)) {
	ctx := context.Background()
	ch, cancel := s.Watch()
	defer cancel()
	rev, changed, err := s.Update(ctx, func(tx Tx) error {
		if err := tx.Put(Object{Kind: "k", ID: "1", Name: "a", Data: []byte(`{"x":1}`)}); err != nil {
			return err
		}
		return tx.Audit(AuditEntry{Actor: "me", Action: "create", Kind: "k", ObjectID: "1", Name: "a", After: []byte(`{"x":1}`), IP: "2001:db8::7", Device: "dev_1", ActorVia: "token atk_1", UserAgent: "curl/8"})
	})
	if err != nil || !changed || rev != 1 {
		t.Fatalf("update: rev %d changed %v err %v", rev, changed, err)
	}
	select {
	case r := <-ch:
		if r != 1 {
			t.Fatalf("watch got %d", r)
		}
	case <-time.After(time.Second):
		t.Fatal("no watch notification")
	}
	// A read-only transaction does not move the revision.
	if rev, changed, _ := s.Update(ctx, func(tx Tx) error { _, err := tx.Get("k", "1"); return err }); changed || rev != 1 {
		t.Fatalf("no-op update: rev %d changed %v", rev, changed)
	}
	// Name conflicts and errors roll back.
	_, _, err = s.Update(ctx, func(tx Tx) error {
		if err := tx.Put(Object{Kind: "k", ID: "3", Name: "c", Data: []byte(`{}`)}); err != nil {
			return err
		}
		return tx.Put(Object{Kind: "k", ID: "2", Name: "a", Data: []byte(`{}`)})
	})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("conflict: %v", err)
	}
	if err := s.View(ctx, func(tx Tx) error { _, err := tx.Get("k", "3"); return err }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rolled-back object visible: %v", err)
	}
	if _, _, err := s.Update(ctx, func(tx Tx) error { return tx.Put(Object{Kind: "k", ID: "4"}) }); !errors.Is(err, ErrBadObject) {
		t.Fatalf("bad object: %v", err)
	}
	if _, _, err := s.Update(ctx, func(tx Tx) error { return tx.Delete("k", "nope") }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete missing: %v", err)
	}
	// A caller may handle an error inside fn and go on: the transaction
	// stays usable (PostgreSQL aborts a transaction on a failed statement).
	_, _, err = s.Update(ctx, func(tx Tx) error {
		if err := tx.Put(Object{Kind: "k", ID: "2", Name: "a", Data: []byte(`{}`)}); !errors.Is(err, ErrConflict) {
			return fmt.Errorf("want conflict, got %v", err)
		}
		if _, err := tx.GetByName("k", "zzz"); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("want not found, got %v", err)
		}
		if err := tx.Delete("k", "nope"); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("want not found, got %v", err)
		}
		o, err := tx.GetByName("k", "a")
		if err != nil || o.ID != "1" {
			return fmt.Errorf("get by name: %+v %v", o, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("handled errors inside a transaction: %v", err)
	}
	// Paging, audit and events.
	for _, id := range []string{"5", "6", "7"} {
		if _, _, err := s.Update(ctx, func(tx Tx) error { return tx.Put(Object{Kind: "k", ID: id, Name: "n" + id, Data: []byte(`{}`)}) }); err != nil {
			t.Fatal(err)
		}
	}
	p1, _ := s.Page(ctx, "k", "", 2)
	p2, _ := s.Page(ctx, "k", p1[1].ID, 2)
	if len(p1) != 2 || len(p2) != 2 || p2[0].ID != "6" {
		t.Fatalf("pages: %v %v", p1, p2)
	}
	if p, err := s.Page(ctx, "none", "", 10); err != nil || p == nil || len(p) != 0 {
		t.Fatalf("empty page: %#v %v", p, err)
	}
	if a, _ := s.AuditLog(ctx, 0, 10); len(a) != 1 || a[0].Actor != "me" || string(a[0].After) != `{"x":1}` || a[0].Before != nil || a[0].IP != "2001:db8::7" || a[0].Device != "dev_1" ||
		a[0].ActorVia != "token atk_1" || a[0].UserAgent != "curl/8" {
		t.Fatalf("audit: %+v", a)
	}
	for i := 0; i < 5; i++ {
		if err := s.AddEvents(ctx, []Event{{Data: []byte(`{"i":1}`)}, {Data: []byte(`{"i":2}`)}}, 3); err != nil {
			t.Fatal(err)
		}
	}
	ev, _ := s.Events(ctx, 0, 100)
	if len(ev) != 3 || string(ev[2].Data) != `{"i":2}` {
		t.Fatalf("events kept: %+v, want the newest 3", ev)
	}
	if ev2, _ := s.Events(ctx, ev[0].ID, 100); len(ev2) != 2 {
		t.Fatalf("events after %d: %d", ev[0].ID, len(ev2))
	}
	s.Close()

	// Reopen: data and revision survive, migrations are not re-run.
	s2, err := reopen()
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	rev, objs, err := s2.LoadAll(ctx)
	if err != nil || rev != 4 || len(objs) != 4 {
		t.Fatalf("after reopen: rev %d, %d objects, %v", rev, len(objs), err)
	}
	if r, err := s2.Revision(ctx); err != nil || r != 4 {
		t.Fatalf("revision after reopen: %d %v", r, err)
	}
}

// testBytes: stored JSON comes back byte for byte (no normalisation), and
// Updated is set.
func testBytes(t *testing.T, s Store, _ func() (Store, error)) {
	ctx := context.Background()
	data := []byte("{ \"b\": 2,  \"a\": \"caf\u00e9 \\u0000\",\n\"n\": 1.50 }")
	before := time.Now().Add(-time.Second)
	if _, _, err := s.Update(ctx, func(tx Tx) error {
		return tx.Put(Object{Kind: "k", ID: "id", Name: "Name With Spaces ü", Data: data})
	}); err != nil {
		t.Fatal(err)
	}
	var o Object
	if err := s.View(ctx, func(tx Tx) error { var err error; o, err = tx.Get("k", "id"); return err }); err != nil {
		t.Fatal(err)
	}
	if string(o.Data) != string(data) || o.Name != "Name With Spaces ü" || o.Updated.Before(before) {
		t.Fatalf("round trip: %+v", o)
	}
	// Names are case-sensitive, as in SQLite.
	if _, _, err := s.Update(ctx, func(tx Tx) error {
		return tx.Put(Object{Kind: "k", ID: "id2", Name: "name with spaces ü", Data: []byte(`{}`)})
	}); err != nil {
		t.Fatalf("case-different name: %v", err)
	}
	// Renaming an object in place is not a conflict with itself.
	if _, _, err := s.Update(ctx, func(tx Tx) error {
		return tx.Put(Object{Kind: "k", ID: "id", Name: "renamed", Data: []byte(`{"v":2}`)})
	}); err != nil {
		t.Fatalf("rename: %v", err)
	}
	// The freed name can be reused by another object in a later commit.
	if _, _, err := s.Update(ctx, func(tx Tx) error {
		return tx.Put(Object{Kind: "other", ID: "id", Name: "renamed", Data: []byte(`{}`)})
	}); err != nil {
		t.Fatalf("same name in another kind: %v", err)
	}
}

// testOrdering: List and Page order ids byte-wise on every backend.
func testOrdering(t *testing.T, s Store, _ func() (Store, error)) {
	ctx := context.Background()
	ids := []string{"b", "B", "a", "_x", "a-1", "a1", "Z", "é"}
	if _, _, err := s.Update(ctx, func(tx Tx) error {
		for _, id := range ids {
			if err := tx.Put(Object{Kind: "k", ID: id, Name: "n" + id, Data: []byte(`{}`)}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{"B", "Z", "_x", "a", "a-1", "a1", "b", "é"}
	var got []string
	if err := s.View(ctx, func(tx Tx) error {
		l, err := tx.List("k")
		for _, o := range l {
			got = append(got, o.ID)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("list order %v, want %v", got, want)
	}
	var paged []string
	after := ""
	for {
		p, err := s.Page(ctx, "k", after, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(p) == 0 {
			break
		}
		for _, o := range p {
			paged = append(paged, o.ID)
		}
		after = p[len(p)-1].ID
	}
	if fmt.Sprint(paged) != fmt.Sprint(want) {
		t.Fatalf("page order %v, want %v", paged, want)
	}
	if err := s.View(ctx, func(tx Tx) error {
		l, err := tx.List("missing")
		if err != nil || len(l) != 0 {
			return fmt.Errorf("empty list: %v %v", l, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// testFailedTransaction: an error from fn after many writes leaves the store
// exactly as it was, revision and audit included, and tells no watcher.
func testFailedTransaction(t *testing.T, s Store, _ func() (Store, error)) {
	ctx := context.Background()
	if _, _, err := s.Update(ctx, func(tx Tx) error {
		return tx.Put(Object{Kind: "k", ID: "keep", Name: "keep", Data: []byte(`{"v":1}`)})
	}); err != nil {
		t.Fatal(err)
	}
	rev0, objs0, _ := s.LoadAll(ctx)
	ch, cancel := s.Watch()
	defer cancel()
	boom := errors.New("validation failed")
	_, _, err := s.Update(ctx, func(tx Tx) error {
		for i := range 50 {
			if err := tx.Put(Object{Kind: "k", ID: fmt.Sprint("x", i), Name: fmt.Sprint("x", i), Data: []byte(`{}`)}); err != nil {
				return err
			}
		}
		if err := tx.Put(Object{Kind: "k", ID: "keep", Name: "keep", Data: []byte(`{"v":2}`)}); err != nil {
			return err
		}
		if err := tx.Audit(AuditEntry{Actor: "a", Action: "update", Kind: "k", ObjectID: "keep", Name: "keep"}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("fn error not returned: %v", err)
	}
	rev1, objs1, _ := s.LoadAll(ctx)
	if rev1 != rev0 || len(objs1) != len(objs0) || string(objs1[0].Data) != `{"v":1}` {
		t.Fatalf("failed transaction left traces: rev %d→%d, %d→%d objects", rev0, rev1, len(objs0), len(objs1))
	}
	if a, _ := s.AuditLog(ctx, 0, 10); len(a) != 0 {
		t.Fatalf("audit of a rolled-back transaction: %+v", a)
	}
	select {
	case r := <-ch:
		t.Fatalf("watcher told of rolled-back revision %d", r)
	case <-time.After(100 * time.Millisecond):
	}
	// A cancelled context fails cleanly too.
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if _, _, err := s.Update(cctx, func(tx Tx) error {
		return tx.Put(Object{Kind: "k", ID: "c", Name: "c", Data: []byte(`{}`)})
	}); err == nil {
		t.Fatal("update with a cancelled context succeeded")
	}
	if r, _ := s.Revision(ctx); r != rev0 {
		t.Fatalf("revision moved to %d", r)
	}
}

func testAuditLog(t *testing.T, s Store, _ func() (Store, error)) {
	ctx := context.Background()
	at := time.UnixMilli(1700000000123).UTC()
	for i := range 5 {
		if _, _, err := s.Update(ctx, func(tx Tx) error {
			if err := tx.Put(Object{Kind: "k", ID: fmt.Sprint(i), Name: fmt.Sprint(i), Data: []byte(`{}`)}); err != nil {
				return err
			}
			return tx.Audit(AuditEntry{At: at, Actor: "admin", Action: "create", Kind: "k", ObjectID: fmt.Sprint(i), Name: fmt.Sprint(i), Before: []byte(`{"old":true}`)})
		}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := s.AuditLog(ctx, 0, 3)
	if err != nil || len(a) != 3 || !a[0].At.Equal(at) || string(a[0].Before) != `{"old":true}` || a[0].After != nil {
		t.Fatalf("audit page 1: %+v %v", a, err)
	}
	b, err := s.AuditLog(ctx, a[2].ID, 3)
	if err != nil || len(b) != 2 || b[0].ID <= a[2].ID || b[1].ObjectID != "4" {
		t.Fatalf("audit page 2: %+v %v", b, err)
	}
	// Several entries of one transaction keep their order.
	if _, _, err := s.Update(ctx, func(tx Tx) error {
		if err := tx.Delete("k", "0"); err != nil {
			return err
		}
		for _, n := range []string{"x", "y", "z"} {
			if err := tx.Audit(AuditEntry{Actor: "apply", Action: "delete", Kind: "k", ObjectID: n, Name: n}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c, err := s.AuditLog(ctx, b[1].ID, 10)
	if err != nil || len(c) != 3 || c[0].ObjectID != "x" || c[1].ObjectID != "y" || c[2].ObjectID != "z" || c[0].At.IsZero() {
		t.Fatalf("audit of one transaction: %+v %v", c, err)
	}
}

// testLargeWrites: one transaction's audit entries and one batch of events
// are written whole and in order, however many there are. PostgreSQL takes
// at most 65,535 parameters per statement, so the Postgres store splits
// them into several INSERTs; applying 10,000 resources once failed there
// because one chunk of audit rows was over that limit.
func testLargeWrites(t *testing.T, s Store, _ func() (Store, error)) {
	ctx := context.Background()
	const audits = 12000 // more than two Postgres chunks (5,461 rows each)
	if _, _, err := s.Update(ctx, func(tx Tx) error {
		if err := tx.Put(Object{Kind: "k", ID: "big", Name: "big", Data: []byte(`{}`)}); err != nil {
			return err
		}
		for i := range audits {
			n := fmt.Sprint(i)
			if err := tx.Audit(AuditEntry{Actor: "apply", Action: "create", Kind: "k", ObjectID: n, Name: n, After: []byte(`{}`), IP: "2001:db8::1", Device: "dev_1", ActorVia: "token atk_1", UserAgent: "postern"}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("transaction with %d audit entries: %v", audits, err)
	}
	a, err := s.AuditLog(ctx, 0, audits+10)
	if err != nil || len(a) != audits {
		t.Fatalf("audit log: %d entries, %v; want %d", len(a), err, audits)
	}
	for i, e := range a {
		if e.ObjectID != fmt.Sprint(i) || (i > 0 && e.ID <= a[i-1].ID) {
			t.Fatalf("audit entry %d: %+v after %+v: out of order", i, e, a[max(i-1, 0)])
		}
	}

	const events = 40000 // more than one Postgres chunk (32,767 rows)
	batch := make([]Event, events)
	for i := range batch {
		batch[i] = Event{Data: []byte(fmt.Sprintf(`{"i":%d}`, i))}
	}
	if err := s.AddEvents(ctx, batch, 0); err != nil {
		t.Fatalf("%d events: %v", events, err)
	}
	ev, err := s.Events(ctx, 0, events+10)
	if err != nil || len(ev) != events {
		t.Fatalf("events: %d, %v; want %d", len(ev), err, events)
	}
	if string(ev[0].Data) != `{"i":0}` || string(ev[events-1].Data) != fmt.Sprintf(`{"i":%d}`, events-1) {
		t.Fatalf("events out of order: first %s, last %s", ev[0].Data, ev[events-1].Data)
	}
}

// testConcurrentWriters: read-modify-write transactions from many goroutines
// never lose an update (writers are serialized), and every commit gets its
// own revision.
func testConcurrentWriters(t *testing.T, s Store, _ func() (Store, error)) {
	ctx := context.Background()
	if _, _, err := s.Update(ctx, func(tx Tx) error {
		return tx.Put(Object{Kind: "counter", ID: "c", Name: "c", Data: []byte(`0`)})
	}); err != nil {
		t.Fatal(err)
	}
	const workers, each = 4, 10
	errc := make(chan error, workers)
	for range workers {
		go func() {
			for range each {
				_, _, err := s.Update(ctx, func(tx Tx) error {
					o, err := tx.Get("counter", "c")
					if err != nil {
						return err
					}
					var n int
					fmt.Sscan(string(o.Data), &n)
					o.Data = []byte(fmt.Sprint(n + 1))
					return tx.Put(o)
				})
				if err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range workers {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	rev, objs, err := s.LoadAll(ctx)
	if err != nil || rev != 1+workers*each || string(objs[0].Data) != fmt.Sprint(workers*each) {
		t.Fatalf("after concurrent writers: rev %d, %s, %v", rev, objs[0].Data, err)
	}
}

func testWatchClose(t *testing.T, s Store, _ func() (Store, error)) {
	ch1, cancel1 := s.Watch()
	cancel1()
	cancel1() // idempotent
	if _, ok := <-ch1; ok {
		t.Fatal("cancelled watch channel still open")
	}
	ch2, cancel2 := s.Watch()
	defer cancel2()
	s.Close()
	select {
	case _, ok := <-ch2:
		if ok {
			t.Fatal("value after close")
		}
	case <-time.After(time.Second):
		t.Fatal("watch channel not closed by Close")
	}
	ch3, _ := s.Watch()
	if _, ok := <-ch3; ok {
		t.Fatal("watch after close is open")
	}
}
