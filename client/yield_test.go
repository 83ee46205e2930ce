package client

import (
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/internal/bulkyield"
)

// TestShouldYield: only a bulk flow yields, only while a flow of its
// connector moved a short message recently, and never with yielding
// turned off.
func TestShouldYield(t *testing.T) {
	now := time.Now()
	p := &pool{bulkTarget: bulkyield.DefaultTarget}
	e := &connEntry{}
	if p.shouldYield(e, flowBulk, now) {
		t.Error("a bulk flow yielded with no interactive flow ever seen")
	}
	e.interactive.Saw(64, now.Add(-bulkyield.Recent/2))
	if !p.shouldYield(e, flowBulk, now) {
		t.Error("a bulk flow did not yield to a recent interactive message")
	}
	if p.shouldYield(e, flowInteractive, now) || p.shouldYield(e, flowDone, now) {
		t.Error("a flow that is not bulk yielded")
	}
	if p.shouldYield(e, flowBulk, now.Add(bulkyield.Recent)) {
		t.Error("a bulk flow still yielded Recent after the last interactive message")
	}
	p.bulkTarget = 0
	if p.shouldYield(e, flowBulk, now) {
		t.Error("a bulk flow yielded with yielding turned off")
	}
}

// TestShortMessagesMarkInteractive: a short message of a flow that is not
// bulk marks its connector interactive; a full small-buffer read (the
// start of every burst of adaptiveCopy) or a bulk flow's short message
// does not.
func TestShortMessagesMarkInteractive(t *testing.T) {
	p := &pool{streams: map[*quic.Conn]int{}, bulk: map[*quic.Conn]int{}}
	e := &connEntry{}
	f := &flow{e: e, p: p, conn: new(quic.Conn)}
	f.account(smallCopyBuf)
	if e.interactive.Active(time.Now()) {
		t.Fatal("a full small-buffer read marked the connector interactive")
	}
	f.bulk.Store(flowBulk)
	f.account(64)
	if e.interactive.Active(time.Now()) {
		t.Fatal("a bulk flow's short message marked the connector interactive")
	}
	f.bulk.Store(flowInteractive)
	f.account(64)
	if !e.interactive.Active(time.Now()) {
		t.Fatal("a 64-byte message did not mark the connector interactive")
	}
}
