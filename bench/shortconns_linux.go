package bench

import (
	"context"
	"fmt"
)

// shortConnsPhase runs the no-stall phase on Postern's direct path: count
// connections at each of 1, 8 and 64 workers.
func (r *runner) shortConnsPhase(ctx context.Context, t *tunnel, vals map[string][]float64) {
	for _, w := range shortConnWorkers {
		if ctx.Err() != nil || t.alive() != nil {
			return
		}
		var res ShortConnsResult
		ws := fmt.Sprint(w)
		err := r.agentJSON(ctx, t.ns, &res, "short", "--addr", t.echoAddr(), "--workers", ws, "--count", fmt.Sprint(r.opts.ShortConns))
		if err != nil {
			r.cellErr(t, fmt.Sprintf("%d short connections, %d at a time: %v", r.opts.ShortConns, w, err))
			r.progress("short conns x%-2d %-15s FAILED: %v", w, t.key, err)
			continue
		}
		if res.Errors > 0 {
			r.cellErr(t, fmt.Sprintf("short connections, %d at a time: %d of %d failed (first: %s)", w, res.Errors, res.Errors+res.Conns, res.FirstError))
		}
		for k, v := range map[string]float64{MShortConns: float64(res.Conns), MShortErrors: float64(res.Errors), MShortOver: float64(res.Over100ms),
			MShortP50: res.P50us, MShortP99: res.P99us, MShortMaxUs: res.MaxUs, MShortRate: res.PerSec} {
			vals[k+ws] = append(vals[k+ws], v)
		}
		r.progress("short conns x%-2d %-15s %d done, %d failed, %d over 100 ms, slowest %.1f ms, %.0f/s", w, t.key, res.Conns, res.Errors, res.Over100ms, res.MaxUs/1000, res.PerSec)
	}
}
