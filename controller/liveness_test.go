package controller

import (
	"slices"
	"testing"
	"time"
)

// overdue lists only online components whose last heartbeat, or the
// controller's start when none came since, is older than the limit.
func TestOverdue(t *testing.T) {
	start := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	now := start.Add(time.Minute)
	items := map[string]*Connector{
		"late":         {Online: true},
		"fresh":        {Online: true},
		"already-off":  {Online: false},
		"never-heard":  {Online: true},
		"just-at-edge": {Online: true},
	}
	seen := map[string]time.Time{
		"late":         now.Add(-31 * time.Second),
		"fresh":        now.Add(-2 * time.Second),
		"already-off":  now.Add(-time.Hour),
		"just-at-edge": now.Add(-30 * time.Second),
	}
	got := overdue(items, seen, start, now, 30*time.Second, func(v *Connector) bool { return v.Online })
	slices.Sort(got)
	if want := []string{"late", "never-heard"}; !slices.Equal(got, want) {
		t.Fatalf("overdue = %v, want %v", got, want)
	}
	if got := overdue(items, seen, now, now, 30*time.Second, func(v *Connector) bool { return v.Online }); slices.Contains(got, "never-heard") {
		t.Fatalf("a component not heard from since a start just now is overdue: %v", got)
	}
}
