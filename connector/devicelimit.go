package connector

import (
	"fmt"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"postern.dev/postern/internal/lograte"
	"postern.dev/postern/wire"
)

// DefaultMaxFlowsPerDevice bounds the flows one device may have open at a
// connector at once, over all its connections (Config.MaxFlowsPerDevice).
// Every flow holds a socket to the private host, one or two goroutines and
// about 13 KiB here, so without a bound one device, buggy or compromised, could
// take the connector's memory and file descriptors from everyone else. A
// browser keeps a few hundred connections and a busy connection pool a few
// thousand; the 10,000 idle flows of the benchmark fit three times over.
const DefaultMaxFlowsPerDevice = 32768

// streamsPerConn is the QUIC limit of open flow streams per connection. It
// is above the device limit, so that a device at its limit gets the limit's
// answer at once instead of a stream open that waits for credit.
func streamsPerConn(maxFlows int) int64 {
	return int64(maxFlows) + 1024
}

// deviceFlows counts the flows each device has open at this connector,
// keyed by the thumbprint of the device key its connections present.
type deviceFlows struct {
	max int

	mu sync.Mutex
	n  map[string]int

	warn *lograte.Limiter // refusals logged per device
}

func newDeviceFlows(max int) *deviceFlows {
	return &deviceFlows{max: max, n: map[string]int{}, warn: lograte.New(limitWarnEvery)}
}

// acquire counts one more flow for dev unless dev is at its limit.
func (d *deviceFlows) acquire(dev string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.n[dev] >= d.max {
		return false
	}
	d.n[dev]++
	return true
}

// release ends a flow acquire counted.
func (d *deviceFlows) release(dev string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.n[dev] <= 1 {
		delete(d.n, dev)
		return
	}
	d.n[dev]--
}

// open is the number of flows dev has open.
func (d *deviceFlows) open(dev string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n[dev]
}

// limitWarnEvery spaces the log lines about one device at its limit.
const limitWarnEvery = 10 * time.Second

// refuseOverLimit answers a flow stream of a device at its flow limit without
// reading its header: no name is resolved and nothing is dialed for it. The
// flow is counted in the refusal metric, not reported as a flow event: a
// runaway client would otherwise turn its flood into one event per stream
// at the controller.
func (s *session) refuseOverLimit(st *quic.Stream) {
	lim := s.c.devFlows.max
	// A client that never reads would hold this goroutine in the write.
	_ = st.SetWriteDeadline(time.Now().Add(headerTimeout))
	s.answer(st, wire.StatusTooManyFlows, fmt.Sprintf("this device has %d flows open at this connector, its limit", lim),
		wire.CodeFlowRefused, "device flow limit")
	if s.c.devFlows.warn.Allow(s.thumb, time.Now()) {
		dev := ""
		if cl := s.currentClaims(); cl != nil {
			dev = cl.Device
		}
		s.log.Warn("refusing flows: device at its flow limit", "device", dev, "device_key", s.thumb, "limit", lim)
	}
}
