package quictest

import (
	"io"
	"testing"
	"time"

	"postern.dev/postern/wire"
)

func TestOpenFlowCarriesBytesBothWays(t *testing.T) {
	c, s := Pair(t, nil)
	cs, ss := OpenFlow(t, c, s, wire.OpenHeader{Proto: wire.ProtoTCP, Port: 80, ResourceID: "r", Destination: "192.0.2.1"})
	if _, err := ss.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	_ = cs.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 4)
	if _, err := io.ReadFull(cs, got); err != nil || string(got) != "pong" {
		t.Fatalf("client read %q, %v; want pong", got, err)
	}
}
