package connector

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"runtime"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/pki"
	"postern.dev/postern/wire"
)

// TestSendStatusYieldsToRunLoop: with one P, the goroutine that answers a
// flow's status lets the connection's run loop pack the status before it
// goes on (to set up the splice), instead of leaving the run loop queued
// behind it while the client's application waits for its SYN-ACK.
func TestSendStatusYieldsToRunLoop(t *testing.T) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.SelfSigned(key, "status-test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := quic.ListenAddr("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"t"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc, err := quic.DialAddr(ctx, ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"t"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.CloseWithError(0, "")
	sc, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.CloseWithError(0, "")
	cs, err := cc.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := wire.WriteOpen(cs, wire.OpenHeader{Proto: wire.ProtoTCP, Port: 80, ResourceID: "r", Destination: "192.0.2.1"}); err != nil {
		t.Fatal(err)
	}
	ss, err := sc.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := wire.ReadFrame(ss); err != nil {
		t.Fatal(err)
	}

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
