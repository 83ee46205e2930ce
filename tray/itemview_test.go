package tray

import (
	"slices"
	"testing"
)

// recordingItem records the calls a menu item gets.
type recordingItem struct{ calls []string }

func (r *recordingItem) SetTitle(s string)   { r.calls = append(r.calls, "title "+s) }
func (r *recordingItem) SetTooltip(s string) { r.calls = append(r.calls, "tooltip "+s) }
func (r *recordingItem) Show()               { r.calls = append(r.calls, "show") }
func (r *recordingItem) Hide()               { r.calls = append(r.calls, "hide") }

// Setting what the item already shows calls nothing (each call would make
// the desktop rebuild an open menu); a change calls once; after forget,
// everything is set again.
func TestItemViewCallsOnlyForChanges(t *testing.T) {
	r := &recordingItem{}
	v := &itemView{it: r}
	apply := func(title, tip string, visible bool) {
		v.setTitle(title)
		v.setTooltip(tip)
		v.setVisible(visible)
	}
	apply("Connected", "Copy db", true)
	want := []string{"title Connected", "tooltip Copy db", "show"}
	if !slices.Equal(r.calls, want) {
		t.Fatalf("first apply: %q, want %q", r.calls, want)
	}
	for range 3 {
		apply("Connected", "Copy db", true)
	}
	if !slices.Equal(r.calls, want) {
		t.Fatalf("unchanged applies called the item: %q", r.calls[len(want):])
	}
	apply("Connected", "Copy db", false)
	apply("Disconnected", "Copy db", false)
	want = append(want, "hide", "title Disconnected")
	if !slices.Equal(r.calls, want) {
		t.Fatalf("changes: %q, want %q", r.calls, want)
	}
	v.forget()
	apply("Disconnected", "Copy db", false)
	want = append(want, "title Disconnected", "tooltip Copy db", "hide")
	if !slices.Equal(r.calls, want) {
		t.Fatalf("after forget: %q, want %q", r.calls, want)
	}
}
