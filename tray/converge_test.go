package tray

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeItem is a StatusNotifierItem as fyne.io/systray exports it: not on
// the bus at first, then exported from a stale snapshot, and dropping the
// first sets that land before its properties are wired up.
type fakeItem struct {
	mu       sync.Mutex
	reads    int
	shown    string
	drops    int // sets still to drop
	applied  int
	exported bool
}

func (f *fakeItem) read() (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	if f.reads == 3 {
		f.exported = true
	}
	if !f.exported {
		return "", errors.New("no such object")
	}
	return f.shown, nil
}

func (f *fakeItem) set(tip string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied++
	if f.drops > 0 {
		f.drops--
		return
	}
	f.shown = tip
}

func TestConvergeReappliesUntilTheItemShowsTheLastTooltip(t *testing.T) {
	item := &fakeItem{shown: "Postern: daemon not running", drops: 2}
	want := "Postern: Signed out"
	item.set(want) // dropped: set while the item was being exported
	err := converge(context.Background(), item.read, func() string { return want }, func() { item.set(want) }, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if item.shown != want || item.applied != 3 {
		t.Fatalf("item shows %q after %d sets, want %q after 3", item.shown, item.applied, want)
	}
}

func TestConvergeGivesUpWithTheReason(t *testing.T) {
	item := &fakeItem{shown: "old", drops: 1 << 30}
	err := converge(context.Background(), item.read, func() string { return "new" }, func() { item.set("new") }, 50*time.Millisecond)
	if err == nil || err.Error() != `the item shows "old", want "new"` {
		t.Fatalf("err = %v", err)
	}
	never := &fakeItem{reads: -1 << 30}
	if err := converge(context.Background(), never.read, func() string { return "x" }, func() {}, 30*time.Millisecond); err == nil || never.applied != 0 {
		t.Fatalf("item never exported: err = %v, %d sets", err, never.applied)
	}
}

func TestConvergeStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	never := &fakeItem{reads: -1 << 30}
	if err := converge(ctx, never.read, func() string { return "x" }, func() {}, time.Hour); err != nil {
		t.Fatal(err)
	}
}
