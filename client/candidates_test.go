package client

import (
	"context"
	"errors"
	"testing"

	"postern.dev/postern/wire"
)

// TestTryCandidates: a connector's answer ends the search, except "too many
// flows", after which the next connector is tried; when every connector is
// at its limit, that is the answer; connectors that do not answer are
// collected as errors.
func TestTryCandidates(t *testing.T) {
	limited := &FlowError{Status: wire.StatusTooManyFlows, Msg: "this device has 2 flows open at this connector, its limit"}
	denied := &FlowError{Status: wire.StatusDenied, Msg: "denied"}
	silent := errors.New("connector did not answer")
	ok := &flow{}
	type answer struct {
		f   *flow
		err error
	}
	cases := []struct {
		name      string
		answers   []answer
		wantFlow  bool
		wantErr   error
		wantTried int
		wantErrs  int
	}{
		{"first takes it", []answer{{ok, nil}, {ok, nil}}, true, nil, 1, 0},
		{"first at its limit, second takes it", []answer{{nil, limited}, {ok, nil}}, true, nil, 2, 0},
		{"all at their limit", []answer{{nil, limited}, {nil, limited}}, false, limited, 2, 0},
		{"a denial ends the search", []answer{{nil, denied}, {ok, nil}}, false, denied, 1, 0},
		{"silent, then at its limit", []answer{{nil, silent}, {nil, limited}}, false, limited, 2, 1},
		{"silent, then takes it", []answer{{nil, silent}, {ok, nil}}, true, nil, 2, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cands := make([]*connEntry, len(c.answers))
			idx := map[*connEntry]int{}
			for i := range cands {
				cands[i] = &connEntry{}
				idx[cands[i]] = i
			}
			tried := 0
			f, ans, errs := tryCandidates(context.Background(), cands, func(e *connEntry, first bool) (*flow, error) {
				tried++
				a := c.answers[idx[e]]
				return a.f, a.err
			})
			if (f != nil) != c.wantFlow || ans != c.wantErr || tried != c.wantTried || len(errs) != c.wantErrs {
				t.Fatalf("flow %v answer %v tried %d errs %v; want flow %v answer %v tried %d, %d errs",
					f != nil, ans, tried, errs, c.wantFlow, c.wantErr, c.wantTried, c.wantErrs)
			}
		})
	}
}
