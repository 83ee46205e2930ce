package bench

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"postern.dev/postern/internal/testenv"
)

// TestShortConnectionsCountsEveryConnection: the agent opens exactly count
// connections across its workers, and a refused address counts each
// attempt as an error instead of retrying it.
func TestShortConnectionsCountsEveryConnection(t *testing.T) {
	ln, _ := testenv.EchoTCP(t, "127.0.0.1:0")
	res, err := ShortConnections(context.Background(), ln.Addr().String(), 8, 300)
	if err != nil {
		t.Fatal(err)
	}
	if res.Conns != 300 || res.Errors != 0 || res.MaxUs < res.P99us || res.P99us < res.P50us || res.PerSec <= 0 {
		t.Fatalf("%+v, want 300 connections, no error, ordered percentiles", res)
	}

	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := dead.Addr().String()
	dead.Close()
	res, err = ShortConnections(context.Background(), addr, 2, 10)
	if err == nil || res.Errors != 10 || res.Conns != 0 {
		t.Fatalf("refused address: %+v, %v; want 10 errors and an error", res, err)
	}
	if _, err := ShortConnections(context.Background(), addr, 0, 10); !errors.Is(err, ErrBadAgentArgs) {
		t.Fatalf("zero workers: %v", err)
	}
}

// The report's short-connections table shows each concurrency's figures
// (it once printed a dash in every cell, whatever was measured).
func TestShortConnectionsTableShowsFigures(t *testing.T) {
	one := func(v float64) Summary { return Summarize([]float64{v}) }
	m := map[string]Summary{}
	for k, v := range map[string]float64{MShortConns: 100000, MShortErrors: 0, MShortOver: 46, MShortP50: 812, MShortP99: 4321, MShortMaxUs: 119620, MShortRate: 2345} {
		m[k+"64"] = one(v)
	}
	rep := &Report{ShortConns: 100000, Tunnels: []TunnelResult{{Key: TunPosternDirect, Label: "Postern (direct)", Metrics: m}}}
	md := rep.Markdown()
	row := ""
	for _, l := range strings.Split(md, "\n") {
		if strings.HasPrefix(l, "| 64 |") {
			row = l
		}
	}
	for _, want := range []string{"46", "812", "4321", "119620", "2345"} {
		if !strings.Contains(row, want) {
			t.Errorf("row for 64 workers %q lacks %s", row, want)
		}
	}
}
