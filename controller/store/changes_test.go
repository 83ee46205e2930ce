package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"postern.dev/postern/controller/store/pgtest"
)

// TestChangesSince: a follower reads exactly what each commit wrote
// (puts with their data, deletions as tombstones), an object rewritten after
// its deletion is no longer a tombstone, and a revision older than the kept
// log is refused with ErrChangesGone.
func TestChangesSince(t *testing.T) {
	pg := pgtest.Start(t)
	ctx := context.Background()
	st, err := OpenPostgres(ctx, pg.NewDatabase(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	put := func(kind, id string) int64 {
		rev, _, err := st.Update(ctx, func(tx Tx) error {
			return tx.Put(Object{Kind: kind, ID: id, Name: id, Data: []byte(`{"id":"` + id + `"}`)})
		})
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	del := func(kind, id string) int64 {
		rev, _, err := st.Update(ctx, func(tx Tx) error { return tx.Delete(kind, id) })
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	changes := func(since int64) (int64, map[string]bool) {
		t.Helper()
		rev, objs, err := st.ChangesSince(ctx, since)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, o := range objs {
			out[o.Kind+"/"+o.ID] = o.Data != nil
		}
		return rev, out
	}
	r1 := put("session", "s1")
	put("session", "s2")
	r3 := put("device", "d1")
	if rev, got := changes(r1); rev != r3 || len(got) != 2 || !got["session/s2"] || !got["device/d1"] {
		t.Fatalf("changes since %d: rev %d %v", r1, rev, got)
	}
	r4 := del("session", "s1")
	if rev, got := changes(r3); rev != r4 || len(got) != 1 || got["session/s1"] {
		t.Fatalf("after a deletion: rev %d %v, want session/s1 deleted", rev, got)
	}
	r5 := put("session", "s1")
	if _, got := changes(r4); len(got) != 1 || !got["session/s1"] {
		t.Fatalf("a deleted object written again: %v", got)
	}
	if rev, got := changes(r5); rev != r5 || len(got) != 0 {
		t.Fatalf("nothing new: rev %d %v", rev, got)
	}
	// Pruning: tombstones older than objects written since "before" go,
	// and followers behind that are told to reload.
	del("device", "d1")
	time.Sleep(5 * time.Millisecond)
	cut := time.Now()
	time.Sleep(5 * time.Millisecond)
	r7 := put("session", "s3")
	if err := st.PruneChanges(ctx, cut); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.ChangesSince(ctx, r1); !errors.Is(err, ErrChangesGone) {
		t.Fatalf("a follower behind the pruned log: %v, want ErrChangesGone", err)
	}
	if rev, got := changes(r7 - 1); rev != r7 || !got["session/s3"] {
		t.Fatalf("within the kept log: rev %d %v", rev, got)
	}
}
