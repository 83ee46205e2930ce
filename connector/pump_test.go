package connector

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"postern.dev/postern/internal/testenv/quictest"
)

// TestPumpedStreamsComplete: a flow stream the connector pumps to its end
// must complete in quic-go, which then gives the client its stream credit
// back. When pump's waiter saw the FIN by peeking and pump returned without
// reading it, no stream ever completed: the connector kept every stream of
// a connection (its heap grew by about 1.8 KiB per flow, and the growing
// heap's collections stalled new flows), and a client stops opening flows
// once the limit of open streams is reached. quictest's server allows
// quic-go's default of 100 open streams, so 300 flows one after another
// pass only if each one completes.
func TestPumpedStreamsComplete(t *testing.T) {
	c, s := quictest.Pair(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg := []byte("64 bytes of a short connection")
	for i := 0; i < 300; i++ {
		cs, err := c.OpenStreamSync(ctx)
		if err != nil {
			t.Fatalf("flow %d: open stream: %v (the streams pumped to their end before it did not complete)", i, err)
		}
		if _, err := cs.Write(msg); err != nil {
			t.Fatalf("flow %d: client write: %v", i, err)
		}
		ss, err := s.AcceptStream(ctx)
		if err != nil {
			t.Fatalf("flow %d: accept stream: %v", i, err)
		}
		// The FIN comes after the data has been read, as when a client
		// closes a connection it sent on before: pump then waits for it
		// with no buffer held.
		dst := chunkWriter(make(chan []byte, 1))
		type result struct {
			n   int64
			err error
		}
		done := make(chan result, 1)
		go func() {
			n, err := pump(dst, ss, streamWaiter(ss))
			done <- result{n, err}
		}()
		select {
		case got := <-dst:
			if !bytes.Equal(got, msg) {
				t.Fatalf("flow %d: pump wrote %q, want %q", i, got, msg)
			}
		case <-ctx.Done():
			t.Fatalf("flow %d: pump wrote nothing", i)
		}
		cs.Close()
		select {
		case r := <-done:
			if r.err != nil || r.n != int64(len(msg)) {
				t.Fatalf("flow %d: pump copied %d bytes, err %v; want %d and the end of the stream", i, r.n, r.err, len(msg))
			}
		case <-ctx.Done():
			t.Fatalf("flow %d: pump did not return at the client's FIN", i)
		}
		ss.Close()
		if rest, err := io.ReadAll(cs); err != nil || len(rest) != 0 {
			t.Fatalf("flow %d: client read %q, err %v; want the connector's FIN alone", i, rest, err)
		}
	}
}

// chunkWriter hands every write to its channel, copied.
type chunkWriter chan []byte

func (w chunkWriter) Write(p []byte) (int, error) {
	w <- bytes.Clone(p)
	return len(p), nil
}
