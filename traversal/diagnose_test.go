package traversal

import (
	"context"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
)

// TestDiagnoseReportsRelaysNATAndPairs: after a direct dial on loopback the
// report shows the relay reachable over UDP and TLS, the same mapped address
// towards relay and connector (endpoint-independent), the connection's
// validated pair; a failed dial to another connector shows its error.
func TestDiagnoseReportsRelaysNATAndPairs(t *testing.T) {
	ctx, w, _, _ := runningWorld(t)
	d := newDialer(t, w.dialerConfig([]controlapi.RelayInfo{w.relayInfo}))
	conn, _ := w.dial(t, ctx, d, w.connectorInfo(), "", "")
	defer conn.CloseWithError(0, "")
	// A connector that has no signaling link on the relay: the dial fails.
	gone := controlapi.ConnectorInfo{ID: "conn-gone", Name: "gone", Online: true, CertSHA256: w.connectorInfo().CertSHA256}
	fctx, fcancel := context.WithTimeout(ctx, 3*time.Second)
	defer fcancel()
	if _, _, err := d.Dial(fctx, gone, w.clientTLS(), nil); err == nil {
		t.Fatal("dial to a connector without a relay link succeeded")
	}

	rep := d.Diagnose(ctx)
	if len(rep.Relays) != 1 || !rep.Relays[0].UDP || !rep.Relays[0].TLS || rep.Relays[0].Reflexive == "" {
		t.Fatalf("relays: %+v", rep.Relays)
	}
	if rep.Relays[0].UDPRTT <= 0 || rep.Relays[0].TLSRTT <= 0 {
		t.Fatalf("relay RTTs not measured: %+v", rep.Relays[0])
	}
	if rep.NAT.Mapping != MappingIndependent || len(rep.NAT.Observations) < 2 {
		t.Fatalf("NAT: %+v", rep.NAT)
	}
	var live, failed *ConnectorReport
	for i := range rep.Connectors {
		switch rep.Connectors[i].Connector {
		case w.connID:
			live = &rep.Connectors[i]
		case "conn-gone":
			failed = &rep.Connectors[i]
		}
	}
	if live == nil || !live.Connected || live.Path.Path != PathDirect || len(live.Pairs) == 0 || !live.Pairs[0].Validated {
		t.Fatalf("live connector: %+v", live)
	}
	if failed == nil || failed.Connected || !strings.Contains(failed.Error, "conn-gone") {
		t.Fatalf("failed connector: %+v", failed)
	}
}

// TestNATReportSeesDestinationDependentMapping: two destinations that saw
// different public ports mean endpoint-dependent mapping.
func TestNATReportSeesDestinationDependentMapping(t *testing.T) {
	rep := natReport(
		[]RelayCheck{{Name: "r1", UDPAddr: "203.0.113.1:3478", Reflexive: "198.51.100.1:1000"}},
		[]ConnectorReport{{Connector: "c1", Pairs: []PairInfo{{Local: "udp", Remote: "192.0.2.1:40000", Mapped: "198.51.100.1:2000"}}}})
	if rep.Mapping != MappingDependent {
		t.Fatalf("mapping %q, want %q: %+v", rep.Mapping, MappingDependent, rep)
	}
	if rep := natReport([]RelayCheck{{Name: "r1"}}, nil); rep.Mapping != MappingUnknown || rep.Note == "" {
		t.Fatalf("no answers: %+v", rep)
	}
}
