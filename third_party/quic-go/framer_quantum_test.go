package quic

// Postern: tests of streamQuantum (see POSTERN.md).

import (
	"testing"

	"github.com/quic-go/quic-go/internal/ackhandler"
	"github.com/quic-go/quic-go/internal/protocol"
	"github.com/quic-go/quic-go/internal/wire"

	"github.com/stretchr/testify/require"
)

// quantumStream is a stream with a number of bytes to send; each frame
// fills the room it is given.
type quantumStream struct {
	id          protocol.StreamID
	left        protocol.ByteCount
	urgency     int8
	incremental bool
	generation  uint32
}

func (s *quantumStream) priority() (int8, bool, uint32) {
	return s.urgency, s.incremental, s.generation
}

func (s *quantumStream) popStreamFrame(maxLen protocol.ByteCount, v protocol.Version) (ackhandler.StreamFrame, *wire.StreamDataBlockedFrame, bool) {
	f := &wire.StreamFrame{StreamID: s.id, DataLenPresent: true}
	n := min(f.MaxDataLen(maxLen, v), s.left)
	if n == 0 {
		return ackhandler.StreamFrame{}, nil, false
	}
	f.Data = make([]byte, n)
	s.left -= n
	return ackhandler.StreamFrame{Frame: f}, nil, s.left > 0
}

func (s *quantumStream) popRetransmissionFrame(protocol.ByteCount, protocol.Version) (ackhandler.StreamFrame, bool) {
	return ackhandler.StreamFrame{}, false
}

// quantumRun is what one stream sent in consecutive packets.
type quantumRun struct {
	id    protocol.StreamID
	bytes protocol.ByteCount
}

const quantumPacket = 1200

// sendQuantumPackets packs packets of quantumPacket bytes until the framer
// has no data or max packets were packed, and returns the runs.
func sendQuantumPackets(t *testing.T, f *framer, max int) []quantumRun {
	t.Helper()
	var runs []quantumRun
	for i := 0; i < max && f.HasData(); i++ {
		_, frames, _ := f.AppendStreamFrames(nil, nil, quantumPacket, protocol.Version1)
		for _, fr := range frames {
			if n := len(runs); n > 0 && runs[n-1].id == fr.Frame.StreamID {
				runs[n-1].bytes += fr.Frame.DataLen()
			} else {
				runs = append(runs, quantumRun{fr.Frame.StreamID, fr.Frame.DataLen()})
			}
		}
	}
	return runs
}

func TestFramerStreamsTakeTurnsOfAQuantum(t *testing.T) {
	f := newFramer(newConnectionFlowController(0, 0, nil, nil, nil))
	const size = 160 << 10
	for _, id := range []protocol.StreamID{4, 8, 12} {
		f.AddActiveStream(id, &quantumStream{id: id, left: size, urgency: 5, incremental: true})
	}
	runs := sendQuantumPackets(t, f, 1000)
	require.False(t, f.HasData())
	sent := map[protocol.StreamID]protocol.ByteCount{}
	for i, r := range runs {
		require.Equal(t, []protocol.StreamID{4, 8, 12}[i%3], r.id, "turn %d", i)
		sent[r.id] += r.bytes
		if sent[r.id] < size { // a stream's last turn ends with its data
			require.GreaterOrEqual(t, r.bytes, streamQuantum, "turn %d", i)
			require.Less(t, r.bytes, streamQuantum+quantumPacket, "turn %d", i)
		}
	}
	require.Len(t, runs, 9) // 160 KiB: two full turns and a last one each
}

func TestFramerStreamWithoutDataHandsItsTurnOn(t *testing.T) {
	f := newFramer(newConnectionFlowController(0, 0, nil, nil, nil))
	f.AddActiveStream(4, &quantumStream{id: 4, left: 2000, urgency: 5, incremental: true})
	f.AddActiveStream(8, &quantumStream{id: 8, left: 160 << 10, urgency: 5, incremental: true})
	runs := sendQuantumPackets(t, f, 1000)
	require.Equal(t, protocol.StreamID(4), runs[0].id)
	require.Equal(t, protocol.ByteCount(2000), runs[0].bytes)
	// Stream 8's turn starts from zero, right after stream 4's last
	// bytes: here it is alone, so it sends everything in one run.
	require.Equal(t, []quantumRun{{8, 160 << 10}}, runs[1:])
}

func TestFramerStaleEntryEndsTheTurn(t *testing.T) {
	f := newFramer(newConnectionFlowController(0, 0, nil, nil, nil))
	s4 := &quantumStream{id: 4, left: 160 << 10, urgency: 5, incremental: true}
	f.AddActiveStream(4, s4)
	f.AddActiveStream(8, &quantumStream{id: 8, left: 160 << 10, urgency: 5, incremental: true})
	runs := sendQuantumPackets(t, f, 2)
	require.Equal(t, []quantumRun{{4, runs[0].bytes}}, runs)
	// Stream 4 moves to urgency 6 in the middle of its turn.
	s4.urgency, s4.generation = 6, 1
	f.UpdateStreamPriority(4)
	runs = sendQuantumPackets(t, f, 1000)
	require.Equal(t, protocol.StreamID(8), runs[0].id)
	require.Equal(t, protocol.ByteCount(160<<10), runs[0].bytes, "stream 8 runs first, to its end")
	require.Equal(t, protocol.StreamID(4), runs[1].id)
}

func TestFramerMoreUrgentStreamWaitsForNoQuantum(t *testing.T) {
	f := newFramer(newConnectionFlowController(0, 0, nil, nil, nil))
	f.AddActiveStream(4, &quantumStream{id: 4, left: 160 << 10, urgency: 5, incremental: true})
	f.AddActiveStream(8, &quantumStream{id: 8, left: 160 << 10, urgency: 5, incremental: true})
	first := sendQuantumPackets(t, f, 2) // stream 4, in its first turn
	f.AddActiveStream(12, &quantumStream{id: 12, left: 100, urgency: 3, incremental: true})
	runs := sendQuantumPackets(t, f, 1)
	// The urgent stream's 100 bytes go in the next packet, ahead of stream
	// 4's turn, and stream 4 then goes on with the rest of its turn.
	require.Equal(t, quantumRun{12, 100}, runs[0])
	require.Equal(t, protocol.StreamID(4), runs[1].id)
	runs = append(runs[1:], sendQuantumPackets(t, f, 1000)...)
	if runs[0].id == runs[1].id {
		runs[1].bytes += runs[0].bytes
		runs = runs[1:]
	}
	require.Equal(t, protocol.StreamID(4), runs[0].id)
	require.GreaterOrEqual(t, first[0].bytes+runs[0].bytes, streamQuantum)
	require.Less(t, first[0].bytes+runs[0].bytes, streamQuantum+quantumPacket)
}
