package console

import (
	"strings"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
)

// TestFlowStatsChart: events fall into per-minute buckets of the last hour
// (older ones and future ones are left out), refusals are counted by reason,
// and the chart has one bar per non-empty minute and kind.
func TestFlowStatsChart(t *testing.T) {
	end := time.Date(2026, 12, 6, 10, 0, 30, 0, time.UTC)
	st := newFlowStats(60, end)
	counts := map[string]int{}
	ev := func(result string, age time.Duration) {
		st.add(controlapi.FlowEvent{Result: result}, end.Add(-age), counts)
	}
	ev("ok", 10*time.Second)
	ev("ok", 20*time.Second)
	ev("posture", 25*time.Second)
	ev("ok", 30*time.Minute)
	ev("denied", 59*time.Minute)
	ev("ok", 61*time.Minute) // too old
	ev("ok", -time.Minute)   // from the future (clock skew): not drawn
	if st.Flows != 5 || st.Allowed[59] != 2 || st.Refused[59] != 1 || st.Allowed[29] != 1 || st.Refused[0] != 1 {
		t.Fatalf("stats: %d flows, allowed %v, refused %v", st.Flows, st.Allowed, st.Refused)
	}
	if counts["posture"] != 1 || counts["denied"] != 1 || len(counts) != 2 {
		t.Fatalf("refusals by reason: %v", counts)
	}
	ch := buildFlowChart(st)
	if ch.Max != 3 || len(ch.Bars) != 4 {
		t.Fatalf("chart: max %d, %d bars: %+v", ch.Max, len(ch.Bars), ch.Bars)
	}
	last := ch.Bars[len(ch.Bars)-1]
	if last.Class != "bar-refused" || last.Title != "10:00: 3 flows, 1 refused" || last.Y < chartTop-0.001 || last.X+last.W > chartW {
		t.Fatalf("newest bar: %+v", last)
	}
	if empty := buildFlowChart(newFlowStats(60, end)); len(empty.Bars) != 0 || !strings.Contains(empty.Summary, "0 flows") {
		t.Fatalf("empty chart: %+v", empty)
	}
}

func TestEventFilter(t *testing.T) {
	row := eventRow{EventView: api.EventView{FlowEvent: controlapi.FlowEvent{Principal: "usr_1", ResourceID: "res_1", Destination: "db.corp.internal", Result: "posture"}},
		User: "alice@example.com", ResourceName: "prod-db", Decision: "refused"}
	for _, c := range []struct {
		f    eventFilter
		want bool
	}{
		{eventFilter{}, true},
		{eventFilter{User: "ALICE"}, true},
		{eventFilter{User: "usr_1"}, true},
		{eventFilter{User: "bob"}, false},
		{eventFilter{Resource: "prod"}, true},
		{eventFilter{Resource: "db.corp"}, true},
		{eventFilter{Resource: "wiki"}, false},
		{eventFilter{Decision: "refused"}, true},
		{eventFilter{Decision: "allowed"}, false},
	} {
		if got := c.f.match(row); got != c.want {
			t.Errorf("%+v: %v", c.f, got)
		}
	}
	if q := (eventFilter{User: "a b", Decision: "refused"}).query(); q != "&decision=refused&user=a+b" {
		t.Errorf("query %q", q)
	}
}
