package client

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// endReader yields its chunks one Read at a time, then io.EOF, and counts
// the reads that returned the end.
type endReader struct {
	chunks   []string
	endReads int
}

func (r *endReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		r.endReads++
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks = r.chunks[1:]
	return n, nil
}

// TestAdaptiveCopyReadsTheEnd: when the waiter reports the end of the
// source, adaptiveCopy still reads it. A QUIC stream completes, and its
// memory is freed, only once its FIN has been read; a FIN that was only
// peeked kept every stream of a connection alive on the connector.
func TestAdaptiveCopyReadsTheEnd(t *testing.T) {
	src := &endReader{chunks: []string{"request", "more"}}
	waits := 0
	wait := func() error {
		waits++
		if len(src.chunks) == 0 {
			return io.EOF
		}
		return nil
	}
	var dst bytes.Buffer
	if err := adaptiveCopy(&dst, src, wait); err != nil {
		t.Fatalf("adaptiveCopy: %v", err)
	}
	if dst.String() != "requestmore" {
		t.Errorf("copied %q, want %q", dst.String(), "requestmore")
	}
	if src.endReads != 1 {
		t.Errorf("the end was read %d times after the waiter reported it, want once", src.endReads)
	}
	if waits != 3 {
		t.Errorf("waited %d times, want 3 (before each short read and before the end)", waits)
	}
}

// TestAdaptiveCopyWaitError: a waiter's error (a reset stream) ends the
// copy with that error, and nothing is read.
func TestAdaptiveCopyWaitError(t *testing.T) {
	reset := errors.New("stream reset")
	src := &endReader{chunks: []string{"never read"}}
	var dst bytes.Buffer
	if err := adaptiveCopy(&dst, src, func() error { return reset }); !errors.Is(err, reset) {
		t.Fatalf("adaptiveCopy returned %v, want the waiter's error", err)
	}
	if dst.Len() != 0 || len(src.chunks) != 1 {
		t.Errorf("copied %q after the waiter failed", dst.String())
	}
}

// TestAdaptiveCopyWithoutWaiter copies a large and a small source whole
// with the 1 KiB buffer and the pooled one.
func TestAdaptiveCopyWithoutWaiter(t *testing.T) {
	for _, n := range []int{0, 10, smallCopyBuf, 3*largeCopyBuf + 7} {
		want := strings.Repeat("x", n)
		var dst bytes.Buffer
		if err := adaptiveCopy(&dst, strings.NewReader(want), nil); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if dst.String() != want {
			t.Errorf("%d bytes: copied %d", n, dst.Len())
		}
	}
}
