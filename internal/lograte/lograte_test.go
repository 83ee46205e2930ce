package lograte

import (
	"testing"
	"time"
)

func TestOneLinePerKeyAndInterval(t *testing.T) {
	const every = 10 * time.Second
	l := New(every)
	now := time.Unix(1000, 0)
	if !l.Allow("a", now) || l.Allow("a", now.Add(time.Second)) || !l.Allow("b", now) {
		t.Fatal("lines not allowed once per key and interval")
	}
	if l.Allow("a", now.Add(every-time.Nanosecond)) {
		t.Fatal("a second line within the interval")
	}
	if !l.Allow("a", now.Add(every)) {
		t.Fatal("no line after the interval")
	}
	if n := l.remembered(); n != 1 {
		t.Fatalf("%d keys remembered, want 1: a key not allowed lately is kept", n)
	}
	// The zero time is a time like any other: a first line is allowed.
	z := New(every)
	if !z.Allow("a", time.Time{}) || z.Allow("a", time.Time{}) {
		t.Fatal("lines at the zero time not limited")
	}
}
