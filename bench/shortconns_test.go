package bench

import (
	"context"
	"errors"
	"net"
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
