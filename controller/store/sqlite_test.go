package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestSQLiteObjectsRevisionAndWatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ch, cancel := s.Watch()
	defer cancel()
	rev, changed, err := s.Update(ctx, func(tx Tx) error {
		if err := tx.Put(Object{Kind: "k", ID: "1", Name: "a", Data: []byte(`{"x":1}`)}); err != nil {
			return err
		}
		return tx.Audit(AuditEntry{Actor: "me", Action: "create", Kind: "k", ObjectID: "1", Name: "a", After: []byte(`{"x":1}`)})
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
	if a, _ := s.AuditLog(ctx, 0, 10); len(a) != 1 || a[0].Actor != "me" || string(a[0].After) != `{"x":1}` {
		t.Fatalf("audit: %+v", a)
	}
	for i := 0; i < 5; i++ {
		if err := s.AddEvents(ctx, []Event{{Data: []byte(`{"i":1}`)}, {Data: []byte(`{"i":2}`)}}, 3); err != nil {
			t.Fatal(err)
		}
	}
	if ev, _ := s.Events(ctx, 0, 100); len(ev) != 3 {
		t.Fatalf("events kept: %d, want 3", len(ev))
	}
	s.Close()

	// Reopen: data and revision survive, migrations are not re-run.
	s2, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	rev, objs, err := s2.LoadAll(ctx)
	if err != nil || rev != 4 || len(objs) != 4 {
		t.Fatalf("after reopen: rev %d, %d objects, %v", rev, len(objs), err)
	}
}
