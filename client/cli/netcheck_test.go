package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"postern.dev/postern/client"
	"postern.dev/postern/traversal"
)

// TestNetcheckNotConnected: a daemon that is not up answers netcheck with an
// error that says what to do.
func TestNetcheckNotConnected(t *testing.T) {
	_, sock := serveDaemon(t, client.Config{})
	code, _, stderr := runCLI(t, "", "--socket", sock, "netcheck")
	if code != 1 || !strings.Contains(stderr, "postern up") {
		t.Fatalf("netcheck on a daemon that is not up: exit %d, stderr %q", code, stderr)
	}
	if code, _, stderr := runCLI(t, "", "--socket", sock, "netcheck", "extra"); code != 2 || !strings.Contains(stderr, "takes no arguments") {
		t.Fatalf("netcheck extra: exit %d, stderr %q", code, stderr)
	}
}

func TestPrintNetcheck(t *testing.T) {
	rep := traversal.Diagnosis{
		LocalAddr: "0.0.0.0:41000",
		Relays: []traversal.RelayCheck{{Name: "relay-1", UDPAddr: "203.0.113.1:3478", TLSAddr: "203.0.113.1:443",
			UDP: true, UDPRTT: 1200 * time.Microsecond, Reflexive: "198.51.100.1:41000", TLSErr: "connection refused"}},
		NAT: traversal.NATReport{Mapping: traversal.MappingDependent, Observations: []string{"relay relay-1 203.0.113.1:3478 -> 198.51.100.1:41000"}},
		Connectors: []traversal.ConnectorReport{
			{Connector: "conn-1", Connected: true, Path: traversal.PathInfo{Path: "relay", Transport: "udp", RemoteAddr: "192.0.2.1:40000", Relay: "relay-1"},
				Pairs: []traversal.PairInfo{{Local: "udp", Remote: "192.0.2.1:40000", Kind: "srflx", Checks: 12, LastError: "STUN to 192.0.2.1:40000: no response"},
					{Local: "relay-udp", Remote: "192.0.2.1:40000", Kind: "prflx", Checks: 1, Answers: 1, Validated: true}}},
			{Connector: "conn-2", Error: "dial connector conn-2: no path", At: time.Now()},
		},
	}
	var out bytes.Buffer
	printNetcheck(&cmd{io: IO{Out: &out}}, rep)
	for _, want := range []string{"relay-1", "UDP 203.0.113.1:3478", "sees you as 198.51.100.1:41000", "TLS 203.0.113.1:443", "unreachable: connection refused",
		"NAT mapping: endpoint-dependent", "conn-1: connected, relay/udp to 192.0.2.1:40000 via relay-1",
		"srflx", "12 checks, 0 answers", "no response", "valid", "conn-2: last dial failed", "no path"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
