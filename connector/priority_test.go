package connector

import (
	"io"
	"testing"
)

// TestBulkWriterDemotesOnce: a flow's stream is demoted once it has sent
// bulkBytes within bulkWindow, and only once; a flow that sends less keeps
// its priority.
func TestBulkWriterDemotesOnce(t *testing.T) {
	demoted := 0
	b := &bulkWriter{w: io.Discard, demote: func() { demoted++ }}
	chunk := make([]byte, 64<<10)
	for i := 0; i < bulkBytes/len(chunk)-1; i++ {
		if _, err := b.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if demoted != 0 {
		t.Fatalf("demoted after %d bytes, below %d", bulkBytes-len(chunk), bulkBytes)
	}
	for i := 0; i < 40; i++ {
		_, _ = b.Write(chunk)
	}
	if demoted != 1 {
		t.Fatalf("demoted %d times, want once", demoted)
	}
	short := &bulkWriter{w: io.Discard, demote: func() { t.Fatal("a short exchange was demoted") }}
	for i := 0; i < 100; i++ {
		_, _ = short.Write(make([]byte, 64))
	}
}
