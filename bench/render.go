package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
)

// LoadReport reads a report written by Write (the JSON in bench/results).
func LoadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("parse report %s: %w", path, err)
	}
	r.Evaluate()
	return &r, nil
}

// Findings are sentences computed from the report: how the Postern rows
// compare with the others in this run.
func (r *Report) Findings() []string {
	var out []string
	ratio := func(a, b float64) string {
		if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
			return "—"
		}
		return fmt.Sprintf("%.2f×", a/b)
	}
	for _, pk := range []string{TunPosternDirect, TunPosternRelay} {
		t := r.tunnel(pk)
		if t == nil || t.Error != "" && len(t.Metrics) == 0 {
			continue
		}
		m := func(k string) float64 { return r.median(pk, k) }
		out = append(out, fmt.Sprintf("**%s**: single flow %s Gbit/s up = %s wireguard-go, %s OpenVPN, %s `ssh -L`, %s direct TCP; 64 flows %s wireguard-go; CPU per GB %s wireguard-go's; request/response p50 idle %s µs vs %s µs for wireguard-go (direct TCP %s µs); connect p50 %s µs vs %s µs for wireguard-go.",
			t.Label, fmtNum(m(MTputUp1)), ratio(m(MTputUp1), r.median(TunWireGuard, MTputUp1)), ratio(m(MTputUp1), r.median(TunOpenVPN, MTputUp1)),
			ratio(m(MTputUp1), r.median(TunSSH, MTputUp1)), ratio(m(MTputUp1), r.median(TunDirect, MTputUp1)),
			ratio(m(MTputUp64), r.median(TunWireGuard, MTputUp64)), ratio(m(MCPUPerGB), r.median(TunWireGuard, MCPUPerGB)),
			fmtNum(m(MRRIdleP50)), fmtNum(r.median(TunWireGuard, MRRIdleP50)), fmtNum(r.median(TunDirect, MRRIdleP50)),
			fmtNum(m(MSetupP50)), fmtNum(r.median(TunWireGuard, MSetupP50))))
	}
	if p := r.Profile; p != nil && p.Error == "" && len(p.Categories) > 0 {
		keys := sortedKeys(p.Categories)
		sort.SliceStable(keys, func(a, b int) bool { return p.Categories[keys[a]] > p.Categories[keys[b]] })
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s %.0f%%", k, p.Categories[k]))
		}
		out = append(out, fmt.Sprintf("Profile of posternd + postern-connector under one flow at %.2f Gbit/s (self time, all samples): %s.", p.Gbps, strings.Join(parts, ", ")))
	}
	return out
}
