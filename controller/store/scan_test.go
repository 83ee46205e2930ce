package store

import (
	"strconv"
	"testing"
	"time"
)

// TestInsertEvents: both backends' INSERT numbers its placeholders their
// way, carries each event's time in Unix milliseconds and its data as text,
// and stamps an event without a time with the current one.
func TestInsertEvents(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_123)
	events := []Event{{At: at, Data: []byte(`{"a":1}`)}, {Data: []byte(`{"b":2}`)}}
	before := time.Now().UnixMilli()
	pg, args := insertEvents(events, func(i int) string { return "$" + strconv.Itoa(i+1) })
	if want := `INSERT INTO events (at, data) VALUES ($1, $2),($3, $4)`; pg != want {
		t.Fatalf("postgres insert %q, want %q", pg, want)
	}
	if len(args) != 4 || args[0] != at.UnixMilli() || args[1] != `{"a":1}` || args[3] != `{"b":2}` {
		t.Fatalf("args %v", args)
	}
	if stamped, ok := args[2].(int64); !ok || stamped < before || stamped > time.Now().UnixMilli() {
		t.Fatalf("an event without a time was stamped %v, want now", args[2])
	}
	lite, _ := insertEvents(events[:1], func(int) string { return "?" })
	if want := `INSERT INTO events (at, data) VALUES (?, ?)`; lite != want {
		t.Fatalf("sqlite insert %q, want %q", lite, want)
	}
}
