package bench

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	s := Summarize([]float64{3, 1, 2, math.NaN()})
	if s.N != 3 || s.Median != 2 || s.Min != 1 || s.Max != 3 {
		t.Fatalf("Summarize = %+v", s)
	}
	if got := s.SpreadPct(); got != 100 {
		t.Fatalf("SpreadPct = %v, want 100", got)
	}
	if e := Summarize(nil); e.Valid() {
		t.Fatalf("empty summary is valid: %+v", e)
	}
	if m := Summarize([]float64{1, 2, 3, 4}).Median; m != 2.5 {
		t.Fatalf("median of 1..4 = %v, want 2.5", m)
	}
}

func TestPercentile(t *testing.T) {
	v := []float64{10, 20, 30, 40, 50}
	for _, c := range []struct{ p, want float64 }{{0, 10}, {50, 30}, {100, 50}, {25, 20}, {90, 46}} {
		if got := Percentile(v, c.p); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("Percentile(%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Error("Percentile of nothing is not NaN")
	}
	got := DurationPercentiles([]time.Duration{3 * time.Microsecond, time.Microsecond, 2 * time.Microsecond}, 50, 100)
	if got[0] != 2 || got[1] != 3 {
		t.Errorf("DurationPercentiles = %v", got)
	}
}

func TestJain(t *testing.T) {
	if j := Jain([]float64{5, 5, 5, 5}); math.Abs(j-1) > 1e-12 {
		t.Errorf("Jain(equal) = %v", j)
	}
	if j := Jain([]float64{1, 0, 0, 0}); math.Abs(j-0.25) > 1e-12 {
		t.Errorf("Jain(one of four) = %v", j)
	}
	if !math.IsNaN(Jain(nil)) || !math.IsNaN(Jain([]float64{0, 0})) {
		t.Error("Jain of nothing / zeros is not NaN")
	}
}

func TestSummaryJSONNaN(t *testing.T) {
	b, err := json.Marshal(Summarize(nil))
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"median":null,"min":null,"max":null,"n":0,"values":null}` {
		t.Fatalf("got %s", b)
	}
	b, err = json.Marshal(TargetResult{Name: "x", Value: math.NaN(), Threshold: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"value":null`) || !strings.Contains(string(b), `"threshold":3`) {
		t.Fatalf("got %s", b)
	}
}

func TestTallyJoinsWorkersAndCountsErrors(t *testing.T) {
	var errs errCount
	errs.add(errors.New("refused"))
	errs.add(errors.New("timeout"))
	start := time.Now().Add(-2 * time.Second)
	all, perSec, n, first, err := tally("load", [][]time.Duration{{time.Millisecond}, nil, {2 * time.Millisecond, 3 * time.Millisecond}}, &errs, start)
	if err != nil || len(all) != 3 || n != 2 || first != "refused" {
		t.Fatalf("tally = %v, %v errors (first %q), %v", all, n, first, err)
	}
	if perSec <= 0 || perSec > 1.5 { // 3 in a little over 2 s
		t.Fatalf("perSec = %v, want about 1.5", perSec)
	}
	if _, _, _, _, err := tally("load x", [][]time.Duration{nil, nil}, &errs, start); err == nil || !strings.Contains(err.Error(), "load x: nothing completed (2 errors, first: refused)") {
		t.Fatalf("no completion: %v", err)
	}
}
