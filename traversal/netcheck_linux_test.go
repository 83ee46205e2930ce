package traversal

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
)

// labNetcheck is the client helper of TestLabNetcheckSeesNATMapping: it
// diagnoses the network with two relays and writes the report.
func labNetcheck(t *testing.T, w *world, c labConfig) {
	cfg := w.dialerConfig([]controlapi.RelayInfo{c.Relay, *c.Relay2})
	cfg.ListenAddr = "0.0.0.0:0"
	d, err := NewDialer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	writeResult(t, c.Dir, "netcheck.result", d.Diagnose(ctx))
}

// TestLabNetcheckSeesNATMapping: netcheck, with two relays, tells an
// endpoint-independent NAT (masquerade) from an endpoint-dependent one
// (masquerade random), and sees both relays over UDP and TLS.
func TestLabNetcheckSeesNATMapping(t *testing.T) {
	for _, tc := range []struct{ nat, want string }{
		{"masquerade", MappingIndependent},
		{"masquerade random", MappingDependent},
	} {
		t.Run(tc.want, func(t *testing.T) {
			l := newLab(t, tc.nat, "masquerade")
			l.sh("ip", "-n", l.ns("rel"), "addr", "add", labRelay2IP+"/24", "dev", "wan")
			c := l.run()
			r2 := c.Relay
			r2.ID, r2.Name = "relay-2", "relay-2"
			r2.UDPAddr, r2.TLSAddr = labRelay2IP+":"+labRelayUDP, labRelay2IP+":"+labRelayTLS
			c.Relay2 = &r2
			l.start("rel", "relay2", c)
			l.wait("relay2.ready", 15*time.Second)
			l.start("cli", "netcheck", c)
			var rep Diagnosis
			if err := json.Unmarshal(l.wait("netcheck.result", 30*time.Second), &rep); err != nil {
				t.Fatal(err)
			}
			if len(rep.Relays) != 2 {
				t.Fatalf("relays: %+v", rep.Relays)
			}
			for _, r := range rep.Relays {
				if !r.UDP || !r.TLS || r.Reflexive == "" {
					t.Fatalf("relay %s: %+v", r.Name, r)
				}
			}
			if rep.NAT.Mapping != tc.want {
				t.Fatalf("NAT mapping %q, want %q: %+v", rep.NAT.Mapping, tc.want, rep.NAT)
			}
			t.Logf("%s: %s %v; relay RTTs udp %v/%v tls %v/%v", tc.nat, rep.NAT.Mapping, rep.NAT.Observations,
				rep.Relays[0].UDPRTT, rep.Relays[1].UDPRTT, rep.Relays[0].TLSRTT, rep.Relays[1].TLSRTT)
		})
	}
}
