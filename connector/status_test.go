package connector

import (
	"runtime"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv/quictest"
	"postern.dev/postern/wire"
)

// TestSendStatusYieldsToRunLoop: with one P, the goroutine that answers a
// flow's status lets the connection's run loop pack the status before it
// goes on (to set up the splice), instead of leaving the run loop queued
// behind it while the client's application waits for its SYN-ACK.
func TestSendStatusYieldsToRunLoop(t *testing.T) {
	cc, sc := quictest.Pair(t, nil)
	cs, ss := quictest.OpenFlow(t, cc, sc, wire.OpenHeader{Proto: wire.ProtoTCP, Port: 80, ResourceID: "r", Destination: "192.0.2.1"})
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	// Let every other goroutine settle first (acknowledgements and the
	// like), so that the status is all the run loop has to send.
	deadline := time.Now().Add(5 * time.Second)
	for {
		before := sc.ConnectionStats().PacketsSent
		time.Sleep(20 * time.Millisecond)
		if sc.ConnectionStats().PacketsSent == before || time.Now().After(deadline) {
			break
		}
	}
	before := sc.ConnectionStats().PacketsSent
	if err := sendStatus(ss, wire.StatusOK, ""); err != nil {
		t.Fatal(err)
	}
	after := sc.ConnectionStats().PacketsSent // no blocking call in between
	if after == before {
		t.Fatal("sendStatus returned before the run loop packed the status")
	}
	_ = cs.SetReadDeadline(time.Now().Add(5 * time.Second))
	if st, _, err := wire.ReadStatus(cs); err != nil || st != wire.StatusOK {
		t.Fatalf("client read %v %v", st, err)
	}
}
