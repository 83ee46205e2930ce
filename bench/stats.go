package bench

import (
	"encoding/json"
	"math"
	"slices"
	"time"
)

// Summary is the median and spread of repeated measurements of one cell.
type Summary struct {
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	N      int       `json:"n"`
	Values []float64 `json:"values"`
}

// Summarize returns the median, minimum and maximum of xs (NaNs dropped).
func Summarize(xs []float64) Summary {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			v = append(v, x)
		}
	}
	s := Summary{N: len(v), Values: v}
	if len(v) == 0 {
		s.Median, s.Min, s.Max = math.NaN(), math.NaN(), math.NaN()
		return s
	}
	sorted := slices.Clone(v)
	slices.Sort(sorted)
	s.Min, s.Max = sorted[0], sorted[len(sorted)-1]
	s.Median = Percentile(sorted, 50)
	return s
}

// SpreadPct is (max-min)/median in percent (0 for a single value).
func (s Summary) SpreadPct() float64 {
	if s.N < 2 || s.Median == 0 || math.IsNaN(s.Median) {
		return 0
	}
	return (s.Max - s.Min) / math.Abs(s.Median) * 100
}

// Valid reports whether the summary holds at least one value.
func (s Summary) Valid() bool { return s.N > 0 && !math.IsNaN(s.Median) }

// Percentile returns the p-th percentile (0..100) of sorted values, with
// linear interpolation between closest ranks.
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	if len(sorted) == 1 {
		return sorted[0]
	}
	r := p / 100 * float64(len(sorted)-1)
	lo := int(math.Floor(r))
	hi := int(math.Ceil(r))
	if hi >= len(sorted) {
		return sorted[len(sorted)-1]
	}
	f := r - float64(lo)
	return sorted[lo]*(1-f) + sorted[hi]*f
}

// DurationPercentiles returns the given percentiles of ds in microseconds.
func DurationPercentiles(ds []time.Duration, ps ...float64) []float64 {
	v := make([]float64, len(ds))
	for i, d := range ds {
		v[i] = float64(d) / float64(time.Microsecond)
	}
	slices.Sort(v)
	out := make([]float64, len(ps))
	for i, p := range ps {
		out[i] = Percentile(v, p)
	}
	return out
}

// Jain is Jain's fairness index of xs: (Σx)² / (n·Σx²); 1 is perfectly
// fair, 1/n is one flow taking everything.
func Jain(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	var sum, sq float64
	for _, x := range xs {
		sum += x
		sq += x * x
	}
	if sq == 0 {
		return math.NaN()
	}
	return sum * sum / (float64(len(xs)) * sq)
}

// jsonNum is a float64 that encodes NaN and ±Inf as null.
type jsonNum float64

func (n jsonNum) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return json.Marshal(f)
}

// MarshalJSON encodes a summary with null for missing values.
func (s Summary) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Median jsonNum   `json:"median"`
		Min    jsonNum   `json:"min"`
		Max    jsonNum   `json:"max"`
		N      int       `json:"n"`
		Values []float64 `json:"values"`
	}{jsonNum(s.Median), jsonNum(s.Min), jsonNum(s.Max), s.N, s.Values})
}

// UnmarshalJSON rebuilds a summary from its values.
func (s *Summary) UnmarshalJSON(b []byte) error {
	var v struct {
		Values []float64 `json:"values"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = Summarize(v.Values)
	return nil
}
